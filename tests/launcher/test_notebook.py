"""notebooks/dogbreed.ipynb, executed in local mode by a real Jupyter kernel (nbclient, ipykernel).

The notebook drives the launcher's Python API: a two-trial search and a two-epoch training on
the 3-breed photos in dogbreed-train:latest, the report's figures, a local endpoint with
dogbreed-serve:latest, a test photo classified with breed names and explained, the endpoint
deleted. Any cell's error fails the test. The committed notebook carries no outputs.
"""

from __future__ import annotations

import json

import pytest

from tests.launcher.conftest import REPO, require_launcher_venv

require_launcher_venv()

import nbformat
from nbclient import NotebookClient

NOTEBOOK = REPO / "notebooks" / "dogbreed.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    [parameters] = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert 'MODE = "local"' in parameters.source


@pytest.mark.docker
@pytest.mark.slow
def test_the_notebook_runs_in_local_mode(dogs3, train_image, serve_image, tmp_path, remove_sdk_containers):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    [index] = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    # What papermill does: the run's parameters in a cell after the defaults.
    overrides = {"DATA": str(dogs3), "WORK": str(tmp_path), "TRAIN_IMAGE": train_image, "SERVE_IMAGE": serve_image}
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{name} = {json.dumps(value)}" for name, value in overrides.items())))
    client = NotebookClient(notebook, kernel_name="python3", timeout=900,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    with client.setup_kernel():
        try:
            for cell_index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, cell_index)  # CellExecutionError, with the cell's traceback, on an error
        except Exception:
            # A cell failed between deploy and delete: stop the endpoint's container before the kernel goes.
            cleanup = nbformat.v4.new_code_cell("if 'endpoint' in globals(): launcher.delete(endpoint)")
            client.execute_cell(cleanup, len(notebook.cells))
            raise
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    breeds = {path.name.split(".", 1)[1].replace("_", " ") for path in (dogs3 / "train").iterdir()}
    prediction = text[text.index("true breed: "):].splitlines()
    labels = [line.rsplit(None, 1)[0] for line in prediction[1:1 + len(breeds)]]
    assert set(labels) == breeds, prediction
    probabilities = [float(line.rsplit(None, 1)[1]) for line in prediction[1:1 + len(breeds)]]
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 0.01
    assert prediction[1 + len(breeds)].startswith("explanation: ")
    assert "deleted endpoint dogbreed-notebook" in text
    shown = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(shown) >= 3, "the report's figures and the overlay are shown"
