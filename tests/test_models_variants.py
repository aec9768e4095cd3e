import pytest

from vit_jax import abstract_model, count_params, create_model
from vit_jax.models.variants import SIZES, parse_variant

# timm's layout: class token, learned posemb covering it, 1000 classes, 224x224.
EXPECTED = {"Ti/16": 5_717_416, "S/16": 22_050_664, "B/16": 86_567_656, "B/32": 88_224_232,
            "L/16": 304_326_632, "H/14": 632_045_800}


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_parameter_counts_exact(variant):
    assert count_params(abstract_model(variant, num_classes=1000, image_size=224)) == \
        EXPECTED[variant]


def test_every_size_builds_abstractly():
    for name in ("g", "G", "So400m"):
        m = abstract_model(f"{name}/14", num_classes=1000, scan=True)
        s = SIZES[name]
        assert m.encoder.blocks.mlp.fc1.kernel.shape == (s.depth, s.width, s.mlp_dim)
    assert 1.0e9 < count_params(abstract_model("g/14", num_classes=1000)) < 1.1e9
    assert 1.8e9 < count_params(abstract_model("G/14", num_classes=1000)) < 1.9e9


def test_parse_variant():
    assert parse_variant("B/16") == dict(width=768, depth=12, mlp_dim=3072, num_heads=12,
                                         patch_size=(16, 16))
    assert parse_variant("S/1")["patch_size"] == (1, 1)
    assert parse_variant("Ti/16x8")["patch_size"] == (16, 8)
    assert "patch_size" not in parse_variant("L")


def test_pixel_tokens_model():
    m = create_model("Ti/1", num_classes=10, image_size=8, depth=1)
    assert m.patch_embed.kernel.shape == (1, 1, 3, 192)
    assert m.posemb.pos_embedding.shape == (1, 65, 192)


def test_overrides_win():
    m = abstract_model("B/16", num_classes=10, depth=2, image_size=64)
    assert len(m.encoder.blocks) == 2
    assert m.posemb.pos_embedding.shape == (1, 17, 768)
