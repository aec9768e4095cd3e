"""scripts/device_check.sh in its tiny mode on CPU: the GPU check's whole path, so it never rots.

The GPU run itself (benchmarks/RESULTS_GPU.md) happens only on a GPU machine; this runs the same
script, sections and report at toy sizes in about a minute.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def device_check(*args: str, timeout: float = 600, env: dict | None = None
                 ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    env.pop("JAX_PLATFORMS", None)  # the script's own choice, as on a GPU machine
    return subprocess.run([str(REPO / "scripts" / "device_check.sh"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out, tmp = tmp_path_factory.mktemp("device_check"), tmp_path_factory.mktemp("tmpdir")
    r = device_check("--tiny", "--out", str(out), env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-3000:]
    # Its scratch (the quickstart's workdir, a compilation cache) is gone; only pytest's and
    # torch.compile's caches (kept by their design) remain.
    kept_by_design = ("pytest-of-", "torchinductor_")
    assert [p.name for p in tmp.iterdir() if not p.name.startswith(kept_by_design)] == []
    return json.loads((out / "RESULTS_GPU.json").read_text()), (out / "RESULTS_GPU.md").read_text()


def test_tiny_check_runs_every_section(tiny):
    results, _ = tiny
    env, s = results["env"], results["sections"]
    assert env["backend"] == "cpu" and env["auto_dtype"] == "float32"
    assert "skipped" not in s, s.get("skipped")
    c = s["correctness"]
    assert c["pytest"]["returncode"] == 0 and "1 passed" in c["pytest"]["summary"]
    assert c["quickstart"]["returncode"] == 0 and c["quickstart"]["step"] == 20
    assert 0.0 <= c["quickstart"]["accuracy"] <= 1.0
    assert s["peak"]["bfloat16"] > 0 and s["peak"]["float32"] > 0
    assert set(s["speed"]) == {"Ti/16", "S/16"}
    for name, row in s["speed"].items():
        assert row["train"]["img_s"] > 0 and row["forward"]["img_s"] > 0
        assert row["analytic_flops"] > 0 and row["train"]["xla_flops"] > row["analytic_flops"] / 2
        # The planner predicts XLA's own buffer assignment of the step it measured.
        predicted = s["plan"]["cpu"]["variants"][name]["predicted_peak_bytes"]
        assert abs(predicted / row["train"]["xla_memory"]["peak"] - 1) < 0.01
    assert set(s["kernels"]) == {"S/1 chunked", "S/1 auto"}
    assert all(row["train"]["img_s"] > 0 for row in s["kernels"].values())
    assert s["kernels"]["S/1 chunked"]["train"]["attention"] == "chunked-or-standard"
    flags = s["flags"]["flags"]
    assert flags["default"]["step_s"] > 0 and flags["no_fast_min_max"]["ratio"] > 0
    peer = s["peer"]
    assert "skipped" in peer or all(row["ratio"] > 0 for row in peer["rows"])


def test_tiny_report_has_every_table(tiny):
    _, md = tiny
    for heading in ("## 1. Correctness", "## 2. Speed and memory", "## 3. The peer",
                    "## 4. Attention kernels", "## 5. XLA options", "## Targets"):
        assert heading in md
    assert "| Ti/16 | 4 |" in md and "| S/1 | 8² | 65 | chunked / chunked-or-standard |" in md


def test_a_budget_too_small_skips_sections_and_still_reports(tmp_path):
    r = device_check("--tiny", "--out", str(tmp_path), "--budget-s", "1", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "RESULTS_GPU.json").read_text())
    skipped = results["sections"]["skipped"]
    assert any(s.startswith("correctness: out of time") for s in skipped)
    assert any(s.startswith("speed Ti/16: out of time") for s in skipped)
    assert "Skipped: correctness: out of time" in (tmp_path / "RESULTS_GPU.md").read_text()


def test_bad_budget_is_one_line_error(tmp_path):
    r = device_check("--budget-s", "-3", "--out", str(tmp_path), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(
        "--budget-s must be a positive number of seconds, got -3.0")
    assert not (tmp_path / "RESULTS_GPU.json").exists()


def test_kernel_rows_are_compared_with_the_default_path_of_the_same_step(tiny):
    """Section 4 puts a kernel's train img/s over section 2's for the same model, batch and
    image size (how a GPU run shows whether ``auto`` should take padded cuDNN for B/16)."""
    from benchmarks.device_check import report

    results, _ = tiny
    s = results["sections"]
    default = s["speed"]["S/16"]
    s["kernels"]["S/16 cudnn"] = {**default, "asked": "cudnn",
                                  "train": {**default["train"],
                                            "img_s": default["train"]["img_s"] * 1.25}}
    md = report(results)
    assert "| S/16 | 32² | 5 | cudnn / chunked-or-standard | 4 |" in md
    row = next(line for line in md.splitlines() if line.startswith("| S/16 | 32² | 5 | cudnn"))
    assert "| 1.25× |" in row
    s1 = next(line for line in md.splitlines() if "| S/1 | 8² | 65 | chunked" in line)
    assert "| n/a |" in s1  # section 2 ran no S/1 step


@pytest.mark.parametrize("chosen", [None, "mine"])
def test_the_check_leaves_the_compilation_cache_variable_as_it_found_it(
        chosen, tmp_path, monkeypatch):
    """Jobs share a compilation cache in the check's scratch directory unless the caller chose
    one; afterwards the variable does not point at the removed directory."""
    from benchmarks import device_check

    if chosen is None:
        monkeypatch.delenv(device_check.CACHE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(device_check.CACHE_VARIABLE, str(tmp_path / chosen))
    seen = {}

    def fake_run(check):
        seen["cache"] = os.environ[device_check.CACHE_VARIABLE]
        seen["scratch"] = check.scratch
        return {}

    monkeypatch.setattr(device_check, "_run", fake_run)
    device_check.run(device_check.TINY, tmp_path / "out", budget_s=10)
    if chosen is None:
        assert seen["cache"] == str(seen["scratch"] / "jax_cache")
        assert device_check.CACHE_VARIABLE not in os.environ
    else:
        assert seen["cache"] == os.environ[device_check.CACHE_VARIABLE] == str(tmp_path / chosen)
    assert not seen["scratch"].exists()
