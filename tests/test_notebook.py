"""The Colab notebook runs top to bottom (on the CPU here: its no-GPU path, the embedded model, the smoke grid)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "colab_quickstart.ipynb"


@pytest.mark.slow
def test_every_cell_runs_and_the_report_is_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    # The installed project is this checkout (the test environment installed it): no second install here.
    parameters.source += f'\nINSTALL = False\nRUN_DIR = "{tmp_path / "run"}"\n'
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the no-GPU path, also on a machine with a GPU
    monkeypatch.setenv("WANDB_SILENT", "true")
    client = NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )
    assert "No GPU is attached" in text and "sweep finished with exit code 0" in text
    shown = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "display_data"
    ]
    assert any(
        "text/markdown" in o["data"] and "## 1. Does agency improve" in o["data"]["text/markdown"]
        for o in shown
    )
    assert any("image/png" in o["data"] for o in shown)
    assert len(list((tmp_path / "run" / "records").glob("*.json"))) == 4
