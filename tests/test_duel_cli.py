"""benchmarks/duel.py's command line: bad input is one line, exit 2, before any worker starts
(the duel itself needs torch + timm, which the suite does not install)."""

import pytest

from benchmarks import duel


@pytest.mark.parametrize("argv,named", [
    (["--variants", "Q/16"], "no timm peer for ['Q/16']"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--rounds", "0"], "--rounds must be >= 1"),
])
def test_bad_input_is_named_in_one_line_before_any_work(argv, named, capsys, monkeypatch):
    monkeypatch.setattr(duel, "duel", lambda *a, **k: pytest.fail("the duel started"))
    with pytest.raises(SystemExit) as exit_info:
        duel.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
