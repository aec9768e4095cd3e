"""The throughput report's host-memory table: each setting's processes, and the ratio of the
medians against the opted-out setting."""

from benchmarks.throughput import malloc_rows


def _proc(img_s: float, faults: float) -> dict:
    return {"results": [{"label": "model", "train": {
        "img_s": img_s, "minor_faults": faults, "system_s": faults / 500_000,
        "max_rss_mib": 2_000.0}}]}


def test_host_memory_rows_put_each_setting_against_the_opt_out():
    run = {"malloc": {"1": [_proc(18.0, 0), _proc(20.0, 0)],
                      "0": [_proc(15.0, 425_000), _proc(13.0, 424_000)]}}
    header, rule, keep, glibc = malloc_rows(run)
    assert "page faults / step" in header and rule.startswith("|---")
    assert keep.startswith("| vit_jax default") and "| 1.36× |" in keep  # 19 / 14
    assert "| 0, 0 |" in keep and "| 2,000, 2,000 |" in keep
    assert "`VIT_JAX_CPU_MALLOC=0`" in glibc and "| 1.00× |" in glibc
    assert "425,000, 424,000" in glibc
    assert malloc_rows({}) == []
