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
PICTURES = {  # what a notebook must show beyond text: (MIME type, what it holds)
    "01_quickstart.ipynb": [
        ("image/svg+xml", ">planner</text>"),  # the graph, drawn by Graphviz
        ("text/html", "<progress"),  # the progress bar
        ("text/html", "<th>sentiment</th>"),  # the results as a pandas table
        ("text/html", 'data-chart="throughput"'),  # the run report, inline
    ],
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
    rich = [out.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
            for out in cell.outputs]  # fmt: skip
    for kind, needle in PICTURES.get(path.name, ()):
        assert any(needle in str(data.get(kind, "")) for data in rich), (kind, needle)
