"""NaViT packing: pack_images on the host, and the model on packed sequences equal to each
image through the ordinary path (f32, 1e-5), with every attention kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import attention_temp_bytes
from vit_jax import create_model, pack_images
from vit_jax.models.attention import segment_lengths_and_offsets

TINY = dict(num_classes=5, width=32, depth=2, mlp_dim=64, num_heads=4, head_zero_init=False,
            class_token=False, pool="gap")
# Different sizes and aspect ratios (patch 4): 16, 12, 12, 4, 24 and 9 tokens.
SHAPES = [(16, 16), (12, 16), (16, 12), (8, 8), (24, 16), (12, 12)]


def images(shapes=SHAPES, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((h, w, 3)).astype(np.float32) for h, w in shapes]


def test_packing_never_splits_or_loses_an_image():
    ims = images()
    batch, placement = pack_images(ims, patch_size=4, seq_len=32, max_images=3,
                                   labels=list(range(len(ims))))
    b = batch["patches"].shape[0]
    assert batch["patches"].shape == (b, 32, 48) and batch["segment_ids"].shape == (b, 32)
    assert batch["positions"].shape == (b, 32, 2) and batch["image_mask"].shape == (b, 3)
    assert sorted(placement) == sorted(set(placement))  # one slot per image
    for i, (im, (seq, slot)) in enumerate(zip(ims, placement, strict=True)):
        tokens = batch["segment_ids"][seq] == slot + 1
        gh, gw = im.shape[0] // 4, im.shape[1] // 4
        assert tokens.sum() == gh * gw  # whole, in one sequence
        # The patches are the image's, in row-major order, each (row, column, channel).
        got = batch["patches"][seq][tokens].reshape(gh, gw, 4, 4, 3)
        np.testing.assert_array_equal(got.transpose(0, 2, 1, 3, 4).reshape(im.shape), im)
        rows, cols = batch["positions"][seq][tokens].T
        np.testing.assert_array_equal(rows * gw + cols, np.arange(gh * gw))
        assert (batch["grids"][seq][tokens] == (gh, gw)).all()
        assert batch["image_mask"][seq, slot] and batch["labels"][seq, slot] == i
    assert batch["image_mask"].sum() == len(ims)
    assert (batch["segment_ids"] > 0).sum() == sum(h * w // 16 for h, w in SHAPES)
    assert np.all(batch["patches"][batch["segment_ids"] == 0] == 0)
    assert (batch["segment_ids"] > 0).sum(axis=1).max() <= 32


@pytest.mark.parametrize("kwargs,message", [
    (dict(seq_len=8), "image 0 has 16 patches, more than seq_len=8"),
    (dict(patch_size=5), "image 0 is 16x16, not a multiple of the 5x5 patch"),
    (dict(max_grid=(4, 4)), "image 4's 6x4 patch grid is beyond the model's position table"),
    (dict(max_images=0), "max_images must be a positive int"),
    (dict(num_sequences=2), "these 6 images need 3 sequences of 32 tokens, more than "
                            "num_sequences=2"),
])
def test_packing_errors_name_the_fix(kwargs, message):
    args = dict(patch_size=4, seq_len=32, max_images=3) | kwargs
    with pytest.raises(ValueError, match=message):
        pack_images(images(), **args)


def test_a_fixed_number_of_sequences_pads_with_empty_ones():
    batch, placement = pack_images(images(), patch_size=4, seq_len=32, max_images=3,
                                   num_sequences=5)
    assert batch["segment_ids"].shape == (5, 32) and batch["image_mask"].shape == (5, 3)
    used = {seq for seq, _ in placement}
    assert used == {0, 1, 2} and not batch["image_mask"][3:].any()
    assert not batch["segment_ids"][3:].any()


def per_image_logits(model, ims):
    return [np.asarray(model(jnp.asarray(im)[None]))[0] for im in ims]


@pytest.mark.parametrize("attention,scan,pool", [("standard", False, "gap"),
                                                 ("chunked", True, "gap"),
                                                 ("xla", False, "gap"),
                                                 ("standard", False, "map")])
def test_packed_logits_equal_each_image_alone(attention, scan, pool):
    """sincos2d positions are exact for every grid: images of six shapes in sequences of 32
    tokens (padding included) give the logits each gets through the ordinary path; MAP
    pooling runs one probe per image slot."""
    model = create_model("mu/4", image_size=16, posemb="sincos2d", attention=attention,
                         attention_query_chunk=8, attention_key_chunk=6, scan=scan,
                         **(TINY | {"pool": pool}))
    ims = images()
    batch, placement = pack_images(ims, patch_size=4, seq_len=32, max_images=3)
    packed = np.asarray(nnx.jit(lambda m, b: m(b))(model, batch))
    assert packed.shape == (batch["patches"].shape[0], 3, 5) and packed.dtype == np.float32
    for ref, (seq, slot) in zip(per_image_logits(model, ims), placement, strict=True):
        np.testing.assert_allclose(packed[seq, slot], ref, atol=1e-5, rtol=1e-5)


def test_learned_positions_equal_the_ordinary_path_on_the_models_grid():
    model = create_model("mu/4", image_size=16, **TINY)
    ims = images([(16, 16)] * 3, seed=1)
    batch, placement = pack_images(ims, patch_size=4, seq_len=40, max_images=2,
                                   max_grid=model.grid)
    packed = np.asarray(model(batch))
    for ref, (seq, slot) in zip(per_image_logits(model, ims), placement, strict=True):
        np.testing.assert_allclose(packed[seq, slot], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("posemb", ["factorized", "factorized_fractional"])
def test_factorized_positions_equal_the_ordinary_path_for_every_grid(posemb):
    """NaViT's factorised tables: packed images of six grids (up to 6x4) give each image's
    ordinary logits; absolute positions index the tables' first rows, fractional ones scale
    each coordinate by its image's side (floor(i*G/g)) so every grid spans the tables."""
    model = create_model("mu/4", image_size=24, posemb=posemb, **TINY)  # 6x6 tables
    pe = model.posemb
    assert pe.pos_embedding_row.shape == (6, 32) and pe.pos_embedding_col.shape == (6, 32)
    assert pe.max_grid == ((6, 6) if posemb == "factorized" else None)
    ims = images()
    batch, placement = pack_images(ims, patch_size=4, seq_len=32, max_images=3,
                                   max_grid=pe.max_grid)
    packed = np.asarray(model(batch))
    for ref, (seq, slot) in zip(per_image_logits(model, ims), placement, strict=True):
        np.testing.assert_allclose(packed[seq, slot], ref, atol=1e-5, rtol=1e-5)
    # The table rows each token gets, by hand: a 2x3 grid (image 3 is 8x8: 2x2; use 8x12).
    rows, cols = pe.pos_embedding_row[...], pe.pos_embedding_col[...]
    got = np.asarray(pe(grid=(2, 3)))[0]
    r_index, c_index = ([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2])
    if posemb == "factorized_fractional":
        r_index, c_index = ([0, 0, 0, 3, 3, 3], [0, 2, 4, 0, 2, 4])  # i*6//2, j*6//3
    np.testing.assert_allclose(got, np.asarray(rows)[r_index] + np.asarray(cols)[c_index])


def test_fractional_positions_cover_grids_beyond_the_tables_and_absolute_ones_refuse():
    fractional = create_model("mu/4", image_size=8, posemb="factorized_fractional", **TINY)
    assert np.isfinite(np.asarray(fractional(jnp.zeros((1, 40, 12, 3))))).all()  # 10x3 on 2x2
    absolute = create_model("mu/4", image_size=8, posemb="factorized", **TINY)
    with pytest.raises(ValueError, match=r"a 10x3 patch grid is beyond the factorized position "
                                         r"tables \(2x2\); use posemb='factorized_fractional'"):
        absolute(jnp.zeros((1, 40, 12, 3)))
    batch, _ = pack_images(images()[:1], patch_size=4, seq_len=32, max_images=1)
    with pytest.raises(ValueError, match="fractional positions need each token's image grid"):
        fractional({k: v for k, v in batch.items() if k != "grids"})


def test_factorized_tables_are_not_decayed_and_follow_a_new_patch_size():
    from vit_jax.models.flexi import change_patch_size
    from vit_jax.optim import decay_mask

    model = create_model("mu/4", image_size=16, posemb="factorized", **TINY)
    mask = nnx.to_pure_dict(decay_mask(nnx.state(model, nnx.Param)))
    assert mask["posemb"] == {"pos_embedding_row": False, "pos_embedding_col": False}
    smaller = change_patch_size(model, 8)  # 4x4 grid -> 2x2: each table resampled linearly
    assert smaller.posemb.max_grid == (2, 2)
    assert smaller.posemb.pos_embedding_row.shape == (2, 32)
    np.testing.assert_allclose(  # linear resize of 4 rows to 2 averages neighbouring pairs
        smaller.posemb.pos_embedding_row[...],
        model.posemb.pos_embedding_row[...].reshape(2, 2, 32).mean(1), atol=1e-6)


def test_packed_gradients_equal_the_per_image_losses():
    """The loss summed over the real images of a packed batch has the gradient of the same
    losses computed image by image."""
    model = create_model("mu/4", image_size=16, posemb="sincos2d", **TINY)
    ims = images()[:4]
    labels = np.array([0, 3, 1, 4])
    batch, placement = pack_images(ims, patch_size=4, seq_len=32, max_images=2, labels=labels)

    def packed_loss(m):
        logp = jax.nn.log_softmax(m(batch))
        picked = jnp.take_along_axis(logp, jnp.asarray(batch["labels"])[..., None], -1)[..., 0]
        return -jnp.sum(jnp.where(batch["image_mask"], picked, 0.0))

    def separate_loss(m):
        return -sum(jax.nn.log_softmax(m(jnp.asarray(im)[None]))[0, y]
                    for im, y in zip(ims, labels, strict=True))

    lp, gp = nnx.value_and_grad(packed_loss)(model)
    ls, gs = nnx.value_and_grad(separate_loss)(model)
    np.testing.assert_allclose(lp, ls, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
                 nnx.to_pure_dict(nnx.state(gp)), nnx.to_pure_dict(nnx.state(gs)))


@pytest.mark.parametrize("kw,message", [
    (dict(class_token=True, pool="cls"), "packed input needs class_token=False"),
    (dict(class_token=False, pool="none"), "packed input pools each image with pool='gap' or"),
])
def test_models_that_cannot_take_packed_input_say_so(kw, message):
    model = create_model("mu/4", image_size=16, **(TINY | kw))
    batch, _ = pack_images(images()[:2], patch_size=4, seq_len=32, max_images=2)
    with pytest.raises(ValueError, match=message):
        model(batch)


def test_packed_forward_on_a_data_fsdp_tensor_mesh_equals_one_device():
    """8 fake devices: parameters split over fsdp x tensor, packed sequences over data x fsdp."""
    from vit_jax import sharding

    create = lambda: create_model("mu/4", image_size=16, posemb="sincos2d",  # noqa: E731
                                  **(TINY | {"pool": "map"}))
    batch, _ = pack_images(images(), patch_size=4, seq_len=32, max_images=3, num_sequences=4)
    reference = np.asarray(create()(batch))
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    graphdef, state, shardings = sharding.create_sharded_state(create, mesh)
    forward = sharding.jit_eval_step(lambda s, b: nnx.merge(graphdef, s)(b), shardings, mesh)
    got = np.asarray(forward(state, sharding.shard_batch(batch, mesh)))
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)


def test_segment_masks_keep_the_chunked_kernel_linear_in_memory():
    """The chunked kernel masks segments block by block: packed sequences of 2,048 and 4,096
    tokens cost it ~2x scratch per doubling (never an N x N mask), standard 4x."""
    from vit_jax.models.attention import chunked_attention, standard_attention

    chunked = {n: attention_temp_bytes(chunked_attention, n, segmented=True)
               for n in (2048, 4096)}
    standard = {n: attention_temp_bytes(lambda *a, **k: standard_attention(*a, **k)[0], n,
                                        segmented=True) for n in (2048, 4096)}
    assert chunked[4096] < 2.2 * chunked[2048] and standard[4096] > 3.5 * standard[2048]
    assert chunked[4096] < standard[4096] / 6
    # The masks cost little next to the kernel's own blocks (32.4 MB at 4,096 tokens here).
    assert chunked[4096] < 1.3 * attention_temp_bytes(chunked_attention, 4096)


def test_cudnn_segment_description_is_the_segment_mask():
    """What ``attention="cudnn"`` hands cuDNN for packed input (each image a ragged sequence:
    its length and first token) allows exactly the query-key pairs the segment mask allows,
    for the packer's real batches (odd and even lengths, padding, empty sequences)."""
    for seq_len, num_sequences in ((32, 4), (33, 5)):
        batch, _ = pack_images(images(), patch_size=4, seq_len=seq_len, max_images=3,
                               num_sequences=num_sequences)
        ids = jnp.asarray(batch["segment_ids"])
        lengths, offsets = map(np.asarray, segment_lengths_and_offsets(ids))
        assert lengths.shape == (num_sequences, seq_len)
        assert offsets.shape == (num_sequences, seq_len + 1)
        tokens = np.arange(seq_len)
        for row, (ls, os_) in enumerate(zip(lengths, offsets, strict=True)):
            spans = [(o, n) for o, n in zip(os_[:-1], ls, strict=True) if n >= 0]
            assert all(o >= 0 for o, _ in spans) and (os_[len(spans):] == -1).all()
            member = np.zeros((seq_len, seq_len), bool)
            for o, n in spans:
                inside = (tokens >= o) & (tokens < o + n)
                member |= inside[:, None] & inside[None, :]
            real = np.asarray(ids[row]) > 0
            same = np.asarray(ids[row])[:, None] == np.asarray(ids[row])[None, :]
            np.testing.assert_array_equal(member, same & real[:, None] & real[None, :])
