"""Grading through real nbgrader: selfcheck, a small class, an LMS zip, the CLI and the demo."""
import csv
import html
import json
import re
import subprocess
import sys
import zipfile

import nbformat
import pytest

from autograder import cells, course
from autograder.catalogues import samples
from autograder.grading.limits import Limits
from autograder.grading.results import FIELDS
from autograder.grading.run import grade

pytestmark = pytest.mark.slow

NB = course.notebooks("01_change_of_variables")[0]
A = NB.assignment
FULL = 12.0
REQUIRED_MISTAKES = ["affine-logdet-sign", "compose-missing-logdet", "bpd-no-log-nbins"]


def put(notebook, root, student, name=None):
    return samples.write(notebook, root / student / A / f"{name or NB.name}.ipynb")


def patched(cell_id, code):
    notebook = samples.filled(NB)
    for cell in notebook.cells:
        if cells.grade_id(cell) == cell_id:
            cell.source = code
    return notebook


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    subs = root / "submissions"
    put(samples.filled(NB), subs, "full")
    put(samples.blank(NB), subs, "blank")
    by_name = {m["name"]: m for m in samples.mistakes(A)}
    for name in REQUIRED_MISTAKES:
        put(samples.with_mistake(samples.filled(NB), by_name[name]), subs, f"mistake-{name}")
    broken = subs / "unreadable" / A / f"{NB.name}.ipynb"
    broken.parent.mkdir(parents=True)
    broken.write_text(nbformat.writes(samples.filled(NB))[:3000])
    put(patched("dequantize", "def dequantize(x, n_bins):\n    while True:\n        pass"), subs, "looper")
    put(patched("affine_flow", "import os\nos._exit(1)"), subs, "crasher")
    answer = cells.solutions(samples.filled(NB))["affine_flow"]
    put(patched("affine_flow", answer.replace("class ElementwiseAffine(", "class Affine(")), subs, "renamer")
    put(samples.filled(NB), subs, "wrongname", name="Untitled")
    roster = root / "roster.txt"
    roster.write_text("absent\nfull\n")
    out = root / "out"
    rows = grade(subs, out, roster=roster, limits=Limits(cell_timeout=20))  # generous on a loaded CI machine; the looper still hits it
    return {r.student: r for r in rows}, out, subs


def test_every_student_gets_a_row_with_a_score_or_a_reason(graded):
    rows, out, _ = graded
    assert (rows["full"].score, rows["full"].max_score, rows["full"].status) == (FULL, FULL, "ok")
    assert (rows["blank"].score, rows["blank"].status) == (0, "ok")
    assert rows["absent"].status == "missing" and rows["absent"].score == 0 and rows["absent"].max_score == FULL
    assert rows["unreadable"].status.startswith("unreadable: invalid JSON")
    assert rows["wrongname"].status == "wrong file name: Untitled.ipynb"
    assert rows["looper"].status == "timeout" and 0 < rows["looper"].score < FULL
    assert rows["crasher"].status == "kernel died" and rows["crasher"].score == 0
    with open(out / "grades.csv") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == FIELDS
        csv_rows = list(reader)
    assert len(csv_rows) == len(rows) and {r["student"] for r in csv_rows} == set(rows)


@pytest.mark.parametrize("mistake", REQUIRED_MISTAKES)
def test_typical_mistakes_lose_exactly_their_exercise(graded, mistake):
    rows, _, _ = graded
    row = rows[f"mistake-{mistake}"]
    assert row.status == "ok" and row.score == FULL - 2


def page_text(path) -> str:
    """What a feedback page says, without its markup (highlighted code is split into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def test_feedback_for_each_graded_submission_without_hidden_test_code(graded):
    rows, out, _ = graded
    for student in ("full", "blank", "looper", *[f"mistake-{m}" for m in REQUIRED_MISTAKES]):
        assert (out / "feedback" / student / A / f"{NB.name}.html").exists(), student
    for student in ("full", "mistake-affine-logdet-sign", "mistake-bpd-no-log-nbins"):
        page = out / "feedback" / student / A / f"{NB.name}.html"
        for text in (page.read_text(), page_text(page)):
            assert "HIDDEN TESTS" not in text and "seed=11" not in text and "n_dims=784" not in text, student
    # the visible check and its message are still there for the student
    text = page_text(out / "feedback" / "mistake-affine-logdet-sign" / A / f"{NB.name}.html")
    assert "check_affine_flow(ElementwiseAffine)" in text and "Likely cause" in text
    assert not (out / "feedback" / "unreadable").exists()


def summary_of(path) -> str:
    """The feedback page's summary (its list of graded cells), as text."""
    toc = re.search(r'<div id="toc">(.*?)</div>', path.read_text(), re.S)
    assert toc, path
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", toc.group(1))))


def test_feedback_summary_names_each_exercise_and_withholds_hidden_details(graded):
    """nbgrader's summary says "Test cell" for every check; ours names the exercise (its heading
    and grade_id) and says where hidden checks ran and their details are withheld, without
    quoting them."""
    from autograder.grading.feedback import WITHHELD, WITHHELD_PASSED

    _, out, _ = graded
    source = nbformat.read(NB.source, 4)
    expected, heading, exercise, hidden = [], None, None, []
    for cell in source.cells:
        if cell.cell_type == "markdown" and re.search(r"^#+ ", cell.source, re.M):
            heading = re.findall(r"^#+ (.+)$", cell.source, re.M)[-1].strip()
        elif cells.is_solution(cell):
            exercise = cells.grade_id(cell)
        elif cells.is_test(cell):
            expected.append(f"{heading}: check {cells.grade_id(cell)} (exercise {exercise})")
            hidden += cells.hidden_lines(cell.source)
    n_hidden = sum(cells.BEGIN_HIDDEN in c.source for c in source.cells if cells.is_test(c))
    assert expected and n_hidden and hidden
    for student, note, other in (("blank", WITHHELD, WITHHELD_PASSED), ("full", WITHHELD_PASSED, WITHHELD)):
        page = out / "feedback" / student / A / f"{NB.name}.html"
        summary = summary_of(page)
        for name in expected:
            assert name in summary, (student, name, summary)
        assert "Test cell" not in summary
        assert summary.count(note) == n_hidden and other not in summary, (student, summary)
        for text in (page.read_text(), page_text(page)):
            assert "HIDDEN TESTS" not in text and not [line for line in hidden if line in text], student


def test_a_check_run_without_its_exercise_scores_0_and_its_feedback_names_the_exercise(graded):
    """An exercise whose class was renamed leaves its check cell a NameError: 0 for that check,
    and the feedback shows the error with the hint naming the exercise (registered in the grader's
    kernel too, which imports glowcourse before its shell exists)."""
    rows, out, _ = graded
    assert rows["renamer"].status == "ok" and rows["renamer"].score == FULL - 2
    text = page_text(out / "feedback" / "renamer" / A / f"{NB.name}.html")
    assert "NameError: name 'ElementwiseAffine' is not defined" in text
    assert 'Hint: `ElementwiseAffine` is defined by the exercise "1.2 An elementwise affine flow"' in text


def test_regrading_is_idempotent_and_leaves_no_stale_rows(graded, tmp_path):
    _, out, subs = graded
    only = tmp_path / "only"
    put(samples.filled(NB), only, "full")
    rows = grade(only, out, limits=Limits(cell_timeout=20))
    assert [(r.student, r.score, r.status) for r in rows] == [("full", FULL, "ok")]
    assert sorted(p.name for p in (out / "feedback").iterdir()) == ["full"]
    with open(out / "grades.csv") as fh:
        assert [r["student"] for r in csv.DictReader(fh)] == ["full"]


def test_cli_grades_an_lms_zip(tmp_path):
    archive = tmp_path / "canvas.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"smithj_123_456_{NB.name}.ipynb", nbformat.writes(samples.filled(NB)))
        z.writestr(f"doej_LATE_124_457_{NB.name} (1).ipynb", nbformat.writes(samples.blank(NB)))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(archive), "--out", str(out)],
                          cwd=course.ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "grades.csv") as fh:
        got = {r["student"]: (r["score"], r["max_score"], r["status"]) for r in csv.DictReader(fh)}
    assert got == {"smithj": ("12", "12", "ok"), "doej": ("0", "12", "ok")}
    # the Canvas user ids in the file names, kept for `export` to match the gradebook's ID column
    assert json.loads((out / "lms_ids.json").read_text()) == {"doej": ["124"], "smithj": ["123"]}


def test_selfcheck_passes():
    proc = subprocess.run([sys.executable, "-m", "autograder", "selfcheck"], cwd=course.ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "selfcheck: passed" in proc.stdout


def test_demo_prints_the_table_full_marks_and_zero(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "autograder", "demo", "--out", str(out)],
                          cwd=course.ROOT, capture_output=True, text=True, timeout=1200)
    # demo exits non-zero when any row differs from the outcome its sample was built for
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "student" in proc.stdout and "max_score" in proc.stdout  # the table is printed
    n = len(course.notebooks())
    # before grading: who the students are and what each must get; after: every row checked
    assert f"The demo class: 5 students x {n} notebooks = {5 * n} rows." in proc.stdout
    assert proc.stdout.index("unreadable  hands in") < proc.stdout.index("max_score")
    assert proc.stdout.rstrip().splitlines()[-1] == f"all {5 * n} rows matched what was expected"
    # the progress lines count the submissions graded, and say which rows needed no grading
    assert f"grading {4 * n - 1} submissions; {n + 1} other rows of {5 * n} need no grading ({n} missing, 1 unreadable)" \
        in proc.stderr
    assert f"[graded {4 * n - 1}/{4 * n - 1}]" in proc.stderr
    with open(out / "grades.csv") as fh:
        rows = list(csv.DictReader(fh))
    assignments = {nb.assignment for nb in course.notebooks()}
    full = {r["assignment"]: r for r in rows if r["student"] == "full-marks"}
    blank = {r["assignment"]: r for r in rows if r["student"] == "blank"}
    assert set(full) == set(blank) == assignments
    assert all(r["score"] == r["max_score"] and float(r["max_score"]) > 0 and r["status"] == "ok" for r in full.values())
    assert all(r["score"] == "0" and r["status"] == "ok" for r in blank.values())
    assert any(r["status"] == "missing" for r in rows) and any(r["status"].startswith("unreadable") for r in rows)
