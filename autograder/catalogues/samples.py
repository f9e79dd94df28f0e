"""Sample submissions built from the course itself: filled, blank, and with typical mistakes.

A *filled* notebook is the student release with every solution cell replaced by the
solution's code (what a student who got everything right hands in). A *mistake* patches one
solution cell of a filled notebook, as catalogued in ``mistakes/<assignment>.toml`` beside this
module; a *variant* (a correct answer written differently) does the same, from ``variants/``.
Building samples from ``course/`` and ``solutions/`` means they never drift from the notebooks.
"""
from __future__ import annotations

import copy
import shutil
import tomllib
from pathlib import Path

import nbformat

from .. import cells, course

HERE = Path(__file__).resolve().parent
MISTAKES = HERE / "mistakes"
VARIANTS = HERE / "variants"


def blank(nb: course.Notebook):
    """The release notebook, untouched (what a student who did nothing hands in)."""
    return nbformat.read(nb.release, 4)


def filled(nb: course.Notebook):
    """The release notebook with every solution cell answered correctly."""
    notebook = blank(nb)
    answers = cells.solutions(nbformat.read(nb.source, 4))
    for cell in notebook.cells:
        if cells.is_solution(cell) and cells.grade_id(cell) in answers:
            cell.source = answers[cells.grade_id(cell)]
    return notebook


def mistakes(assignment: str) -> list[dict]:
    """The catalogued mistakes of an assignment (``mistakes/<assignment>.toml``)."""
    return _catalogue(MISTAKES / f"{assignment}.toml", "mistake")


def variants(assignment: str) -> list[dict]:
    """The catalogued correct variants of an assignment (``variants/<assignment>.toml``)."""
    return _catalogue(VARIANTS / f"{assignment}.toml", "variant")


def _catalogue(path: Path, key: str) -> list[dict]:
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        return tomllib.load(fh).get(key, [])


def with_mistake(notebook, mistake: dict):
    """A copy of ``notebook`` with ``mistake`` applied to the cell it names."""
    notebook = copy.deepcopy(notebook)
    named = [c for c in notebook.cells if cells.grade_id(c) == mistake["cell"]]
    if len(named) != 1:
        raise ValueError(f"mistake {mistake['name']}: no single cell with grade_id {mistake['cell']!r}")
    cell = named[0]
    if "source" in mistake:
        cell.source = mistake["source"]
    for old, new in mistake.get("replace", []):
        if cell.source.count(old) != 1:
            raise ValueError(f"mistake {mistake['name']}: {old!r} occurs {cell.source.count(old)} times in cell {mistake['cell']}, expected once")
        cell.source = cell.source.replace(old, new)
    for old, new in mistake.get("replace_all", []):  # the same slip everywhere it can happen
        if old not in cell.source:
            raise ValueError(f"mistake {mistake['name']}: {old!r} does not occur in cell {mistake['cell']}")
        cell.source = cell.source.replace(old, new)
    return notebook


def write(notebook, dest: Path) -> Path:
    """Write ``notebook`` to ``dest``, folders included; return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, dest)
    return dest


def demo_submissions(dest: Path) -> tuple[Path, dict[tuple[str, str], str]]:
    """Write a demo class into ``dest/submissions`` and return its roster file and the expected
    outcome of each (student, assignment): ``full``, ``zero``, ``partial`` or a status.

    ``full-marks`` and ``blank`` hand in every notebook answered / untouched; ``typical`` makes
    the catalogued ``demo = true`` mistakes of every notebook; ``unreadable`` hands in a file cut
    short for the first notebook (the rest answered); ``missing`` is on the roster only.
    """
    subs = dest / "submissions"
    shutil.rmtree(subs, ignore_errors=True)  # the demo's own folder: a fresh class every run
    expected: dict[tuple[str, str], str] = {}
    for i, nb in enumerate(course.notebooks()):
        a, name = nb.assignment, f"{nb.name}.ipynb"
        write(filled(nb), subs / "full-marks" / a / name)
        write(blank(nb), subs / "blank" / a / name)
        typical = filled(nb)
        chosen = [m for m in mistakes(a) if m.get("demo")]
        for m in chosen:
            typical = with_mistake(typical, m)
        write(typical, subs / "typical" / a / name)
        expected.update({("full-marks", a): "full", ("blank", a): "zero", ("missing", a): "missing",
                         ("typical", a): "partial" if chosen else "full"})
        if i == 0:
            broken = subs / "unreadable" / a / name
            broken.parent.mkdir(parents=True, exist_ok=True)
            broken.write_text(nbformat.writes(filled(nb))[:5000])
            expected[("unreadable", a)] = "unreadable"
        else:
            write(filled(nb), subs / "unreadable" / a / name)
            expected[("unreadable", a)] = "full"
    roster = dest / "roster.txt"
    roster.write_text("blank\nfull-marks\nmissing\ntypical\nunreadable\n")
    return roster, expected


def unexpected(rows, expected: dict[tuple[str, str], str]) -> list[str]:
    """The demo's rows whose outcome differs from what ``demo_submissions`` built them for."""
    wrong = []
    for r in rows:
        want = expected.get((r.student, r.assignment), "missing")
        if r.outcome() != want:
            wrong.append(f"{r.student} {r.assignment}: {r.score:g}/{r.max_score:g} {r.status}, expected {want}")
    return wrong


# What each demo student hands in and why it gets what it gets: said before the demo grades.
DEMO_WHY = {
    "full-marks": "hands in every notebook answered as the solutions do.",
    "blank": "hands in every notebook as released, nothing filled in: graded (status ok), no check passes.",
    "typical": "hands in every notebook with the mistakes the catalogue marks as typical ({mistakes}); "
               "each fails the checks of its own exercise, the other exercises still score.",
    "unreadable": "hands in {first} cut off mid-file (invalid JSON), the other notebooks answered: the broken "
                  "file gets a row saying why and is not run; it costs only its own notebook, so the others "
                  "keep full marks.",
    "missing": "is on the roster but hands in nothing: the roster gives every student a row for every "
               "notebook, so nobody drops out of grades.csv unnoticed.",
}

# The outcomes of rows made without running anything (the progress lines do not count them).
NOT_GRADED = ("missing", "unreadable", "wrong file name", "no student in file name")

_OUTCOME_WORDS = {"full": "full marks", "zero": "0", "partial": "partial marks", "missing": "missing (0)",
                  "unreadable": "unreadable (0, not run)"}


def _must_get(outcomes: dict[str, str]) -> str:
    """A student's expected outcomes (assignment -> outcome) in words: ``full marks on all 7``,
    ``unreadable (0, not run) on 01_x; full marks on the other 6``."""
    groups: dict[str, list[str]] = {}
    for a, want in sorted(outcomes.items()):
        groups.setdefault(want, []).append(a)
    words = {k: _OUTCOME_WORDS.get(k, k) for k in groups}
    largest = max(groups, key=lambda k: len(groups[k]))
    if len(groups) == 1:
        return f"{words[largest]} on all {len(outcomes)}"
    parts = [f"{words[k]} on {', '.join(v)}" for k, v in groups.items() if k != largest]
    return "; ".join(parts + [f"{words[largest]} on the other {len(groups[largest])}"])


def describe_demo(expected: dict[tuple[str, str], str], width: int = 100) -> list[str]:
    """What the demo class is, said before it is graded: each student, what they hand in, what
    they must get and why (from what ``demo_submissions`` built), wrapped to ``width``."""
    import textwrap

    students = sorted({s for s, _ in expected})
    assignments = sorted({a for _, a in expected})
    typical = [m for a in assignments for m in mistakes(a) if m.get("demo")]
    example = f"{typical[0]['name']}: {typical[0].get('about', '')}" if typical else ""
    facts = {"mistakes": f"{len(typical)} in all, e.g. {example}" if typical else "none",
             "first": assignments[0] if assignments else "the first notebook"}
    lines = [f"The demo class: {len(students)} students x {len(assignments)} notebooks = {len(expected)} rows."]
    pad = max(len(s) for s in students) + 4
    for s in students:
        why = DEMO_WHY.get(s, "").format(**facts)
        must = _must_get({a: w for (st, a), w in expected.items() if st == s})
        lines += textwrap.wrap(f"{why} Must get: {must}.", width, initial_indent=f"  {s}".ljust(pad),
                               subsequent_indent=" " * pad, break_long_words=False, break_on_hyphens=False)
    return lines


def demo_verdict(rows, expected: dict[tuple[str, str], str], width: int = 100) -> tuple[list[str], bool]:
    """The lines that end the demo, and whether every row is what its sample was built for: how
    many rows were graded and how many needed no grading (the progress lines count only the
    former), then ``all N rows matched what was expected`` or each row that did not."""
    import textwrap

    ungraded = [r.outcome() for r in rows if r.outcome() in NOT_GRADED]
    kinds = ", ".join(f"{ungraded.count(k)} {k}" for k in NOT_GRADED if k in ungraded)
    lines = textwrap.wrap(f"{len(rows)} rows: {len(rows) - len(ungraded)} graded (the [graded n/N] lines counted "
                          f"these), {len(ungraded)} needed no grading ({kinds or 'none'}).", width)
    wrong = unexpected(rows, expected)
    have = {(r.student, r.assignment) for r in rows}
    wrong += [f"{s} {a}: no row, expected {w}" for (s, a), w in sorted(expected.items()) if (s, a) not in have]
    if not wrong:
        return lines + [f"all {len(rows)} rows matched what was expected"], True
    lines.append(f"{len(wrong)} of {len(expected)} rows did not match what was expected:")
    for w in wrong:
        lines += textwrap.wrap(w, width, initial_indent="  ", subsequent_indent="    ",
                               break_long_words=False, break_on_hyphens=False)
    return lines, False
