"""docs/tutorial.ipynb runs top to bottom, as a new user runs it: on a box velnet simulates (64 Mpc/h, 64^3)."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    pytest.importorskip("fastpm")
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "(32, 32, 32) (32, 32, 32, 3) 2.0 Mpc/h cells" in text and "wu2021 velocity 2.0 Mpc/h cells" in text
    assert "r = " in text and "# velnet evaluation report" in text  # r(k) printed, the report shown
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the slice and T(k), r(k)
    assert (tmp_path / "tutorial-run" / "report" / "report.md").is_file()
