"""``selfcheck``: each solution notebook gets full marks and each release zero, through the real grader.

The course author's end-to-end test of a change: the solutions and the blank releases are
handed in as two students, ``solution`` and ``release``, and graded exactly as a class is.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .. import course
from ..grading.limits import Limits
from ..grading.results import Row
from ..grading.run import grade

__all__ = ["selfcheck"]

EXPECTED = {"solution": "full", "release": "zero"}  # student -> the outcome their notebooks must get


def selfcheck(assignment: str | None = None, limits: Limits = Limits()) -> tuple[list[Row], list[str]]:
    """Grade the solutions and the releases (of one assignment, or all); return the rows and
    the failures (empty when every row is as expected)."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        for nb in course.notebooks(assignment):
            for who, src in (("solution", nb.source), ("release", nb.release)):
                if not src.exists():
                    failures.append(f"{src.relative_to(course.ROOT)} does not exist (run `python -m autograder release`)")
                    continue
                dest = subs / who / nb.assignment / f"{nb.name}.ipynb"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
        rows = grade(subs, Path(tmp) / "out", only=assignment and [assignment], limits=limits)
    for row in rows:
        want = EXPECTED[row.student]
        if row.outcome() != want:
            failures.append(f"{row.student} of {row.assignment}: {row.score:g}/{row.max_score:g} {row.status}, expected {want}")
    return rows, failures
