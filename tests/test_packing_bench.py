"""benchmarks/packing.py at toy size: both arms' batches and steps, and the report's verdicts."""

from benchmarks import packing

TINY = dict(packing.MODEL, width=32, depth=1, num_heads=2, mlp_dim=32)


def test_both_arms_run_and_the_report_states_the_targets():
    r = packing.measure(rounds=1, steps=1, batches_per_arm=2, model=TINY, train_images=120)
    padded, packed = r["arms"]["padded"], r["arms"]["packed"]
    assert padded["images"] == 32 and padded["max_images"] == 1  # one image per sequence
    assert packed["padding"] < padded["padding"]  # packing fills the slots padding wastes
    assert packed["images"] > padded["images"]
    assert r["ratio_useful_tokens_s"] > 0 and packed["useful_tokens_s"] > 0
    md = packing.report(r, "test host")
    assert "| packed | 8 × 256 (≤ 16) |" in md and "useful tokens/s ≥ 1.5× padding's" in md
