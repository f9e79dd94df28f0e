"""Repair of mangled notebooks (``autograder/grading/repair.py``), on every notebook, without a kernel."""
import copy
import json

import nbformat
import pytest

from autograder import cells, course
from autograder.catalogues import samples
from autograder.grading import sandbox
from autograder.grading.limits import Limits
from autograder.grading.repair import repair
from autograder.grading.run import grade

NOTEBOOKS = course.notebooks()


def mangle(notebook) -> str:
    """Everything at once: metadata and ids gone, nbformat 4.0, Colab metadata, the first
    solution as markdown, a test cell duplicated and another deleted, a helper cell added."""
    d = json.loads(nbformat.writes(notebook))
    sol = [i for i, c in enumerate(d["cells"]) if cells.is_solution(c)]
    tests = [i for i, c in enumerate(d["cells"]) if cells.is_test(c)]
    d["nbformat_minor"] = 0
    d["metadata"] = {"colab": {"provenance": []}, "accelerator": "GPU"}
    for c in d["cells"]:
        c["metadata"] = {"id": "colab"}
        c.pop("id", None)
    first = d["cells"][sol[0]]
    first.update(cell_type="markdown", source="```python\n" + "".join(first["source"]) + "\n```")
    first.pop("outputs")
    first.pop("execution_count")
    if len(tests) > 1:
        del d["cells"][tests[-1]]
    d["cells"].insert(tests[0], copy.deepcopy(d["cells"][tests[0]]))
    d["cells"].insert(1, {"cell_type": "code", "metadata": {}, "source": "def helper():\n    return 1",
                          "outputs": [], "execution_count": None})
    return json.dumps(d)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_mangled_notebook_is_rebuilt_with_the_students_answers(nb):
    template = nbformat.read(nb.release, 4)
    filled = samples.filled(nb)
    fixed = repair(mangle(filled), template)
    assert fixed.missing == []
    got, want = cells.solutions(fixed.notebook), cells.solutions(filled)
    assert set(got) == set(want) and all(got[g].strip() == want[g].strip() for g in want)
    # every template cell is back, in order, with its metadata; the helper cell is kept
    kept = [c for c in fixed.notebook.cells if not c.id.startswith("student-")]
    assert [c.id for c in kept] == [c.id for c in template.cells]
    assert [c.metadata.get("nbgrader") for c in kept] == [c.metadata.get("nbgrader") for c in template.cells]
    extra = [c for c in fixed.notebook.cells if c.id.startswith("student-")]
    assert [c.source for c in extra] == ["def helper():\n    return 1"]
    text = "; ".join(fixed.fixes)
    assert "markdown cell" in text and "duplicated" in text
    nbformat.validate(fixed.notebook)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_untouched_release_needs_no_repair_and_tests_come_from_the_template(nb):
    template = nbformat.read(nb.release, 4)
    fixed = repair(nbformat.writes(template), template)
    assert fixed.fixes == [] and fixed.missing == []
    assert nbformat.writes(fixed.notebook) == nbformat.writes(_without_outputs(template))


def _without_outputs(nb):
    nb = copy.deepcopy(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return nb


def test_deleted_solution_is_reported_missing_and_the_stub_graded():
    nb = course.Notebook("02_actnorm", "actnorm")
    template = nbformat.read(nb.release, 4)
    d = json.loads(nbformat.writes(samples.filled(nb)))
    d["cells"] = [c for c in d["cells"] if not cells.is_solution(c)]
    fixed = repair(json.dumps(d), template)
    assert fixed.missing == ["actnorm"]
    assert cells.solutions(fixed.notebook) == cells.solutions(template)


def test_grading_without_bubblewrap_stops_with_a_message_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    monkeypatch.setattr(sandbox, "_checked", {})
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap.*--no-sandbox"):
        grade(tmp_path, tmp_path / "out", limits=Limits())
    assert not (tmp_path / "out" / "grades.csv").exists()


@pytest.mark.parametrize("nb", NOTEBOOKS[:1], ids=lambda nb: nb.name)
def test_a_colab_hand_in_without_cell_ids_needs_no_note(nb):
    """Colab saves nbformat 4.0 without cell ids: routine, so nothing for the grades' notes."""
    template = nbformat.read(nb.release, 4)
    d = json.loads(nbformat.writes(samples.filled(nb)))
    d["nbformat_minor"] = 0
    for c in d["cells"]:
        c.pop("id", None)
    fixed = repair(json.dumps(d), template)
    assert fixed.fixes == [] and fixed.missing == []
    assert cells.solutions(fixed.notebook).keys() == cells.solutions(samples.filled(nb)).keys()
