"""Collects README.md as tests (sybil): every bash and python block runs, see tests/readme.py.

The README's blocks build on each other (a run trained above is loaded below), so they all run
in one pytest-xdist worker, in order: ``make test`` distributes whole files (``--dist loadfile``).
"""

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

from tests.readme import enter_scratch_dir, leave_scratch_dir, run_shell_block

pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), CodeBlockParser("bash", evaluator=run_shell_block)],
    patterns=["README.md"], setup=enter_scratch_dir, teardown=leave_scratch_dir,
).pytest()
