"""nbgrader's cell conventions, in one place: which cell is what, and the markers inside cells.

nbgrader marks the cells of a source notebook in their metadata (``cell.metadata.nbgrader``):

- a **solution** cell is what the student writes (``solution: true``); in ``solutions/`` its
  answer sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
- a **test** cell is graded by running it (``grade: true``, not a solution): the course's check
  cells; the part between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` is removed
  from the release and put back by ``nbgrader autograde``;
- a **locked** cell is given code the student must not change (nbgrader restores it).

The predicates are nbgrader's own (``nbgrader.utils``), applied to a view of the cell that also
accepts a plain ``dict`` (a notebook read as JSON) and a cell without metadata.
"""
from __future__ import annotations

from nbformat.notebooknode import NotebookNode
from nbgrader import utils as nbgrader_utils

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"

__all__ = ["BEGIN_SOLUTION", "END_SOLUTION", "BEGIN_HIDDEN", "END_HIDDEN", "meta", "grade_id", "points",
           "is_solution", "is_grade", "is_test", "is_locked", "solutions", "strip_solution_markers",
           "split_hidden", "hidden_lines", "visible"]


def meta(cell) -> dict:
    """The cell's nbgrader metadata; ``{}`` for a cell that has none (an ordinary cell)."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _view(cell) -> NotebookNode:
    # nbgrader's predicates read ``cell.metadata.nbgrader``: give them that of any cell.
    return NotebookNode(metadata=NotebookNode(nbgrader=meta(cell)))


def grade_id(cell) -> str | None:
    """The cell's nbgrader id (the exercise's name for a solution cell), or None."""
    return meta(cell).get("grade_id")


def points(cell) -> float:
    """The points a graded cell is worth (0 for any other cell)."""
    return float(meta(cell).get("points", 0)) if is_grade(cell) else 0.0


def is_solution(cell) -> bool:
    """A cell the student answers."""
    return bool(nbgrader_utils.is_solution(_view(cell)))


def is_grade(cell) -> bool:
    """A cell worth points (a test cell, or a solution cell graded by hand)."""
    return bool(nbgrader_utils.is_grade(_view(cell)))


def is_test(cell) -> bool:
    """A code cell that is graded by running it: the course's check cells."""
    return cell.get("cell_type") == "code" and is_grade(cell) and not is_solution(cell)


def is_locked(cell) -> bool:
    """A cell whose source nbgrader restores when grading (test cells and given code)."""
    return bool(nbgrader_utils.is_locked(_view(cell)))


def strip_solution_markers(source: str) -> str:
    """A solution cell's code without the ``### BEGIN/END SOLUTION`` lines."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION))


def solutions(notebook) -> dict[str, str]:
    """grade_id -> code of every solution code cell of ``notebook``, solution markers removed.

    On a source notebook: the course's answers; on a student's: the student's."""
    return {grade_id(c): strip_solution_markers(c.source) for c in notebook.cells
            if is_solution(c) and c.cell_type == "code"}


def split_hidden(source: str) -> tuple[str, str]:
    """(visible, hidden) code of a test cell: the lines outside and inside the hidden-tests markers."""
    visible, hidden, inside = [], [], False
    for line in source.splitlines():
        if line.strip() == BEGIN_HIDDEN:
            inside = True
        elif line.strip() == END_HIDDEN:
            inside = False
        else:
            (hidden if inside else visible).append(line)
    return "\n".join(visible), "\n".join(hidden)


def hidden_lines(source: str) -> list[str]:
    """The non-blank lines of a test cell's hidden part, stripped: what feedback must never quote."""
    return [line.strip() for line in split_hidden(source)[1].splitlines() if line.strip()]


def visible(source: str) -> str:
    """A test cell as the release shows it: the hidden part and its markers gone, ends stripped."""
    return split_hidden(source)[0].strip()
