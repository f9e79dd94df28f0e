"""The grader: one submission (a student's notebooks of one assignment) in, one :class:`Row` out.

The grading itself is nbgrader's ``autograde`` (it restores the hidden tests from the
gradebook, runs the notebook, scores the test cells) and ``generate_feedback``, called through
``NbGraderAPI`` one submission at a time, so that each submission's success or failure is known
and reported on its own row. Before nbgrader sees a notebook it is rebuilt on the released
notebook (``repair.py``); the kernel runs in the sandbox with tamper probes (``execute.py``).
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import time
import warnings
from pathlib import Path

import nbformat

from .. import cells, course
from . import warm
from .execute import REPORT_SUFFIX
from .limits import Limits
from .nbgrader_setup import grading_api
from .repair import repair
from .results import Row

__all__ = ["Grader", "max_score", "unreadable", "failure_status", "timed_out"]


@functools.lru_cache(maxsize=None)
def max_score(assignment: str) -> float:
    """Total points of an assignment, from the nbgrader metadata of its source notebooks."""
    return sum((cells.points(cell) for nb in course.notebooks(assignment) for cell in nbformat.read(nb.source, 4).cells), 0.0)


def unreadable(path: Path) -> str | None:
    """None if ``path`` is a notebook nbgrader can read, else the reason it is not (a status)."""
    try:
        raw = path.read_bytes()
        if not raw.strip():
            return "unreadable: empty file"
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "unreadable: not UTF-8 text"
    except json.JSONDecodeError as err:
        return f"unreadable: invalid JSON (line {err.lineno})"
    # nbformat 3 keeps its cells in worksheets (nbformat converts it to 4 when it is read)
    nb_cells = data.get("worksheets" if data.get("nbformat") == 3 else "cells") if isinstance(data, dict) else None
    if not isinstance(nb_cells, list):
        return "unreadable: not a notebook (no cells)"
    if data.get("nbformat") not in (3, 4):
        return f"unreadable: notebook format {data.get('nbformat')}, expected 4"
    try:
        with warnings.catch_warnings():  # missing or duplicate cell ids are repaired later
            warnings.simplefilter("ignore")
            nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as err:  # nbformat's own reader refuses it
        return f"unreadable: {type(err).__name__}"
    return None


def failure_status(result: dict) -> str:
    """The status of a failed nbgrader call, from the error and log it returned."""
    text = (result.get("error") or "") + (result.get("log") or "")
    if "DeadKernelError" in text or "Kernel died" in text:
        return "kernel died"
    if "Kernel didn't respond" in text:
        return "kernel failed to start"
    if "CellTimeoutError" in text or "TimeoutError" in text:
        return "timeout"
    # nbgrader ends with a generic NbGraderException; the cause is the last named error before it.
    causes = [m.group(0).strip() for m in re.finditer(r"^\s*[\w.]*(?:Error|Exception): .*$", text, re.M)
              if "NbGraderException" not in m.group(0)]
    return "error: " + (causes[-1][:120] if causes else "autograde failed (see .nbgrader/logs)")


def timed_out(autograded: Path) -> bool:
    """Whether a cell of the autograded notebooks in this folder ran out of time (the rest ran)."""
    for nb_path in autograded.glob("*.ipynb"):
        for cell in nbformat.read(nb_path, 4).cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error" and out.get("ename") == "CellTimeoutError":
                    return True
    return False


class Grader:
    """Grades one submission at a time with its own gradebook and folders under ``work``."""

    def __init__(self, work: Path, feedback: Path, base_db: Path, limits: Limits):
        self.work, self.limits = work, limits
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base_db, work / "gradebook.db")
        self.api = grading_api(work, feedback, limits)
        warm.template_for(limits)  # started here, in this worker's main thread (it dies with that thread)
        self.templates: dict[tuple[str, str], nbformat.NotebookNode] = {}

    def template(self, a: str, notebook: str):
        """The released notebook a submission is rebuilt on."""
        if (a, notebook) not in self.templates:
            self.templates[(a, notebook)] = nbformat.read(course.Notebook(a, notebook).release, 4)
        return self.templates[(a, notebook)]

    def grade(self, student: str, a: str, files: list[tuple[str, Path]]) -> Row:
        """Grade ``files`` ((notebook name, path) pairs) of ``student`` for assignment ``a``."""
        from nbgrader.api import Gradebook

        top = max_score(a)
        dest = self.work / "submitted" / student / a
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        notes, missing_ex = [], []
        for name, path in files:
            try:
                fixed = repair(path.read_text(encoding="utf-8"), self.template(a, name))
            except Exception as err:  # nbformat refuses it even after conversion
                return Row(student, a, 0.0, top, f"unreadable: {type(err).__name__}: {str(err)[:80]}")
            nbformat.write(fixed.notebook, dest / f"{name}.ipynb")
            notes += [f"{name}: {fix}" for fix in fixed.fixes]
            missing_ex += fixed.missing
        start = time.monotonic()
        result = self.api.autograde(a, student, force=True, create=True)
        elapsed = time.monotonic() - start
        if not result["success"]:
            status = failure_status(result)
            if status == "kernel died" and elapsed >= self.limits.notebook_timeout - 1:
                status = f"timeout (notebook over {self.limits.notebook_timeout} s)"
            (self.work / "logs").mkdir(exist_ok=True)
            (self.work / "logs" / f"{student}-{a}.log").write_text((result.get("log") or "") + (result.get("error") or ""))
            return Row(student, a, 0.0, top, status, "; ".join(notes))
        with Gradebook(self.api.coursedir.db_url) as gb:
            sub = gb.find_submission(a, student)
            row = Row(student, a, float(sub.score), float(sub.max_score), "ok", "; ".join(notes))
        autograded = self.work / "autograded" / student / a
        tampering, references, probe_errors = [], [], []
        for report in sorted(autograded.glob("*" + REPORT_SUFFIX)):
            found = json.loads(report.read_text())
            tampering += found.get("tampering", [])
            references += found.get("references", [])
            probe_errors += [found["probe_error"]] if found.get("probe_error") else []
            report.unlink()  # not part of the feedback
        if references:  # scored as it is, but the instructor should look: first in the notes
            row.notes = "; ".join([f"course's own answer: {r}" for r in references] + ([row.notes] if row.notes else []))
        missing_nbs = {nb.name for nb in course.notebooks(a)} - {name for name, _ in files}
        if probe_errors:  # the checks were not run: a grading problem, not the student's
            row.status = "error: " + probe_errors[0] + " (checks not run; grade again)"
        elif tampering:
            row.status = "tampering detected: " + "; ".join(dict.fromkeys(tampering))[:200]
        elif timed_out(autograded):
            row.status = "timeout"
        elif missing_nbs:
            row.status = "missing notebook: " + ", ".join(sorted(missing_nbs))
        elif missing_ex:
            row.status = "missing exercise: " + ", ".join(missing_ex)
        fb = self.api.generate_feedback(a, student, force=True)
        if not fb["success"]:
            row.status += " (no feedback: " + failure_status(fb) + ")"
        return row
