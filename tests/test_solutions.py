"""The solution notebooks: committed with outputs from a clean run, and they still run."""
import shutil

import nbformat
import pytest

from autograder import course
from autograder.authoring.notebooks import execute

NOTEBOOKS = course.notebooks()
MAX_BYTES = 400_000  # figures at 72 dpi; a solution notebook stays reviewable on GitHub


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_committed_outputs_come_from_one_clean_in_order_run(nb):
    notebook = nbformat.read(nb.source, 4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run `python -m autograder execute`"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", cell.source[:80]
            assert not (out.output_type == "stream" and out.name == "stderr"), out.text[:200]
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "at least one picture"
    assert nb.source.stat().st_size < MAX_BYTES
    assert set(notebook.metadata) <= {"kernelspec", "language_info"}
    assert all("execution" not in c.metadata for c in notebook.cells)


# A test's kernel shares the machine with whatever else runs: with one torch thread a busy core
# costs it about its share, where two OpenMP threads spin-waiting on each other can run 10-50x
# slower. A full run's training cell gets an hour (about a minute on an idle 2-core machine).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BUSY_CELL_TIMEOUT = 3600


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_solutions_run_end_to_end_in_short_mode(nb, tmp_path, monkeypatch):
    """Every cell still runs, training included, with a few steps of training
    (``glowcourse.is_short_run``); the committed outputs come from the full run."""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    copy = tmp_path / nb.source.name
    shutil.copyfile(nb.source, copy)
    executed = execute(copy, timeout=600, env={"GLOWCOURSE_SHORT_RUN": "1", **ONE_THREAD})  # raises on any error
    fresh = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert fresh, "the notebook printed nothing"


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_solutions_execute_in_full_without_error(nb, tmp_path, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("GLOWCOURSE_SHORT_RUN", raising=False)
    copy = tmp_path / nb.source.name
    shutil.copyfile(nb.source, copy)
    execute(copy, timeout=BUSY_CELL_TIMEOUT, env=ONE_THREAD)  # raises CellExecutionError on any error
