"""Checkpoint conversion: exported files compute our logits under their own family's forward pass.

``timm_forward`` and ``google_forward`` are small numpy (float64) forward passes written from
each family's published model code and parameter names, independently of ``vit_jax.convert``'s
tables: logits match to ~1e-6 and round trips are bitwise.
"""

import json
import os
import stat

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.special import erf

from vit_jax import convert, create_model, load_model
from vit_jax.convert import __main__ as convert_cli
from vit_jax.convert import export_google, export_timm, import_checkpoint
from vit_jax.models.resample import resample_posemb
from vit_jax.params import (
    CONFIG_KEY,
    architecture,
    build_architecture,
    flat_params,
    load_npz,
    load_params_into,
    read_npz,
    save_npz,
)

IMAGES = np.asarray(jax.random.normal(jax.random.key(0), (2, 12, 12, 3)))


def ln(x, w, b):
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-6) * w + b


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def gelu_tanh(x):  # flax.linen.gelu's default, as Google's ViT code calls it
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def attend(q, k, v):  # (B, H, N, hd)
    a = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    a = np.exp(a - a.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)) @ v


def split_heads(x, h):
    b, n, d = x.shape
    return x.reshape(b, n, h, d // h).transpose(0, 2, 1, 3)


def merge_heads(x):
    b, h, n, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def patches(images, ph, pw):
    b, h, w, c = images.shape
    return images.astype(np.float64).reshape(b, h // ph, ph, w // pw, pw, c)


def timm_forward(sd, images, heads, pool):
    """timm VisionTransformer.forward from its state dict (NCHW conv weights, fused qkv)."""
    g = lambda k: sd[k].astype(np.float64)  # noqa: E731
    lin = lambda x, n: x @ g(f"{n}.weight").T + g(f"{n}.bias")  # noqa: E731
    d, c, ph, pw = sd["patch_embed.proj.weight"].shape
    x = np.einsum("bhiwjc,dcij->bhwd", patches(images, ph, pw), g("patch_embed.proj.weight"))
    x = x.reshape(len(images), -1, d) + g("patch_embed.proj.bias")
    prefix = [np.broadcast_to(g(k), (len(images), *sd[k].shape[1:]))
              for k in ("cls_token", "reg_token") if k in sd]
    n_prefix = sum(t.shape[1] for t in prefix)
    if sd["pos_embed"].shape[1] == x.shape[1]:  # no_embed_class=True
        x = np.concatenate([*prefix, x + g("pos_embed")], 1)
    else:
        x = np.concatenate([*prefix, x], 1) + g("pos_embed")
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."
        q, k, v = np.split(lin(ln(x, g(b + "norm1.weight"), g(b + "norm1.bias")),
                               b + "attn.qkv"), 3, -1)
        q, k, v = (split_heads(t, heads) for t in (q, k, v))
        if b + "attn.q_norm.weight" in sd:
            q = ln(q, g(b + "attn.q_norm.weight"), g(b + "attn.q_norm.bias"))
            k = ln(k, g(b + "attn.k_norm.weight"), g(b + "attn.k_norm.bias"))
        y = lin(merge_heads(attend(q, k, v)), b + "attn.proj")
        x = x + (y * g(b + "ls1.gamma") if b + "ls1.gamma" in sd else y)
        y = lin(gelu(lin(ln(x, g(b + "norm2.weight"), g(b + "norm2.bias")), b + "mlp.fc1")),
                b + "mlp.fc2")
        x = x + (y * g(b + "ls2.gamma") if b + "ls2.gamma" in sd else y)
    x = ln(x, g("norm.weight"), g("norm.bias"))
    if pool == "token":
        x = x[:, 0]
    elif pool == "avg":
        x = x[:, n_prefix:].mean(1)
    else:  # map: AttentionPoolLatent
        a = "attn_pool."
        q = split_heads(np.broadcast_to(g(a + "latent"), (len(x), 1, d)) @ g(a + "q.weight").T
                        + g(a + "q.bias"), heads)
        k, v = (split_heads(t, heads) for t in np.split(lin(x, a + "kv"), 2, -1))
        y = lin(merge_heads(attend(q, k, v)), a + "proj")
        y = y + lin(gelu(lin(ln(y, g(a + "norm.weight"), g(a + "norm.bias")), a + "mlp.fc1")),
                    a + "mlp.fc2")
        x = y[:, 0]
    return lin(x, "head")


def google_forward(p, images, dialect):
    """Flax ViT (original models_vit.py or big_vision vit.py) from its .npz names."""
    g = lambda k: p[k].astype(np.float64)  # noqa: E731
    dense = lambda x, n: x @ g(f"{n}/kernel") + g(f"{n}/bias")  # noqa: E731
    norm = lambda x, n: ln(x, g(f"{n}/scale"), g(f"{n}/bias"))  # noqa: E731

    def mhdpa(xq, xkv, n):
        q, k, v = (np.einsum("bnd,dhk->bhnk", x, g(f"{n}/{t}/kernel"))
                   + g(f"{n}/{t}/bias")[:, None] for x, t in
                   ((xq, "query"), (xkv, "key"), (xkv, "value")))
        out = np.einsum("bhnk,hkd->bnd", attend(q, k, v), g(f"{n}/out/kernel"))
        return out + g(f"{n}/out/bias")

    ph, pw, c, d = p["embedding/kernel"].shape
    x = np.einsum("bhiwjc,ijcd->bhwd", patches(images, ph, pw), g("embedding/kernel"))
    x = x.reshape(len(images), -1, d) + g("embedding/bias")
    cls = [np.broadcast_to(g("cls"), (len(x), 1, d))] if "cls" in p else []
    if dialect == "vit":  # posemb added after [cls] is prepended
        x = np.concatenate([*cls, x], 1) + g("Transformer/posembed_input/pos_embedding")
        attn, ln2, mlp = "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"
    else:  # big_vision: posemb on the patches, then [cls]
        x = np.concatenate([*cls, x + g("pos_embedding")], 1)
        attn, ln2, mlp = "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
    depth = len({k.split("/")[1] for k in p if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        y = norm(x, b + "LayerNorm_0")
        x = x + mhdpa(y, y, b + attn)
        x = x + dense(gelu_tanh(dense(norm(x, b + ln2), f"{b}{mlp}/Dense_0")), f"{b}{mlp}/Dense_1")
    x = norm(x, "Transformer/encoder_norm")
    if "MAPHead_0/probe" in p:
        m = "MAPHead_0/"
        y = mhdpa(np.broadcast_to(g(m + "probe"), (len(x), 1, d)), x,
                  m + "MultiHeadDotProductAttention_0")
        x = (y + dense(gelu_tanh(dense(norm(y, m + "LayerNorm_0"), m + "MlpBlock_0/Dense_0")),
                       m + "MlpBlock_0/Dense_1"))[:, 0]
    else:
        x = x[:, 0] if cls else x.mean(1)
    if "pre_logits/kernel" in p:
        x = np.tanh(dense(x, "pre_logits"))
    return dense(x, "head")


def random_model(seed=0, **kw):
    """A tiny ViT whose every parameter (norm scales, tokens, head) is random."""
    m = create_model("mu/4", image_size=12, num_classes=5, **{"depth": 2, **kw})
    rng = np.random.default_rng(seed)
    return load_params_into(m, {k: rng.normal(0, 0.3, v.shape).astype(np.float32)
                                for k, v in flat_params(m).items()})


TIMM_CASES = {
    "cls_reg_ls_qknorm": (dict(num_registers=2, layerscale=0.1, qk_norm=True), "token"),
    "map_no_cls": (dict(class_token=False, pool="map"), "map"),
    "avg_with_cls": (dict(pool="gap"), "avg"),
    "no_embed_class": (dict(posemb_includes_prefix=False, num_registers=1), "token"),
}


@pytest.mark.parametrize("case", TIMM_CASES)
def test_timm_export_matches_reference_and_round_trips(case, tmp_path):
    kw, timm_pool = TIMM_CASES[case]
    m = random_model(**kw)
    want = np.asarray(m(IMAGES))
    sd, meta = export_timm(m)
    assert sd["patch_embed.proj.weight"].shape == (32, 3, 4, 4)
    assert sd["blocks.1.attn.qkv.weight"].shape == (96, 32)
    assert json.loads(meta["timm_args"])["global_pool"] == timm_pool
    np.testing.assert_allclose(want, timm_forward(sd, IMAGES, 2, timm_pool), atol=1e-5)
    convert.save_timm_safetensors(m, tmp_path / "m.safetensors")
    config, params = import_checkpoint(tmp_path / "m.safetensors")
    back = load_params_into(build_architecture(config), params)
    np.testing.assert_array_equal(back(IMAGES), want)


def test_plain_timm_file_needs_heads(tmp_path):
    """A timm file has no config: heads come from --variant/--num_heads, the rest from shapes."""
    m = random_model(depth=1, head_zero_init=False)
    save_file(export_timm(m)[0], str(tmp_path / "t.safetensors"))
    with pytest.raises(ValueError, match=r"--variant or --num_heads.*'mu' \(2 heads\)"):
        import_checkpoint(tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match="checkpoint has 2 heads but 4"):  # qk-norm tells
        convert.infer_config({"blocks.0.attn.q_norm.weight": np.ones(16), **export_timm(m)[0]},
                             "timm", num_heads=4)
    config, params = import_checkpoint(tmp_path / "t.safetensors", variant="mu/4")
    assert config["variant"] == "mu/4" and config["image_size"] == [12, 12]
    assert config["posemb_resample"] == "bicubic_antialias"  # timm's own default
    back = load_params_into(build_architecture(config), params)
    np.testing.assert_array_equal(back(IMAGES), m(IMAGES))


GOOGLE_CASES = {
    "vit_cls_prelogits": (dict(representation_size=16), "vit"),
    "vit_cls_posemb_before_cls": (dict(posemb_includes_prefix=False), "vit"),
    "bv_gap": (dict(class_token=False, pool="gap", posemb_includes_prefix=False), "big_vision"),
    "bv_map": (dict(class_token=False, pool="map", posemb_includes_prefix=False), "big_vision"),
    "bv_cls": (dict(), "big_vision"),
}


@pytest.mark.parametrize("case", GOOGLE_CASES)
def test_google_export_matches_reference_and_round_trips(case, tmp_path):
    kw, dialect = GOOGLE_CASES[case]
    m = random_model(gelu_approximate=True, **kw)
    want = np.asarray(m(IMAGES))
    arrays = export_google(m, dialect)
    np.testing.assert_allclose(want, google_forward(arrays, IMAGES, dialect), atol=1e-5)
    if dialect == "big_vision":  # as a scanned big_vision training checkpoint
        stacked = {f"params/{k}": v for k, v in arrays.items() if "encoderblock_" not in k}
        for k in [k for k in arrays if k.startswith("Transformer/encoderblock_0/")]:
            rest = k.split("/", 2)[2]
            stacked[f"params/Transformer/encoderblock/{rest}"] = np.stack(
                [arrays[f"Transformer/encoderblock_{i}/{rest}"] for i in range(2)])
        arrays = {**stacked, "opt/state/mu": np.zeros(3)}
    np.savez(tmp_path / "g.npz", **arrays)
    config, params = import_checkpoint(tmp_path / "g.npz")
    assert config["num_heads"] == 2 and config["posemb_resample"] == "zoom"
    back = load_params_into(build_architecture(config), params)
    np.testing.assert_array_equal(back(IMAGES), want)


def test_google_names(tmp_path):
    m = random_model(depth=1, representation_size=8)
    names = set(export_google(m))
    assert {"embedding/kernel", "cls", "Transformer/posembed_input/pos_embedding",
            "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
            "Transformer/encoderblock_0/LayerNorm_2/scale",
            "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias",
            "Transformer/encoder_norm/scale", "pre_logits/kernel", "head/kernel"} <= names
    assert export_google(m)["Transformer/posembed_input/pos_embedding"].shape == (1, 10, 32)
    with pytest.raises(ValueError, match="register tokens"):
        export_google(random_model(depth=1, num_registers=1))


def test_our_format_round_trip_and_scan(tmp_path):
    m = random_model(num_registers=1, layerscale=1.0)
    path = save_npz(tmp_path / "m.npz", architecture(m), flat_params(m))
    with np.load(path) as z:
        assert "encoder/blocks/1/attn/query/kernel" in z.files and CONFIG_KEY in z.files
    want = np.asarray(m(IMAGES))
    np.testing.assert_array_equal(load_npz(path)(IMAGES), want)
    scanned = load_npz(path, scan=True)
    assert scanned.encoder.scan
    np.testing.assert_allclose(scanned(IMAGES), want, atol=1e-5)
    # and back: a scan model's params export in loop form
    assert "encoder/blocks/0/norm1/scale" in flat_params(scanned)


def test_load_params_into_lists_every_problem():
    m = create_model("mu/4", image_size=8, num_classes=3)
    params = flat_params(m)
    params["head/kernel"] = np.zeros((32, 4), np.float32)
    params["posemb/pos_embedding"] = np.zeros((1, 9, 32), np.float32)
    del params["cls_token"]
    params["encoder/blocks/0/extra"] = np.zeros(3)
    with pytest.raises(ValueError) as e:
        load_params_into(m, params)
    msg = str(e.value)
    assert "missing (1): cls_token" in msg and "unexpected (1): encoder/blocks/0/extra" in msg
    assert "head/kernel: expected (32, 3), got (32, 4)" in msg
    assert "posemb/pos_embedding: expected (1, 5, 32), got (1, 9, 32)" in msg


def test_unknown_missing_and_unsupported_keys(tmp_path):
    m = random_model(depth=1)
    sd = export_timm(m)[0]
    bad = {**sd, "fc_norm.weight": np.ones(32), "blocks.0.foo": np.ones(2)}
    del bad["blocks.0.mlp.fc2.bias"]
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError) as e:
        import_checkpoint(tmp_path / "bad.safetensors", num_heads=2)
    msg = str(e.value)
    assert "missing (1): blocks.0.mlp.fc2.bias" in msg
    assert "unknown (2): blocks.0.foo, fc_norm.weight" in msg
    assert "fc_norm.weight: timm's fc_norm applies the final LayerNorm after average" in msg
    with pytest.raises(ValueError, match="depth: checkpoint 1, variant 12"):
        convert.infer_config(sd, "timm", variant="B/4")


def test_cli(tmp_path, capsys):
    m = random_model(depth=1)
    save_file(export_timm(m)[0], str(tmp_path / "t.safetensors"))
    src = f"--input={tmp_path / 't.safetensors'}"
    assert convert_cli.main([src, f"--output={tmp_path / 'out'}"]) == 2
    assert "pass --variant or --num_heads" in capsys.readouterr().err
    assert convert_cli.main([src, f"--output={tmp_path / 'out'}", "--variant=mu/4"]) == 0
    want = np.asarray(m(IMAGES))
    np.testing.assert_array_equal(load_npz(tmp_path / "out" / "model.npz")(IMAGES), want)
    # A new resolution resamples the table with the family's method (timm: bicubic_antialias).
    assert convert_cli.main([src, f"--output={tmp_path / 'big.npz'}", "--num_heads=2",
                         "--image_size=20"]) == 0
    config, params = read_npz(tmp_path / "big.npz")
    assert config["image_size"] == [20, 20]
    np.testing.assert_allclose(params["posemb/pos_embedding"], resample_posemb(
        m.posemb.pos_embedding[...], (5, 5), num_prefix_tokens=1, method="bicubic_antialias"),
        atol=1e-6)
    assert convert_cli.main([f"--input={tmp_path / 'big.npz'}", "--image_size=24",
                         f"--output={tmp_path / 'x.npz'}"]) == 2  # nothing silently ignored
    # ours -> Google npz -> ours
    assert convert_cli.main([f"--input={tmp_path / 'out' / 'model.npz'}", "--to=google",
                         f"--output={tmp_path / 'g.npz'}"]) == 0
    # Google's code ran tanh GELU, so the import does too: equal to m's tanh-GELU twin.
    twin = load_params_into(random_model(depth=1, gelu_approximate=True), flat_params(m))
    np.testing.assert_array_equal(load_converted_any(tmp_path / "g.npz")(IMAGES),
                                  np.asarray(twin(IMAGES)))


def test_google_round_trip_is_exact_when_told_the_models_gelu(tmp_path, capsys):
    """Our models use the exact GELU; a Google file has no room to say so (Google's loaders
    must read it), so the import takes Google's tanh form unless --gelu=exact says otherwise."""
    m = random_model(depth=1)
    want = np.asarray(m(IMAGES))
    ours = save_npz(tmp_path / "m.npz", architecture(m), flat_params(m))
    out = f"--output={tmp_path / 'g.npz'}"
    assert convert_cli.main([f"--input={ours}", "--to=google", out]) == 0
    assert "Re-import the file with --gelu=exact" in capsys.readouterr().err
    with np.load(tmp_path / "g.npz") as z:
        assert set(z.files) == set(export_google(m))  # Google's names only
    tanh = load_converted_any(tmp_path / "g.npz")(IMAGES)
    assert 1e-6 < np.abs(tanh - want).max() < 1e-2  # the documented tanh/exact gap
    assert convert_cli.main([f"--input={tmp_path / 'g.npz'}", "--gelu=exact",
                         f"--output={tmp_path / 'back'}"]) == 0
    assert "exact GELU" in capsys.readouterr().out
    np.testing.assert_array_equal(load_npz(tmp_path / "back" / "model.npz")(IMAGES), want)
    config, params = import_checkpoint(tmp_path / "g.npz", gelu_approximate=False)
    assert config["gelu_approximate"] is False
    np.testing.assert_array_equal(
        load_model(tmp_path / "g.npz", gelu_approximate=False, verbose=False)(IMAGES), want)
    # The other way: a timm-family file whose model computed the tanh form.
    twin = load_params_into(random_model(depth=1, gelu_approximate=True), flat_params(m))
    save_file(export_timm(m)[0], str(tmp_path / "t.safetensors"))
    assert convert_cli.main([f"--input={tmp_path / 't.safetensors'}", "--num_heads=2",
                             "--gelu=tanh", f"--output={tmp_path / 't.npz'}"]) == 0
    np.testing.assert_array_equal(load_npz(tmp_path / "t.npz")(IMAGES), twin(IMAGES))
    assert convert_cli.main([f"--input={tmp_path / 't.npz'}", "--gelu=exact",
                         f"--output={tmp_path / 'x.npz'}"]) == 2  # ours records its own form
    assert "['gelu_approximate'] apply to Google and timm inputs only" in capsys.readouterr().err


def test_written_files_respect_the_umask(tmp_path):
    """Every format is written as a plain open() writes: the umask for a new file, the old mode
    for an existing one (safetensors' own writer makes files 0600)."""
    src = convert.save_timm_safetensors(random_model(depth=1), tmp_path / "src.safetensors")
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        for to, name in (("vit_jax", "a.npz"), ("google", "g.npz"), ("timm", "t.safetensors")):
            assert convert_cli.main([f"--input={src}", f"--output={out / name}", f"--to={to}"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {"a.npz": 0o640, "g.npz": 0o640, "t.safetensors": 0o640}
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    (out / "t.safetensors").chmod(0o604)
    convert.save_timm_safetensors(random_model(depth=1), out / "t.safetensors")
    assert stat.S_IMODE((out / "t.safetensors").stat().st_mode) == 0o604


def test_files_behind_symlinks_are_told_by_content(tmp_path, capsys):
    """A hub cache: model.safetensors -> blobs/<hash>, a name without the suffix."""
    m = random_model(depth=1)
    (tmp_path / "blobs").mkdir()
    convert.save_timm_safetensors(m, tmp_path / "blobs" / "t.safetensors").rename(
        tmp_path / "blobs" / "1a2b")
    save_npz(tmp_path / "blobs" / "n.npz", architecture(m), flat_params(m)).rename(
        tmp_path / "blobs" / "3c4d")
    (tmp_path / "model.safetensors").symlink_to(tmp_path / "blobs" / "1a2b")
    (tmp_path / "ours.npz").symlink_to(tmp_path / "blobs" / "3c4d")
    assert convert.file_kind(tmp_path / "blobs" / "1a2b") == ".safetensors"
    assert convert.file_kind(tmp_path / "blobs" / "3c4d") == ".npz"
    want = np.asarray(m(IMAGES))
    for name in ("model.safetensors", "ours.npz"):
        np.testing.assert_array_equal(load_model(tmp_path / name, verbose=False)(IMAGES), want)
    (tmp_path / "notes").write_text("not a checkpoint")
    assert convert_cli.main([f"--input={tmp_path / 'notes'}", f"--output={tmp_path / 'o'}"]) == 2
    assert "unknown checkpoint file type 'notes'" in capsys.readouterr().err
    assert convert_cli.main([f"--input={tmp_path / 'gone.npz'}", f"--output={tmp_path / 'o'}"]) == 2
    assert "gone.npz: no such file" in capsys.readouterr().err
    assert convert_cli.main([f"--input={tmp_path / 'ours.npz'}", "--to=timm",
                         f"--output={tmp_path / 'o.npz'}"]) == 2
    assert "names a .npz file but --to=timm writes .safetensors" in capsys.readouterr().err


def load_converted_any(path):
    config, params = import_checkpoint(path)
    return load_params_into(build_architecture(config), params)
