"""Finding submissions in folders and LMS zips (no grading here)."""
import zipfile

import pytest

from autograder.grading.collect import collect, read_roster, student_id

A, NB = "01_change_of_variables", "change_of_variables"


def touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def found(subs):
    return sorted((s.student, s.assignment, s.notebook) for s in subs)


def test_nbgrader_layout(tmp_path):
    touch(tmp_path / "in" / "alice" / A / f"{NB}.ipynb")
    touch(tmp_path / "in" / "bob" / A / "my_notebook.ipynb")
    touch(tmp_path / "in" / "bob" / A / ".ipynb_checkpoints" / f"{NB}-checkpoint.ipynb")
    subs, problems = collect(tmp_path / "in", tmp_path / "scratch")
    assert found(subs) == [("alice", A, NB)]
    assert [(p.student, p.assignment, p.status) for p in problems] == [("bob", A, "wrong file name: my_notebook.ipynb")]


@pytest.mark.parametrize(
    "name, student, lms_id",
    [
        (f"smithjane_12345_678901_{NB}.ipynb", "smithjane", "12345"),  # Canvas: its user id kept
        (f"smithjane_LATE_12345_678901_{NB}.ipynb", "smithjane", "12345"),  # Canvas, late
        (f"Jane Smith_1234_assignsubmission_file_/{NB}.ipynb", "Jane-Smith", None),  # Moodle folder per student
        (f"jane.smith/{NB} (1).ipynb", "jane.smith", None),  # a browser's second download in a student folder
    ],
)
def test_lms_zip_names(tmp_path, name, student, lms_id):
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(name, "{}")
        z.writestr("readme.txt", "not a notebook")
        z.writestr("../escape.ipynb", "{}")  # a path outside the extraction folder is ignored
    subs, problems = collect(archive, tmp_path / "scratch")
    assert found(subs) == [(student, A, NB)]
    assert [s.lms_id for s in subs] == [lms_id]
    assert problems == []
    assert not (tmp_path / "escape.ipynb").exists()


def test_zip_inside_zip_and_unknown_names(tmp_path):
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr(f"carol/{A}/{NB}.ipynb", "{}")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.write(inner, "batch1.zip")
        z.writestr("dave_untitled.ipynb", "{}")
    subs, problems = collect(outer, tmp_path / "scratch")
    assert found(subs) == [("carol", A, NB)]
    assert [(p.student, p.status) for p in problems] == [("dave", "wrong file name: dave_untitled.ipynb")]


def test_resubmission_keeps_the_newest(tmp_path):
    old = touch(tmp_path / "in" / f"erin_1_{NB}.ipynb", "old")
    new = touch(tmp_path / "in" / f"erin_2_{NB} (1).ipynb", "new")
    import os

    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    subs, _ = collect(tmp_path / "in", tmp_path / "scratch")
    assert len(subs) == 1 and subs[0].path == new


def test_not_a_zip_or_missing(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        collect(tmp_path / "nope", tmp_path / "scratch")
    bad = touch(tmp_path / "x.zip", "garbage")
    with pytest.raises(SystemExit, match="neither a folder nor a zip"):
        collect(bad, tmp_path / "scratch")


def test_student_ids_and_roster(tmp_path):
    assert student_id("  Jane  Smith ") == "Jane-Smith"
    assert student_id("../../etc") == "etc"
    roster = touch(tmp_path / "roster.csv", "id,name\nalice,Alice A\n# a comment\nbob,Bob B\n")
    assert read_roster(roster) == ["alice", "bob"]
