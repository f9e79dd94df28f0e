"""What an instructor reads on the command line, as pure functions: no grading, no kernel.

The hostile run's line per case, the demo's account of its class and its verdict, the report's
table and file, the grading progress and its estimate of the time left: each fits an 80-100
column terminal, cuts no word, and says whether everything came out as expected.
"""
import re

import pytest

from autograder import course
from autograder.catalogues import hostile, report, samples
from autograder.grading.results import Row, elide, text_table
from autograder.grading.run import estimate_left, grading_header, progress_line, tally

LONG_STATUS = ("tampering detected: torch:allclose was replaced; numpy:allclose was replaced; "
               "glowcourse.checks.change_of_variables:check_affine_flow was replaced")


def words_kept(shown: str, full: str) -> bool:
    """Whether ``shown`` is ``full`` with whole words dropped from its end (and "..." added)."""
    shown = shown.removesuffix("...").split()
    return shown == full.split()[: len(shown)]


# --- fitting text to a terminal ------------------------------------------------------------------

@pytest.mark.parametrize("width", [14, 24, 40, 200])
def test_elide_cuts_after_a_whole_word(width):
    shown = elide(LONG_STATUS, width)
    assert len(shown) <= width and words_kept(shown, LONG_STATUS)
    assert shown == LONG_STATUS if width >= len(LONG_STATUS) else shown.endswith("...")
    assert elide("tampering detected: torch:allclose", 30) == "tampering detected:..."  # not "torch:allcl"


def test_elide_cuts_a_word_only_when_it_alone_is_wider_than_the_column():
    assert elide("supercalifragilistic", 10) == "superca..."


def test_a_wrapped_table_fits_the_width_and_keeps_every_word_in_its_column():
    rows = [["affine_flow", "5", LONG_STATUS], ["bits_per_dim", "12", "-"]]
    lines = text_table(["exercise", "n", "why"], rows, width=80).splitlines()
    assert max(map(len, lines)) <= 80
    start = lines[0].index("why")
    assert " ".join(line[start:].strip() for line in lines[2:-1]).split() == LONG_STATUS.split()
    assert lines[-1].split() == ["bits_per_dim", "12", "-"]
    # a word wider than the whole table is the one thing broken, so that the lines still fit
    assert max(map(len, text_table(["exercise", "n", "why"], rows, width=50).splitlines())) <= 50


# --- hostile: one line per case ------------------------------------------------------------------

CATALOGUE = {c.name: c for c in hostile.cases()}


def hostile_rows(wrong: str | None = None) -> list[Row]:
    """A class where every case gets what it must, but ``wrong``; plus the ``missing`` filler rows
    that every student gets for the assignments they did not hand in."""
    rows = []
    for name, case in CATALOGUE.items():
        score = {"full": 12.0, "zero": 0.0, "partial": 5.0, "at most blank": 0.0}[case.expect]
        status = case.status + LONG_STATUS[LONG_STATUS.index(" was"):] if case.status.startswith("tampering") else case.status
        if name == wrong:
            score, status = (0.0, "kernel died") if case.expect == "full" else (12.0, "ok")
        rows.append(Row(name, case.notebook.assignment, score, 12.0, status))
        rows += [Row(name, a, 0.0, 7.0, "missing") for a in ("01_change_of_variables", "02_actnorm")
                 if a != case.notebook.assignment]
    return rows


@pytest.mark.parametrize("width", [80, 100])
def test_hostile_prints_one_line_per_case_with_what_it_must_get_and_got(width):
    rows = hostile_rows()
    lines = hostile.case_lines(rows, CATALOGUE, width)
    assert len(lines) == 2 + len(CATALOGUE) < len(rows)  # header, rule, the cases; no filler rows
    assert lines[0].split() == ["case", "must", "get", "got", "matched"]
    assert [line.split()[0] for line in lines[2:]] == list(CATALOGUE)
    assert all(line.endswith("yes") for line in lines[2:]) and max(map(len, lines)) <= width
    got_at, matched_at = lines[0].index("got"), lines[0].index("matched")
    own = {r.student: r for r in rows if r.assignment == CATALOGUE[r.student].notebook.assignment}
    for line in lines[2:]:
        assert words_kept(line[got_at:matched_at].strip(), hostile.got(own[line.split()[0]])), line
    assert hostile.verdict(rows, CATALOGUE, width) == ([f"all {len(CATALOGUE)} cases matched"], True)


def test_hostile_says_which_case_did_not_match():
    rows = hostile_rows(wrong="m_colab")
    lines = hostile.case_lines(rows, CATALOGUE)
    assert [line.split()[-1] for line in lines[2:]].count("NO") == 1
    assert next(line for line in lines if line.startswith("m_colab ")).endswith("NO")
    verdict, ok = hostile.verdict(rows, CATALOGUE)
    assert not ok and verdict[-1] == f"1 of {len(CATALOGUE)} cases did not match: m_colab"
    assert any("m_colab: got 0/12 'kernel died', expected full" in line for line in verdict)
    verdict, ok = hostile.verdict([r for r in rows if r.student != "b_os_exit"], CATALOGUE)
    assert not ok and "b_os_exit: no row" in "\n".join(verdict)


# --- demo: who the students are, and whether each row came out as built ---------------------------

@pytest.fixture(scope="module")
def demo_class(tmp_path_factory):
    return samples.demo_submissions(tmp_path_factory.mktemp("demo"))[1]


def demo_rows(expected):
    status = {"full": "ok", "zero": "ok", "partial": "ok", "missing": "missing", "unreadable": "unreadable: invalid JSON"}
    score = {"full": 7.0, "partial": 3.0}
    return [Row(s, a, score.get(want, 0.0), 7.0, status[want]) for (s, a), want in sorted(expected.items())]


def test_demo_says_who_each_student_is_and_what_they_must_get(demo_class):
    n = len(course.notebooks())
    lines = samples.describe_demo(demo_class, width=90)
    assert max(map(len, lines)) <= 90
    text = " ".join(" ".join(lines).split())
    assert f"5 students x {n} notebooks = {5 * n} rows" in text
    for student in ("full-marks", "blank", "typical", "unreadable", "missing"):
        assert sum(line.startswith(f"  {student} ") for line in lines) == 1, student
    first = course.notebooks()[0].assignment
    assert f"Must get: unreadable (0, not run) on {first}; full marks on the other {n - 1}." in text
    assert "costs only its own notebook" in text
    assert f"Must get: full marks on all {n}." in text and f"Must get: missing (0) on all {n}." in text
    assert f"Must get: partial marks on all {n}." in text


def test_demo_verdict_counts_the_rows_it_graded_and_confirms_each(demo_class):
    n = len(course.notebooks())
    lines, ok = samples.demo_verdict(demo_rows(demo_class), demo_class)
    assert ok and lines[-1] == f"all {5 * n} rows matched what was expected"
    text = " ".join(" ".join(lines).split())
    assert f"{5 * n} rows: {5 * n - n - 1} graded" in text and f"{n + 1} needed no grading ({n} missing, 1 unreadable)" in text


def test_demo_verdict_lists_the_rows_that_did_not_match(demo_class):
    rows = demo_rows(demo_class)
    first = course.notebooks()[0].assignment
    rows = [Row(r.student, r.assignment, 0.0, 7.0, "kernel died") if (r.student, r.assignment) == ("full-marks", first)
            else r for r in rows if (r.student, r.assignment) != ("blank", first)]
    lines, ok = samples.demo_verdict(rows, demo_class)
    assert not ok and f"2 of {len(demo_class)} rows did not match what was expected:" in lines
    assert f"  full-marks {first}: 0/7 kernel died, expected full" in lines
    assert f"  blank {first}: no row, expected zero" in lines


# --- grading progress -----------------------------------------------------------------------------

def test_one_timeout_does_not_blow_up_the_time_left():
    times = [10.0] * 9 + [1000.0]  # one submission ran into its timeout
    assert estimate_left(times, 10, workers=1) == 100.0  # the mean would say about 1090 s
    assert estimate_left(times, 10, workers=2) == 50.0
    assert estimate_left(times, 3, workers=2) == 20.0  # two rounds of two workers
    assert estimate_left([], 5, 2) == 0.0 and estimate_left(times, 0, 2) == 0.0


def test_progress_counts_submissions_graded_and_says_which_rows_need_none():
    rows = [Row("a", "x", 0, 7, "missing"), Row("b", "x", 0, 7, "missing"), Row("c", "x", 0, 7, "unreadable: empty file")]
    assert tally(rows) == "2 missing, 1 unreadable"
    assert grading_header(5, rows) == "grading 5 submissions; 3 other rows of 8 need no grading (2 missing, 1 unreadable)"
    assert grading_header(1, []) == "grading 1 submission"
    line = progress_line(3, 5, Row("ada", "01_x", 12.0, 12.0, "ok"), 4.06, 40.2)
    assert line == "[graded 3/5] ada 01_x: 12/12 ok (4.1 s; about 40 s left)"


# --- report: a table on the terminal, the whole text in a file -------------------------------------

def exercises():
    message = "CheckFailed: ActNorm.forward: logdet wrong\nLikely cause: " + " ".join(["the log-det is too small"] * 12)
    ex = report.Exercise("02_actnorm", "actnorm", "actnorm")
    ex.mistakes = [("logdet-without-hw", True, message, True), ("sneaky", False, None, False)]
    ex.variants = [("biased-std", True, ""), ("odd-but-right", False, "actnorm_check")]
    return [ex, report.Exercise("02_actnorm", "actnorm", "other", [("m", True, "CheckFailed: x", False)], [])]


@pytest.mark.parametrize("width", [80, 100])
def test_report_table_fits_and_names_what_was_missed_or_refused(width):
    text = report.summary_table(exercises(), width=width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width
    counts = [line.split() for line in lines if line.startswith("02 ")]
    assert counts == [["02", "actnorm", "2", "1", "1", "1", "2", "1"], ["02", "other", "1", "1", "1", "0", "0", "0"]]
    trouble = " ".join(text.split("missed or refused:")[1].split())
    assert trouble == "02 actnorm: sneaky (hidden missed), sneaky (visible missed), odd-but-right (refused)"
    t = report.totals(exercises())
    assert t == {"mistakes": 3, "hidden": 2, "visible": 2, "named": 1, "variants": 2, "accepted": 1}


def test_report_file_keeps_every_message_whole():
    text = report.full_report(exercises(), width=80)
    assert max(len(line) for line in text.splitlines() if line.startswith(" " * 8)) <= 80  # the messages
    assert "actnorm: mistakes 2 (hidden caught 1, visible caught 1, cause named 1); variants 2 (accepted 1)" in text
    block = text[text.index("CheckFailed: ActNorm"):text.index("- sneaky")]
    assert re.sub(r"\s+", " ", block).strip() == "CheckFailed: ActNorm.forward: logdet wrong Likely cause: " + " ".join(
        ["the log-det is too small"] * 12)
    assert "- sneaky: hidden MISSED; cause -; visible: MISSED" in text and "+ odd-but-right: REFUSED by actnorm_check" in text
    assert text.rstrip().endswith("variants 2: accepted 1")
