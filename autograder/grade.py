"""``grade``: collect, autograde, feedback, and one CSV row per student and assignment.

The grading itself is nbgrader's ``autograde`` (it restores the hidden tests from the
gradebook, runs the notebook, scores the test cells) and ``generate_feedback``, called
through ``NbGraderAPI`` one submission at a time, so that each submission's success or
failure is known and reported on its own row. Everything nbgrader writes for a run lives in
``OUT/.nbgrader/`` (a fresh gradebook each run, so no stale score survives a re-run); the
results are ``OUT/grades.csv`` and ``OUT/feedback/<student>/<assignment>/<notebook>.html``.

``status`` is ``ok`` or a short reason: ``missing``, ``unreadable: ...``, ``wrong file name: ...``,
``timeout``, ``kernel died``, ``error: ...``.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from . import course
from .collect import Problem, Submission, collect, read_roster

FIELDS = ["student", "assignment", "score", "max_score", "status"]


@dataclass
class Row:
    student: str
    assignment: str
    score: float
    max_score: float
    status: str

    def as_csv(self) -> dict:
        d = asdict(self)
        for k in ("score", "max_score"):
            d[k] = "" if d[k] is None else f"{d[k]:g}"
        return d


@functools.lru_cache(maxsize=None)
def max_score(assignment: str) -> float:
    """Total points of an assignment, from the nbgrader metadata of its source notebooks."""
    total = 0.0
    for nb in course.notebooks(assignment):
        for cell in nbformat.read(nb.source, 4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade"):
                total += float(meta.get("points", 0))
    return total


def _readable(path: Path) -> str | None:
    """None if ``path`` is a notebook nbgrader can read, else the reason it is not."""
    try:
        raw = path.read_bytes()
        if not raw.strip():
            return "unreadable: empty file"
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "unreadable: not UTF-8 text"
    except json.JSONDecodeError as err:
        return f"unreadable: invalid JSON (line {err.lineno})"
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return "unreadable: not a notebook (no cells)"
    if data.get("nbformat") != 4:
        return f"unreadable: notebook format {data.get('nbformat')}, expected 4"
    try:
        nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as err:  # nbformat's own reader refuses it
        return f"unreadable: {type(err).__name__}"
    return None


def _failure(result: dict) -> str:
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


def _timed_out(autograded: Path) -> bool:
    for nb_path in autograded.glob("*.ipynb"):
        for cell in nbformat.read(nb_path, 4).cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error" and out.get("ename") == "CellTimeoutError":
                    return True
    return False


def write_csv(rows: list[Row], path: Path) -> None:
    """Write ``grades.csv`` atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())
    os.replace(tmp, path)


def grade(source: Path, out: Path, *, timeout: int | None = None, roster: Path | None = None,
          only: list[str] | None = None, log=None) -> list[Row]:
    """Grade every submission in ``source`` into ``out``; return (and write) the rows."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".nbgrader"
    for stale in (work, out / "feedback"):
        shutil.rmtree(stale, ignore_errors=True)
    work.mkdir()

    subs, problems = collect(Path(source), work)
    students = {s.student for s in subs} | {p.student for p in problems}
    if roster:
        students |= set(read_roster(roster))
    wanted = only or sorted({s.assignment for s in subs} | {p.assignment for p in problems if p.assignment != "?"})
    unknown = set(wanted) - set(course.assignments())
    if unknown:
        raise SystemExit(f"unknown assignment(s): {', '.join(sorted(unknown))} (have: {', '.join(course.assignments())})")

    rows: dict[tuple[str, str], Row] = {}
    for p in problems:
        if p.assignment == "?" or p.assignment in wanted:
            top = max_score(p.assignment) if p.assignment != "?" else None
            rows.setdefault((p.student, p.assignment), Row(p.student, p.assignment, 0.0, top, p.status))

    todo: list[tuple[str, str, list[Submission]]] = []
    for a in wanted:
        for student in sorted(students):
            mine = [s for s in subs if s.student == student and s.assignment == a]
            if not mine:
                rows.setdefault((student, a), Row(student, a, 0.0, max_score(a), "missing"))
                continue
            reasons = [r for r in (_readable(s.path) for s in mine) if r]
            if reasons:
                rows[(student, a)] = Row(student, a, 0.0, max_score(a), reasons[0])
                continue
            todo.append((student, a, mine))

    if todo:
        api = course.nbgrader_api(release=work / "release", submitted=work / "submitted", autograded=work / "autograded",
                                  feedback=out / "feedback", db=work / "gradebook.db", timeout=timeout)
        from nbgrader.api import Gradebook

        for a in sorted({a for _, a, _ in todo}):
            result = api.generate_assignment(a, force=True)
            if not result["success"]:
                raise RuntimeError(f"could not load assignment {a} from solutions/:\n{result.get('error')}")
        for i, (student, a, mine) in enumerate(todo, 1):
            start = time.perf_counter()
            dest = work / "submitted" / student / a
            dest.mkdir(parents=True, exist_ok=True)
            for s in mine:
                shutil.copyfile(s.path, dest / f"{s.notebook}.ipynb")
            top = max_score(a)
            result = api.autograde(a, student, force=True, create=True)
            if not result["success"]:
                row = Row(student, a, 0.0, top, _failure(result))
                (work / "logs").mkdir(exist_ok=True)
                (work / "logs" / f"{student}-{a}.log").write_text((result.get("log") or "") + (result.get("error") or ""))
            else:
                with Gradebook(api.coursedir.db_url) as gb:
                    sub = gb.find_submission(a, student)
                    row = Row(student, a, float(sub.score), float(sub.max_score), "ok")
                missing_nbs = {nb.name for nb in course.notebooks(a)} - {s.notebook for s in mine}
                if _timed_out(work / "autograded" / student / a):
                    row.status = "timeout"
                elif missing_nbs:
                    row.status = "missing notebook: " + ", ".join(sorted(missing_nbs))
                fb = api.generate_feedback(a, student, force=True)
                if not fb["success"]:
                    row.status += " (no feedback: " + _failure(fb) + ")"
            rows[(student, a)] = row
            log(f"[{i}/{len(todo)}] {student} {a}: {row.score:g}/{row.max_score:g} {row.status} ({time.perf_counter() - start:.1f} s)")

    result_rows = sorted(rows.values(), key=lambda r: (r.student, r.assignment))
    write_csv(result_rows, out / "grades.csv")
    return result_rows


def format_table(rows: list[Row]) -> str:
    data = [FIELDS] + [[r.as_csv()[k] for k in FIELDS] for r in rows]
    widths = [max(len(str(line[i])) for line in data) for i in range(len(FIELDS))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in data]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
