"""Evaluation at native resolution (NaViT's): resize_tokens' grids, the packed eval pass over
a split (every image once, per-process shares in step), and the packed evaluator equal to
evaluating each image alone at its own size through the ordinary path."""

import collections
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from PIL import Image

from tests.helpers import tiny_config
from vit_jax import create_model, evaluators
from vit_jax.config import validate
from vit_jax.data import DataError, build_pp, dataset_info
from vit_jax.data.ops_image import ResizeTokens
from vit_jax.data.packed_eval import PackedEvalBatches
from vit_jax.evaluators import ModelView
from vit_jax.evaluators.packed import PackedClassification

PP = "decode|resize_tokens(12, 4)|value_range(-1,1)|onehot(3)"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of RGB PNGs of random sizes (6-40 px) and aspect ratios (1:4 to 4:1)."""
    root = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 23)):
        for i in range(n):
            label = i % 3
            h, w = (int(s) for s in rng.integers(6, 41, 2))
            pixels = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
            pixels[..., label] = 255  # a class's colour, so a model could tell them apart
            path = root / split / str(label) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return {"name": "folder", "root": str(root), "pp_train": PP, "pp_eval": PP}


@pytest.mark.parametrize("hw", [(28, 28), (8, 8), (100, 50), (37, 53), (10, 1000), (1000, 10),
                                (1, 1), (7, 300)])
@pytest.mark.parametrize("budget", [1, 12, 16, 64])
def test_resize_tokens_is_the_largest_grid_of_one_scale_within_the_budget(hw, budget):
    h, w = hw
    rows, cols = (s // 4 for s in ResizeTokens(budget, 4).size(hw))
    assert 1 <= rows * cols <= budget

    def grid(scale):  # NaFlex's rule: both sides ceil'd at one scale
        return max(1, int(np.ceil(h * scale - 1e-9))), max(1, int(np.ceil(w * scale - 1e-9)))

    scales = np.concatenate([np.arange(1, budget + 1) / h, np.arange(1, budget + 1) / w])
    feasible = [grid(s) for s in scales if np.prod(grid(s)) <= budget]
    best = max((r * c for r, c in feasible), default=1)
    assert rows * cols == best
    if max(h, w) / min(h, w) <= budget:  # not clipped: the grid is the image's shape at one scale
        assert any(grid(s) == (rows, cols) for s in scales if np.prod(grid(s)) <= budget)
    if h == w and int(budget ** 0.5) ** 2 == budget:
        assert rows == cols == int(budget ** 0.5)


def test_resize_tokens_resizes_and_rejects_bad_arguments():
    out = build_pp("resize_tokens(16, 4)")({"image": np.zeros((30, 60, 3), np.uint8)})
    assert out["image"].shape == (12, 20, 3)  # 3x5 patches: 1:2 within the budget of 16
    with pytest.raises(DataError, match="max_tokens must be an int >= 1"):
        build_pp("resize_tokens(0, 4)")


def test_packed_eval_pass_holds_every_image_once_and_process_shares_stay_in_step(folder):
    whole = PackedEvalBatches(folder, pp=PP, patch_size=4, max_tokens=12, max_images=3,
                              batch_size=2)
    assert len(whole) == 4 and whole.seq_len == 36  # 23 images, 6 per batch
    seen = []
    for batch in whole:
        assert batch["patches"].shape == (2, 36, 48) and batch["image_mask"].shape == (2, 3)
        assert np.array_equal(batch["index"] >= 0, batch["image_mask"])
        for seq in range(2):
            for slot in range(3):
                n = (batch["segment_ids"][seq] == slot + 1).sum()
                assert (1 <= n <= 12) if batch["image_mask"][seq, slot] else n == 0
        seen += batch["index"][batch["image_mask"]].tolist()
    assert seen == list(range(23))  # in order, none split, none lost, none twice

    shares = [PackedEvalBatches(folder, pp=PP, patch_size=4, max_tokens=12, max_images=3,
                                batch_size=1, process_index=p, process_count=2)
              for p in range(2)]
    assert len(shares[0]) == len(shares[1]) == 4  # the same number of steps on each
    indices = [b["index"][b["image_mask"]].tolist() for share in shares for b in share]
    assert sorted(sum(indices, [])) == list(range(23))
    fourth = PackedEvalBatches(folder, pp=PP, patch_size=4, max_tokens=12, max_images=1,
                               batch_size=1, process_index=3, process_count=4)
    assert len(fourth) == 6  # images 20, 21, 22 go to processes 0-2 in the last step: ...
    last = fourth.batch(5)  # ... the fourth's share has ended: an all-padding batch
    assert not last["image_mask"].any() and not last["segment_ids"].any()
    assert last["patches"].shape == (1, 12, 48) and (last["index"] == -1).all()


def test_an_image_beyond_the_budget_is_an_error_naming_it(folder):
    wrong = PackedEvalBatches(folder, pp="decode|resize(16)|value_range(-1,1)|onehot(3)",
                              patch_size=4, max_tokens=12, max_images=2, batch_size=1)
    with pytest.raises(DataError, match=r"16x16 after .* not at most 12 whole 4x4 patches; "
                                        r"give each image its size with resize_tokens\(12, 4\)"):
        next(iter(wrong))


@pytest.mark.parametrize("pool", ["gap", "map"])
def test_packed_evaluator_equals_each_image_alone_at_its_own_size(folder, pool):
    model = create_model("mu/4", num_classes=3, width=32, depth=2, mlp_dim=64, num_heads=4,
                         image_size=8, class_token=False, pool=pool, posemb="sincos2d",
                         head_zero_init=False)
    evaluate = PackedClassification(folder, pp=PP, max_tokens=12, max_images=3, batch_size=2)
    got = evaluate(ModelView.of(model))

    data = PackedEvalBatches(folder, pp=PP, patch_size=4, max_tokens=12, max_images=3,
                             batch_size=2)
    losses, right, tokens = [], [], []
    for i in range(23):
        example = data.example(i)
        image = example["image"]
        logits = np.asarray(model(image[None], train=False))[0]
        losses.append(float(optax.softmax_cross_entropy(logits, example["labels"])))
        right.append(int(np.argmax(logits) == np.argmax(example["labels"])))
        tokens.append(image.shape[0] * image.shape[1] // 16)
    np.testing.assert_allclose(got["eval/loss"], np.mean(losses), rtol=1e-5)
    assert got["eval/accuracy"] == pytest.approx(np.mean(right))
    assert got["eval/tokens"] == pytest.approx(np.mean(tokens))
    assert got["eval/padding"] == pytest.approx(1 - sum(tokens) / (4 * 2 * 36))
    assert len(set(tokens)) > 2  # the images really had different grids


def test_packed_eval_section_is_checked_before_any_work(folder):
    def config(**section):
        c = tiny_config()
        c.model.update(class_token=False, pool="gap", posemb="sincos2d")
        c.evals.native = dict(kind="packed", **section)
        return c

    validate(config(max_tokens=4, pp="decode|resize_tokens(4, 4)|value_range(-1,1)|onehot(10)"))
    with pytest.raises(ValueError, match=r"config.evals.native.max_tokens=None must be a "
                                         "positive integer"):
        validate(config(pp="decode|resize_tokens(4, 4)|value_range(-1,1)|onehot(10)"))
    with pytest.raises(ValueError, match="config.evals.native.pp must be the eval pp string"):
        validate(config(max_tokens=4))
    with pytest.raises(ValueError, match="config.evals.native.pp: .*unknown pp op 'resiz'"):
        validate(config(max_tokens=4, pp="decode|resiz(4)|onehot(10)"))
    assert jax.device_count() == 8  # tests/conftest.py: a data-parallel mesh of 8
    with pytest.raises(ValueError, match=r"config.evals.native.batch_size=3 \(sequences per "
                                         r"step\) is not divisible by 8"):
        validate(config(max_tokens=4, batch_size=3,
                        pp="decode|resize_tokens(4, 4)|value_range(-1,1)|onehot(10)"))
    c = config(max_tokens=4, pp="decode|resize_tokens(4, 4)|value_range(-1,1)|onehot(10)")
    c.eval_batch_size = 16  # 4 sequences of 4 images: rounded up to the 8 devices
    assert evaluators.build(c)["native"]._sequences == 8
    with pytest.raises(ValueError, match="config.evals.native: unknown keys \\['seq_len'\\]"):
        validate(config(max_tokens=4, pp="decode|onehot(10)", seq_len=3))
    c = config(max_tokens=4, pp="decode|resize_tokens(4, 4)|value_range(-1,1)|onehot(10)")
    c.model.class_token = True
    with pytest.raises(ValueError, match=r"config.evals.native \(kind='packed'\) needs a ViT "
                                         "pooling each image.*class_token=False"):
        validate(c)


def test_training_logs_the_packed_evaluation(tmp_path):
    from vit_jax.train import train_and_evaluate

    c = tiny_config(total_steps=8, eval_every_steps=8, checkpoint_every_steps=8,
                    **{"optim.warmup_steps": 2})
    c.model.update(class_token=False, pool="gap", posemb="sincos2d")
    c.evals.native = dict(kind="packed", max_tokens=9, max_images=4,
                          pp="decode|resize_tokens(9, 4)|value_range(-1,1)|onehot(10)")
    final = train_and_evaluate(c, tmp_path)["final"]
    assert final["native/tokens"] == 9.0  # the 8x8 digits enlarged to 3x3 patches of 4 px
    # Every image has 9 patches: only the last sequence's empty slots pad (4 images of 9 per
    # sequence); the last batch's empty sequences do not count.
    n = dataset_info(c.data).num_eval
    assert n % 4 and final["native/padding"] == pytest.approx(1 - n * 9 / (-(-n // 4) * 36))
    assert np.isfinite(final["native/loss"]) and 0 <= final["native/accuracy"] <= 1


def test_native_sweep_trains_once_and_draws_accuracy_against_the_token_budget(tmp_path,
                                                                              monkeypatch):
    from vit_jax.sweep import native_sweep_config
    from vit_jax.sweep.runner import run_sweep

    passes = collections.Counter()  # passes over the eval split, by token budget
    iterate = PackedEvalBatches.__iter__

    def counted(self):
        passes[self.max_tokens] += 1
        return iterate(self)

    monkeypatch.setattr(PackedEvalBatches, "__iter__", counted)

    base = tiny_config(total_steps=4, eval_every_steps=4, checkpoint_every_steps=4,
                       **{"optim.warmup_steps": 1})
    # NaViT's fractional factorised positions: trained, checkpointed, reloaded, evaluated.
    base.model.update(class_token=False, pool="gap", posemb="factorized_fractional")
    base.data.pp_train = "decode|resize_native(4, 16, multiple=4)|value_range(-1,1)|onehot(10)"
    base.data.packing = {"seq_len": 32, "max_images": 6, "patch_size": 4}
    fixed = Path(__file__).parent.parent / "docs" / "results" / "resolution" / "results.json"
    sweep = native_sweep_config("tiny_native", base, token_budgets=[1, 4, 9], max_images=2,
                                compare=str(fixed),
                                pp="decode|resize_tokens({max_tokens}, {patch})|"
                                   "value_range(-1,1)|onehot(10)")
    records = run_sweep(sweep, tmp_path)
    assert [r["name"] for r in records] == ["navit", "max_tokens=1", "max_tokens=4",
                                            "max_tokens=9"]
    assert passes == {1: 1, 4: 1, 9: 1}  # compiled on one batch, then one timed pass each
    assert all(r["status"] == "done" for r in records), [r.get("error") for r in records]
    for r, budget in zip(records[1:], (1, 4, 9), strict=True):
        assert r["tokens"] == budget  # the square 8x8 digits fill each square budget
        assert 0 <= r["final_accuracy"] <= 1 and r["eval_img_s"] > 0 and r["padding"] < 0.01
    text = (tmp_path / "results.md").read_text()
    assert "| 9 | 9.0 |" in text and "Fixed-resolution ViT" in text and "| 16 | 95.96% |" in text
    assert (tmp_path / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_sweep(sweep, tmp_path)  # a second run reloads every point
    assert [r["final_accuracy"] for r in again] == [r["final_accuracy"] for r in records]
    assert passes == {1: 1, 4: 1, 9: 1}  # nothing evaluated again
