"""Grading a class that fights back: the catalogue of mangled, broken and hostile submissions
(``autograder/catalogues/hostile.py``) through the real ``grade`` command with the sandbox, two workers,
and the checks that nothing outside a submission's own row changed."""
import hashlib
import html
import json
import re
from pathlib import Path

import nbformat
import pytest

from autograder import cells, course
from autograder.catalogues import hostile, samples
from autograder.grading.collect import collect
from autograder.grading.limits import Limits
from autograder.grading.results import read_csv
from autograder.grading.run import grade
from autograder.grading.shards import merge

pytestmark = pytest.mark.slow

CASES = {c.name: c for c in hostile.cases()}


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".ipynb_checkpoints" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


PROTECTED = [course.SOLUTIONS, course.COURSE, course.ROOT / "glowcourse"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    subs = root / "submissions"
    hostile.write_class(subs)
    gradebook = course.ROOT / "autograder" / "gradebook.db"
    before = {p: tree_digest(p) for p in PROTECTED + [subs]}
    before_gb = gradebook.read_bytes() if gradebook.exists() else None
    out = root / "out"
    # Per cell 20 s (the infinite loop hits it), per notebook 120 s, two workers.
    rows = grade(subs, out, limits=Limits(cell_timeout=20, notebook_timeout=120, workers=2))
    after = {p: tree_digest(p) for p in PROTECTED + [subs]}
    after_gb = gradebook.read_bytes() if gradebook.exists() else None
    return {(r.student, r.assignment): r for r in rows}, out, (before, after, before_gb, after_gb)


def test_the_class_folder_holds_one_submission_per_case_each_where_its_row_will_be(tmp_path):
    catalogue = hostile.write_class(tmp_path / "class")
    assert list(catalogue) == list(CASES)
    assert {name.split("_")[0] for name in CASES} == {"m", "b", "h"}  # mangled, broken, hostile
    subs, problems = collect(tmp_path / "class", tmp_path / "scratch")
    placed = {(s.student, s.assignment) for s in subs} | {(p.student, p.assignment) for p in problems}
    assert placed == {(name, case.notebook.assignment) for name, case in CASES.items()}
    assert [p.student for p in problems] == [name for name, case in CASES.items() if case.file_name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_gets_its_expected_row(graded, name):
    rows, _, _ = graded
    case = CASES[name]
    row = rows[(name, case.notebook.assignment)]
    assert hostile.unexpected([row], {name: case}) == [], (case.why, row)


def test_the_instructor_sees_one_matched_line_per_case(graded):
    rows, _, _ = graded
    lines = hostile.case_lines(list(rows.values()), CASES, width=100)
    assert [line.split()[0] for line in lines[2:]] == list(CASES) and max(map(len, lines)) <= 100
    assert all(line.endswith("yes") for line in lines[2:]), [line for line in lines if line.endswith("NO")]
    assert hostile.verdict(list(rows.values()), CASES) == ([f"all {len(CASES)} cases matched"], True)


def test_hostile_cases_never_score_above_blank(graded):
    rows, _, _ = graded
    for name, case in CASES.items():
        if name.startswith("h_") and case.expect != "full":
            assert rows[(name, case.notebook.assignment)].score == 0, name


def test_repository_gradebook_and_submissions_untouched(graded):
    _, out, (before, after, before_gb, after_gb) = graded
    assert before == after
    assert before_gb == after_gb
    for place in (course.ROOT, course.SOLUTIONS, Path("/tmp"), out):
        assert not (place / hostile.CANARY).exists(), place


def test_mangled_notebooks_say_what_was_repaired(graded):
    rows, _, _ = graded
    notes = {name: rows[(name, c.notebook.assignment)].notes for name, c in CASES.items()}
    assert "metadata lost" in notes["m_stripped_metadata"]
    assert "markdown cell" in notes["m_markdown_solution"]
    assert "duplicated" in notes["m_duplicated_test"]
    assert "deleted, restored" in notes["m_deleted_tests"]
    assert "edited, restored" in notes["h_tests_replaced"]
    assert "reordered" in notes["m_reordered_solutions"]


def test_tampering_status_names_what_was_replaced(graded):
    rows, _, _ = graded
    status = {name: rows[(name, c.notebook.assignment)].status for name, c in CASES.items()}
    assert "torch:allclose" in status["h_torch_allclose"]
    assert "numpy:allclose" in status["h_numpy_allclose"]
    assert "ast_transformers" in status["h_strip_asserts"]
    assert "showtraceback" in status["h_hide_tracebacks"]
    assert "glowcourse.checks.actnorm" in status["h_check_noop"]
    assert "torch:manual_seed" in status["h_wrap_manual_seed"]  # a student's wrapper, unlike PyTorch's own
    assert "ast_transformers" in status["h_fake_get_ipython"]
    assert status["m_torch_func"] == "ok"  # torch.func imports dynamo, which wraps manual_seed: not tampering


def test_feedback_for_graded_cases_never_shows_hidden_tests(graded):
    rows, out, _ = graded
    secrets = {}
    for nb in {c.notebook for c in CASES.values()}:
        src = nbformat.read(nb.source, 4)
        secrets[nb] = [line for cell in src.cells for line in cells.hidden_lines(cell.source) if len(line) > 12]
    checked = 0
    for name, case in CASES.items():
        page = out / "feedback" / name / case.notebook.assignment / f"{case.notebook.name}.html"
        row = rows[(name, case.notebook.assignment)]
        if row.status.startswith(("ok", "tampering", "missing exercise", "timeout")):
            assert page.exists(), name
            raw = page.read_text()
            text = raw + "\n" + html.unescape(re.sub(r"<[^>]+>", "", raw))  # the markup, and the words without it
            assert "HIDDEN TESTS" not in text
            leaked = [s for s in secrets[case.notebook] if s in text]
            assert not leaked, (name, leaked[:3])
            checked += 1
    assert checked >= 20


def test_shards_cover_the_class_and_merge_into_one_csv(tmp_path):
    nb = course.Notebook("02_actnorm", "actnorm")
    subs = tmp_path / "subs"
    students = ["ada", "ben", "cai", "dee", "eli", "fay"]
    for s in students[:2]:
        samples.write(samples.filled(nb), subs / s / nb.assignment / f"{nb.name}.ipynb")
    for s in students[2:4]:
        broken = subs / s / nb.assignment / f"{nb.name}.ipynb"
        broken.parent.mkdir(parents=True)
        broken.write_text("{ not json")
    roster = tmp_path / "roster.txt"
    roster.write_text("\n".join(students))
    shard_dirs = []
    for i in (1, 2, 3):
        d = tmp_path / f"shard-{i}"
        grade(subs, d, roster=roster, shard=(i, 3), only=[nb.assignment], limits=Limits(cell_timeout=60))
        shard_dirs.append(d)
        assert json.loads((d / "shard.json").read_text())["of"] == 3
    per_shard = [{r.student for r in read_csv(d / "grades.csv")} for d in shard_dirs]
    assert sum(len(s) for s in per_shard) == len(students) and set().union(*per_shard) == set(students)
    with pytest.raises(SystemExit, match="missing shard.*3/3"):
        merge(shard_dirs[:2], tmp_path / "merged")
    with pytest.raises(SystemExit, match="given twice"):
        merge(shard_dirs + [shard_dirs[0]], tmp_path / "merged")
    rows = {r.student: r for r in merge(shard_dirs, tmp_path / "merged")}
    assert set(rows) == set(students)
    assert [rows[s].score for s in ("ada", "ben")] == [7, 7]
    assert all(rows[s].status.startswith("unreadable") for s in ("cai", "dee"))
    assert all(rows[s].status == "missing" for s in ("eli", "fay"))
    for s in ("ada", "ben"):
        assert (tmp_path / "merged" / "feedback" / s / nb.assignment / f"{nb.name}.html").exists()


def test_without_the_sandbox_the_probes_still_catch_tampering(tmp_path):
    nb = hostile.NB2
    subs = tmp_path / "subs"
    samples.write(samples.filled(nb), subs / "honest" / nb.assignment / f"{nb.name}.ipynb")
    bad = subs / "cheat" / nb.assignment / f"{nb.name}.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(hostile._bytes(hostile._insert_before_first_test(
        hostile._blank(nb), "import torch\ntorch.allclose = lambda *a, **k: True")))
    rows = {r.student: r for r in grade(subs, tmp_path / "out", limits=Limits(sandbox=False, cell_timeout=60))}
    assert (rows["honest"].score, rows["honest"].status) == (7, "ok")
    assert rows["cheat"].score == 0 and rows["cheat"].status.startswith("tampering detected: torch:allclose")
