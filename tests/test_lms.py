"""``export``: grades.csv filled into a Canvas or Moodle gradebook export, or a plain wide CSV.

The samples in tests/data/lms/ are short gradebook exports as Canvas (Grades > Export) and Moodle
(Export > Plain text file) write them, with a grades.csv of each class graded from that LMS's zip.
"""
import csv
import io
from pathlib import Path

import pytest

from autograder.__main__ import main
from autograder.grading.lms import export, graded, read_template, write
from autograder.grading.results import Row, read_csv

DATA = Path(__file__).parent / "data" / "lms"
CANVAS, MOODLE = DATA / "canvas", DATA / "moodle"
A1, A2 = "01_change_of_variables", "02_actnorm"
C1, C2 = "Change of variables (40101)", "ActNorm (40102)"
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def table(path):
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))


def by_student(rows, key):
    header = rows[0]
    return {r[header.index(key)]: dict(zip(header, r)) for r in rows[1:]}


def canvas_export(tmp_path, **options):
    result = export(read_csv(CANVAS / "grades.csv"), read_template(CANVAS / "gradebook_export.csv"), **options)
    return result, table(write(result, tmp_path / "canvas.csv"))


def test_canvas_export_is_the_template_with_the_scores_filled_in(tmp_path):
    result, out = canvas_export(tmp_path)
    template = table(CANVAS / "gradebook_export.csv")
    assert result.lms == "canvas" and out[0] == template[0] and out[0][:5] == CANVAS_FIXED
    assert out[1][0].strip() == "Points Possible" and out[1] == template[1]
    assert len(out) == len(template)
    assignment_columns = {out[0].index(C1), out[0].index(C2)}
    for got, was in zip(out[2:], template[2:]):  # ids, names, sections and other columns exactly as exported
        assert [v for j, v in enumerate(got) if j not in assignment_columns] == \
               [v for j, v in enumerate(was) if j not in assignment_columns]
    rows = by_student(out, "Student")
    assert rows["Doe, John"]["SIS User ID"] == "00456" and rows["Lee, Ann"]["SIS User ID"] == "01011"  # leading zeros
    assert (rows["Smith, Jane"][C1], rows["Smith, Jane"][C2]) == ("12", "7")  # by the name in the Canvas zip
    assert rows["Núñez, José"][C1] == "9.5"  # an accented name, as collect makes it folder-safe
    assert rows["Doe, John"][C2] == "5"  # by SIS User ID; a cell timed out, the rest counts
    for name, row in rows.items():  # what Canvas reads as a score: a number or blank (no change)
        for column in (C1, C2):
            assert row[column] == "" or float(row[column]) >= 0, (name, column)


def test_ungraded_rows_are_left_blank_by_default_or_zero_and_always_listed(tmp_path):
    result, out = canvas_export(tmp_path)
    rows = by_student(out, "Student")
    assert rows["Doe, John"][C1] == "" and rows["Núñez, José"][C2] == ""  # missing; unreadable
    assert result.ungraded == ["00456 01_change_of_variables: missing -> blank",
                               "nezjos 02_actnorm: unreadable: invalid JSON (line 3) -> blank"]
    result, out = canvas_export(tmp_path, ungraded="zero")
    rows = by_student(out, "Student")
    assert rows["Doe, John"][C1] == "0" and rows["Núñez, José"][C2] == "0"
    assert len(result.ungraded) == 2 and "00456 01_change_of_variables: missing -> 0" in result.summary()


def test_unknown_students_unplaced_files_and_students_without_a_row_are_reported(tmp_path):
    result, out = canvas_export(tmp_path)
    assert result.unknown == ["ghost"] and not result.complete
    assert "ghost" not in "".join(",".join(r) for r in out)
    assert [s.split(" (")[0] for s in result.no_row] == ["Lee, Ann", "Student, Test"]
    assert result.unplaced == ["smithjane: wrong file name: smithjane_1001_5555_notes.ipynb"]
    summary = result.summary()
    for line in ("ghost", "Lee, Ann (ID 1004, SIS User ID 01011, SIS Login ID alee): no row", "notes.ipynb"):
        assert line in summary


def test_points_possible_differing_from_the_course_warns_or_rescales(tmp_path):
    result, out = canvas_export(tmp_path)
    assert any("ActNorm (40102)" in w and "10" in w and "7" in w for w in result.warnings)
    result, out = canvas_export(tmp_path, scale=True)
    rows = by_student(out, "Student")
    assert rows["Smith, Jane"][C2] == "10" and rows["Doe, John"][C2] == "7.14"  # 7/7 and 5/7 of 10 points
    assert rows["Smith, Jane"][C1] == "12" and not result.warnings


def test_map_names_a_column_by_its_name_or_adds_one_with_its_points(tmp_path):
    rows = read_csv(CANVAS / "grades.csv")
    result = export(rows, read_template(CANVAS / "gradebook_export.csv"), {A1: "Change of variables"})
    assert result.columns[A1] == C1  # the name without Canvas's assignment id
    result = export(rows, read_template(CANVAS / "gradebook_export.csv"), {A2: "Notebook 2: ActNorm"})
    out = table(write(result, tmp_path / "new.csv"))
    assert out[0][-1] == "Notebook 2: ActNorm" and out[1][-1] == "7"  # Canvas creates it, 7 points
    assert by_student(out, "Student")["Smith, Jane"]["Notebook 2: ActNorm"] == "7"
    assert by_student(out, "Student")["Smith, Jane"][C2] == ""
    assert result.new_columns == ["'Notebook 2: ActNorm' for 02_actnorm"]
    with pytest.raises(SystemExit, match="07_likelihood"):
        export(rows, read_template(CANVAS / "gradebook_export.csv"), {"07_likelihood": "Likelihood"})


def test_moodle_export_keeps_ids_and_the_export_time_and_leaves_ungraded_cells(tmp_path):
    result = export(read_csv(MOODLE / "grades.csv"), read_template(MOODLE / "grades_export.csv"))
    out = table(write(result, tmp_path / "moodle.csv"))
    template = table(MOODLE / "grades_export.csv")
    assert result.lms == "moodle" and out[0] == template[0] and len(out) == len(template)
    rows = by_student(out, "Email address")
    g1, g2 = "Assignment: Change of variables (Real)", "Assignment: ActNorm (Real)"
    assert [r["ID number"] for r in rows.values()] == ["0042", "0043", "0044", "0045"]
    assert all(r["Last downloaded from this course"] == "1764460800" for r in rows.values())
    jane, john, jose = (rows[f"{n}@example.edu"] for n in ("jane.smith", "john.doe", "jose.nunez"))
    assert (jane[g1], jane[g2]) == ("12", "6")  # by the name of the Moodle zip's folder
    assert (jose[g1], jose[g2]) == ("9.5", "2")  # by ID number; the kernel died: a grade of 0 + what ran
    assert (john[g1], john[g2]) == ("-", "5.00")  # missing, wrong file name: Moodle's cells as exported
    assert result.unknown == ["ghost"] and result.no_row == ["Ann Lee (ID number 0045, Email address ann.lee@example.edu): no row"]


def test_plain_export_is_one_row_per_student_and_one_column_per_assignment(tmp_path):
    result = export(read_csv(CANVAS / "grades.csv"))
    out = table(write(result, tmp_path / "plain.csv"))
    assert out[0] == ["student", A1, A2]
    assert by_student(out, "student") == {
        "00456": {"student": "00456", A1: "", A2: "5"},
        "ghost": {"student": "ghost", A1: "11", A2: ""},
        "nezjos": {"student": "nezjos", A1: "9.5", A2: ""},
        "smithjane": {"student": "smithjane", A1: "12", A2: "7"},
    }
    assert result.complete and result.unplaced


def test_a_name_two_gradebook_students_share_is_reported_not_guessed(tmp_path):
    text = (CANVAS / "gradebook_export.csv").read_text(encoding="utf-8")
    text += '"Smith, Jane",1005,00999,jsmith2,Glow 2026,,,,,,,\n'
    (tmp_path / "export.csv").write_text(text, encoding="utf-8")
    result = export(read_csv(CANVAS / "grades.csv"), read_template(tmp_path / "export.csv"))
    assert any(a.startswith("smithjane:") and "1001" in a and "1005" in a for a in result.ambiguous)
    out = by_student(table(write(result, tmp_path / "out.csv")), "ID")
    assert out["1001"][C1] == out["1005"][C1] == ""


def test_the_canvas_user_id_from_the_zip_tells_two_students_of_one_name_apart(tmp_path):
    """A Canvas zip names each file with the student's Canvas user id; ``grade`` keeps it
    (``lms_ids.json``) and ``export`` matches it to the gradebook's ID column before any name."""
    text = (CANVAS / "gradebook_export.csv").read_text(encoding="utf-8")
    text += '"Smith, Jane",1005,00999,jsmith2,Glow 2026,,,,,,,\n'
    (tmp_path / "export.csv").write_text(text, encoding="utf-8")
    result = export(read_csv(CANVAS / "grades.csv"), read_template(tmp_path / "export.csv"),
                    lms_ids={"smithjane": ["1005"]})
    assert not any(a.startswith("smithjane:") for a in result.ambiguous)
    out = by_student(table(write(result, tmp_path / "out.csv")), "ID")
    jane = [r for r in read_csv(CANVAS / "grades.csv") if r.student == "smithjane" and r.assignment == A1][0]
    assert out["1005"][C1] == f"{jane.score:g}" and out["1001"][C1] == ""


def test_grade_and_merge_keep_the_lms_ids_the_files_carried(tmp_path):
    from autograder.grading.results import LMS_IDS, read_lms_ids, write_lms_ids
    from autograder.grading.shards import SHARD_FILE, merge

    for i, ids in ((1, {"smithjane": ["1001"]}), (2, {"doejohn": ["1002"]})):
        shard = tmp_path / f"shard-{i}"
        shard.mkdir()
        (shard / "grades.csv").write_text("student,assignment,score,max_score,status,notes\n")
        (shard / SHARD_FILE).write_text(f'{{"shard": {i}, "of": 2, "students": []}}')
        write_lms_ids(ids, shard / LMS_IDS)
    merge([tmp_path / "shard-1", tmp_path / "shard-2"], tmp_path / "all")
    assert read_lms_ids(tmp_path / "all" / LMS_IDS) == {"doejohn": ["1002"], "smithjane": ["1001"]}


def test_separator_byte_order_mark_and_line_endings_are_kept(tmp_path):
    text = (MOODLE / "grades_export.csv").read_text(encoding="utf-8").replace(",", ";").replace("\n", "\r\n")
    (tmp_path / "export.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = export(read_csv(MOODLE / "grades.csv"), read_template(tmp_path / "export.csv"))
    raw = write(result, tmp_path / "out.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\r\n") == 5 and raw.count(b"\n") == 5
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][0] == "First name" and rows[1][2:3] == ["0042"] and rows[1][6] == "12"


def test_a_file_that_is_no_gradebook_export_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("name,score\nann,3\n")
    with pytest.raises(SystemExit, match="--lms"):
        read_template(tmp_path / "x.csv")


@pytest.mark.parametrize("status, is_graded", [
    ("ok", True), ("timeout", True), ("timeout (notebook over 300 s)", True), ("kernel died", True),
    ("missing exercise: affine_flow", True), ("tampering detected: torch:allclose was replaced", True),
    ("missing", False), ("missing notebook: actnorm", False), ("unreadable: invalid JSON (line 3)", False),
    ("wrong file name: x.ipynb", False), ("error: grading process failed (OSError)", False),
    ("kernel failed to start", False),
])
def test_which_statuses_are_a_grade_of_the_students_work(status, is_graded):
    assert graded(Row("s", A1, 0.0, 12.0, status)) is is_graded


def test_the_command_writes_the_gradebook_and_fails_when_a_grade_is_left_behind(tmp_path, capsys):
    out = tmp_path / "gradebook.csv"
    code = main(["export", "--from", str(CANVAS), "--template", str(CANVAS / "gradebook_export.csv"),
                 "--map", f"{A2}=ActNorm", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1 and "ghost" in printed and "NOT exported" in printed
    assert by_student(table(out), "Student")["Smith, Jane"][C2] == "7"
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "grades.csv").write_text("student,assignment,score,max_score,status,notes\n"
                                                   "00123,01_change_of_variables,3,12,ok,\n")
    assert main(["export", "--from", str(tmp_path / "class"), "--template", str(CANVAS / "gradebook_export.csv")]) == 0
    written = tmp_path / "class" / "gradebook-canvas.csv"
    assert by_student(table(written), "SIS User ID")["00123"][C1] == "3"
    assert main(["export", "--from", str(tmp_path / "class"), "--lms", "moodle"]) == 2  # no template to fill
