"""The planner on a tiny ViT over 8 fake CPU devices: shard sizes, per-device XLA numbers,
FLOPs against the analytic count, the fits check and the remat / micro-batching search.

Budgets are fractions of the measured peak, and the expected suggestions were read off the
measured candidates (jax 0.10.2 XLA:CPU, scan): full remat needs 48 % of the loop's peak,
dots 63.7 %, dots_no_batch 60.1 %; below full remat only micro-batches help.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from flax import nnx

from tests.helpers import tiny_config
from vit_jax import plan as planner
from vit_jax.config import base_config, build_model, load_config_file, model_config

CONFIGS = Path(__file__).parent.parent / "configs"

CLASSES, BATCH = 8, 64


def config(**model):
    c = base_config()
    c.model = model_config("mu/4", image_size=16, width=128, depth=3, num_heads=4, mlp_dim=512,
                           **model)
    return c


def run(mesh=None, device_memory=None, search=False, flops=False, **model):
    return planner.plan(config(**model), mesh or dict(fsdp=8), BATCH, device_memory,
                        num_classes=CLASSES, search=search, flops=flops)


@pytest.fixture(scope="module")
def base():
    return run(flops=True)


def expected_param_bytes(mesh: dict) -> int:
    """Each Param's bytes over the mesh axes its logical axes map to (the rules, by hand)."""
    model = nnx.eval_shape(lambda: build_model(config(), CLASSES))
    total = 0
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param),
                                is_leaf=lambda x: isinstance(x, nnx.Variable)):
        shape, axes = leaf.get_value().shape, leaf.get_metadata()["logical_axes"]
        split = 1
        for size, name in zip(shape, axes, strict=True):
            mesh_axis = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor",
                         "classes": "tensor"}.get(name)
            if mesh_axis and size % mesh.get(mesh_axis, 1) == 0:
                split *= mesh.get(mesh_axis, 1)
        total += math.prod(shape) * 4 // split
    return total


@pytest.mark.parametrize("mesh", [dict(fsdp=8), dict(fsdp=2, tensor=4)])
def test_state_bytes_are_each_devices_shard(base, mesh):
    r = base if mesh == dict(fsdp=8) else run(mesh)
    m = r["base"]
    assert m["params_bytes"] == expected_param_bytes(mesh)
    # Sharded weights dominate: close to total / (fsdp * tensor).
    assert m["params_bytes"] < 1.1 * m["params_bytes_total"] / 8
    assert m["opt_state_bytes"] - 2 * m["params_bytes"] == 12  # AdamW mu, nu + 3 step counts
    # XLA's argument buffers are the state shard + the batch shard + the model's two RNG-stream
    # keys (2 x 8 bytes, not state bytes); the step's rng is unused without dropout: jit drops it.
    state = m["params_bytes"] + m["opt_state_bytes"] + m["other_state_bytes"]
    assert m["xla"]["argument"] - state - m["batch_bytes"] == 16
    assert m["batch_bytes"] == BATCH // (8 // mesh.get("tensor", 1)) * (16 * 16 * 3 + 8) * 4


def test_xla_memory_and_flops_are_per_device(base):
    one = run(dict(fsdp=1), flops=True)
    b8, b1 = base["base"], one["base"]
    assert b1["params_bytes"] == b1["params_bytes_total"] == b8["params_bytes_total"]
    assert 7.5 < b1["xla"]["argument"] / b8["xla"]["argument"] <= 8
    # Temporaries shrink less than 8x: each device also all-gathers whole weights.
    assert 5 < b1["xla"]["temp"] / b8["xla"]["temp"] < 8
    assert b8["xla_flops_per_device"] * 8 == pytest.approx(b1["xla_flops_per_device"], rel=0.02)
    assert base["flops"]["xla_total"] == b8["xla_flops_per_device"] * 8


def test_analytic_flops_match_xla_and_scan_is_extrapolated(base):
    f = base["flops"]
    assert f["xla_method"] == "direct"
    assert 0.85 < f["analytic_over_xla"] < 1.15
    # cost_analysis counts a scan body once; the depth-1/2 probes recover the loop's count.
    scanned = run(flops=True, scan=True)
    assert scanned["base"]["xla_flops_total"] < 0.6 * f["xla_total"]
    assert scanned["flops"]["xla_method"].startswith("extrapolated")
    assert scanned["flops"]["xla_total"] == pytest.approx(f["xla_total"], rel=0.01)


def test_fits_flips_with_device_memory(base):
    peak = base["base"]["peak_bytes"]
    assert base["fits"] is None and base["device_memory"] is None
    assert run(device_memory=peak)["fits"] is True  # and peak - 1 byte: see the next tests


def test_suggests_the_cheapest_remat_that_fits(base):
    budget = int(0.62 * base["base"]["peak_bytes"])  # between dots_no_batch and dots
    r = run(device_memory=budget, search=True)
    s = r["suggestion"]
    assert r["fits"] is False
    assert (s["remat_policy"], s["grad_accum_steps"], s["scan"]) == ("dots_no_batch", 1, True)
    assert s["fits"] and s["peak_bytes"] <= budget
    # Compiled in order: full (does the level fit at all?), then dots (too big), dots_no_batch.
    assert [(t["remat_policy"], t["fits"]) for t in r["tried"]] == [
        ("full", True), ("dots", False), ("dots_no_batch", True)]


def test_micro_batches_when_remat_is_not_enough():
    # Already at full remat: the only way down is more micro-batches.
    full = run(scan=True, remat_policy="full")["base"]
    budget = full["peak_bytes"] - 1
    r = run(device_memory=budget, search=True, scan=True, remat_policy="full")
    s = r["suggestion"]
    assert r["fits"] is False and [t["grad_accum_steps"] for t in r["tried"]] == [2]
    assert (s["remat_policy"], s["grad_accum_steps"]) == ("full", 2)
    assert s["peak_bytes"] <= budget and s["xla"]["temp"] < full["xla"]["temp"]


def test_candidates_order():
    assert planner.candidates("none", 1, 4) == [
        (1, ["dots", "dots_no_batch", "full"]),
        (2, ["none", "dots", "dots_no_batch", "full"]),
        (4, ["none", "dots", "dots_no_batch", "full"])]
    assert planner.candidates("full", 2, 3) == []  # 6 examples: k=4 does not divide them
    assert planner.candidates("dots", 1, 2) == [(1, ["dots_no_batch", "full"]),
                                                  (2, ["dots", "dots_no_batch", "full"])]


def test_parsing_errors_name_the_fix():
    assert planner.parse_bytes("80GiB") == 80 * 2**30
    assert planner.parse_bytes("16GB") == 16 * 10**9
    assert planner.parse_mesh("fsdp=8, tensor=2") == {"fsdp": 8, "tensor": 2}
    with pytest.raises(ValueError, match="80GiB"):
        planner.parse_bytes("eighty")
    with pytest.raises(ValueError, match="fsdp=8"):
        planner.parse_mesh("fdsp=8")
    with pytest.raises(ValueError, match="JAX_NUM_CPU_DEVICES=16"):
        run(dict(fsdp=16))


def test_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "vit_jax.plan", "--variant=mu/4", "--image_size=16",
         "--num_classes=8", "--mesh=fsdp=2", "--batch=8", "--device_memory=50KiB", "--json"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    r = json.loads(out)
    assert r["devices"] == 2 and r["per_device_batch"] == 4 and r["backend"] == "cpu"
    assert r["variant"] == "mu/4" and r["flops"]["xla_method"] == "direct"
    # 50 KiB is below the state itself (90 KiB): nothing is compiled in vain, the note says why.
    assert r["fits"] is False and r["suggestion"] is None and r["tried"] == []
    assert "fsdp >=" in r["notes"][0]


def test_cli_config_swaps_the_variant_of_a_config_file():
    file_config = tiny_config(**{"model.posemb": "sincos2d"})  # sets width=32, depth=2, ...
    c = planner.cli_config(file_config, "B/16", 224)
    assert c.model.variant == "B/16" and c.model.image_size == 224
    assert c.model.width is None and c.model.depth is None  # the variant's, not the file's
    assert c.model.posemb == "sincos2d" and c.model.in_channels == 1  # the file's
    alone = planner.cli_config(None, "H/14", None)
    assert alone.model.variant == "H/14" and alone.model.image_size == 224
    with pytest.raises(ValueError, match="--variant"):
        planner.cli_config(None, None, None)


def test_plans_packed_sequences_on_the_mesh():
    """A step of packed sequences (NaViT): the batch is B x L patches whatever the image size,
    its bytes are the packed layout's, and the analytic count follows XLA's."""
    c = config(class_token=False, pool="map")
    c.data.packing = dict(seq_len=48, max_images=4, patch_size=4)
    r = planner.plan(c, dict(fsdp=8), BATCH, num_classes=CLASSES, search=False, flops=True)
    assert r["tokens"] == 48 and r["packing"]["max_images"] == 4
    per_device = BATCH // 8
    # patches f32 (48 x 4*4*3), segment ids, (row, column) and image grids i32, image mask,
    # labels f32
    row = 48 * 48 * 4 + 48 * 4 + 2 * 48 * 2 * 4 + 4 + 4 * CLASSES * 4
    assert r["base"]["batch_bytes"] == per_device * row
    assert 0.85 < r["flops"]["analytic_over_xla"] < 1.15
    unpacked = run(flops=True, class_token=False, pool="map")  # 16x16 images: 16 patches
    assert r["flops"]["xla_total"] > 2.5 * unpacked["flops"]["xla_total"]  # 48 vs 16 tokens
    assert "packed sequences of 48 patches (<= 4 images each)" in planner.format_plan(r)
    c.model.class_token = True
    with pytest.raises(ValueError, match="packed sequences need a ViT pooling each image: set "
                                         "--config.model.class_token=False"):
        planner.plan(c, dict(fsdp=8), BATCH, num_classes=CLASSES, search=False, flops=False)


def test_cli_config_plans_a_packed_sequence_length():
    alone = planner.cli_config(None, "B/16", None, seq_len=256)
    assert dict(alone.data.packing) == dict(seq_len=256, max_images=8, patch_size=16)
    assert alone.model.class_token is False and alone.model.pool == "map"  # NaViT's head
    navit = planner.cli_config(load_config_file(CONFIGS / "navit.py"), None, None, seq_len=128)
    assert dict(navit.data.packing)["seq_len"] == 128
    assert dict(navit.data.packing)["max_images"] == 8  # the config's own
    with pytest.raises(ValueError, match="--max_images plans packed sequences: give --seq_len"):
        planner.cli_config(None, "B/16", None, max_images=4)
    with pytest.raises(ValueError, match="--seq_len=0 must be a positive integer"):
        planner.cli_config(None, "B/16", None, seq_len=0)
