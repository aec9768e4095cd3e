"""Every notebook in notebooks/ runs top to bottom in the venv's kernel and draws its figures."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    # Appended check: jupyter_client starts kernel specs whose argv[0] is "python" with
    # sys.executable, so the kernel must be this venv's interpreter (not whatever is on PATH).
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}  # as users run
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} produced no image output"
