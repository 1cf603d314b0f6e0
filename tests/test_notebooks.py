"""The notebooks are documentation that runs: execute each with a real kernel."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # the notebooks (and the embedded model)

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SHOWS = {  # what each notebook's output must contain when it ran for real
    "01_quickstart.ipynb": "100 delivered",
    "02_chain_of_specialists.ipynb": "# Chain Execution Results",
    "03_evaluation.ipynb": "llm-blend  agreement",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    ).execute()
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "Traceback" not in outputs and SHOWS[path.name] in outputs
