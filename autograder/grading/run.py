"""``grade``: a folder or LMS zip of submissions in, ``grades.csv`` and feedback out.

One run: find the submissions (``collect.py``), keep this machine's shard of the students
(``shards.py``), give every student on the roster a row for every assignment (``missing``,
``unreadable: ...`` or graded), and grade the rest with ``Limits.workers`` processes, each a
:class:`~autograder.grading.grader.Grader` with its own gradebook. Everything nbgrader writes
lives in ``OUT/.nbgrader/`` (a fresh gradebook each run, so no stale score survives a re-run);
the results are ``OUT/grades.csv`` and ``OUT/feedback/<student>/<assignment>/<notebook>.html``.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .. import course
from . import sandbox, warm
from .collect import collect, read_roster
from .grader import Grader, max_score, unreadable
from .limits import Limits
from .results import LMS_IDS, Row, write_csv, write_lms_ids
from .shards import SHARD_FILE, shard_of

__all__ = ["grade"]

_worker: Grader | None = None  # this process's grader (one per worker process)


_worker_args: tuple | None = None  # what this worker process's grader is made of, once base_db exists


def _init_worker(work: Path, feedback: Path, base_db: Path, limits: Limits) -> None:
    """A worker process starts: its warm template imports while the main process loads the
    assignments into ``base_db``; its grader is made at its first submission."""
    global _worker_args
    _worker_args = (work / f"worker-{os.getpid()}", feedback, base_db, limits)
    warm.template_for(limits)


def _started() -> int:
    return os.getpid()


def _grade_task(student: str, a: str, files: list[tuple[str, Path]]) -> tuple[Row, float]:
    global _worker
    start = time.perf_counter()
    try:
        if _worker is None:
            _worker = Grader(*_worker_args)
        row = _worker.grade(student, a, files)
    except Exception as err:  # one bad submission never stops the others
        row = Row(student, a, 0.0, max_score(a), f"error: {type(err).__name__}: {str(err)[:100]}")
    finally:
        sandbox.sweep()
    return row, time.perf_counter() - start


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def estimate_left(seconds: list[float], remaining: int, workers: int) -> float:
    """Seconds the ``remaining`` submissions should still take: the median time of those graded
    so far times the rounds ``workers`` processes need for the rest. The median, not the mean:
    one submission that ran into its timeout must not multiply the estimate for all the others."""
    if remaining <= 0 or not seconds:
        return 0.0
    return statistics.median(seconds) * math.ceil(remaining / max(workers, 1))


def tally(rows) -> str:
    """Rows counted by outcome, most first: ``7 missing, 1 unreadable``."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome()] = counts.get(r.outcome(), 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def progress_line(done: int, total: int, row: Row, seconds: float, left: float) -> str:
    """One submission graded: ``[graded 3/27] ada 01_x: 12/12 ok (4.1 s; about 40 s left)``; the
    count is of the submissions graded, not of the table's rows (see :func:`grading_header`)."""
    return (f"[graded {done}/{total}] {row.student} {row.assignment}: {row.score:g}/{row.max_score or 0:g} "
            f"{row.status} ({seconds:.1f} s; about {left:.0f} s left)")


def grading_header(to_grade: int, ungraded: list[Row]) -> str:
    """What the progress lines will count, said before they start: the submissions to grade,
    and the table's other rows, which need no grading (``missing``, ``unreadable``, ...)."""
    line = f"grading {to_grade} submission{'s' * (to_grade != 1)}"
    if ungraded:
        line += (f"; {len(ungraded)} other row{'s' * (len(ungraded) != 1)} of {to_grade + len(ungraded)} "
                 f"need{'s' * (len(ungraded) == 1)} no grading ({tally(ungraded)})")
    return line


def grade(source: Path, out: Path, *, roster: Path | None = None, only: list[str] | None = None,
          shard: tuple[int, int] | None = None, limits: Limits = Limits()) -> list[Row]:
    """Grade every submission in ``source`` into ``out``; return (and write) the rows.

    ``roster``: students who get a ``missing`` row without a submission; ``only``: these
    assignments (default: those handed in); ``shard``: (i, N), this machine's slice of the class.
    """
    if limits.sandbox:
        sandbox.check()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".nbgrader"
    for stale in (work, out / "feedback", out / "grades.csv", out / SHARD_FILE, out / LMS_IDS):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    work.mkdir()

    subs, problems = collect(Path(source), work)
    students = {s.student for s in subs} | {p.student for p in problems}
    if roster:
        students |= set(read_roster(roster))
    if shard:
        students = {s for s in students if shard_of(s, shard[1]) == shard[0]}
        subs = [s for s in subs if s.student in students]
        problems = [p for p in problems if p.student in students]
    wanted = only or sorted({s.assignment for s in subs} | {p.assignment for p in problems if p.assignment != "?"})
    unknown = set(wanted) - set(course.assignments())
    if unknown:
        raise SystemExit(f"unknown assignment(s): {', '.join(sorted(unknown))} (have: {', '.join(course.assignments())})")

    rows: dict[tuple[str, str], Row] = {}
    for p in problems:
        if p.assignment == "?" or p.assignment in wanted:
            top = max_score(p.assignment) if p.assignment != "?" else None
            rows.setdefault((p.student, p.assignment), Row(p.student, p.assignment, 0.0, top, p.status))

    todo: list[tuple[str, str, list[tuple[str, Path]]]] = []
    for a in wanted:
        for student in sorted(students):
            mine = [s for s in subs if s.student == student and s.assignment == a]
            if not mine:
                rows.setdefault((student, a), Row(student, a, 0.0, max_score(a), "missing"))
                continue
            reasons = [r for r in (unreadable(s.path) for s in mine) if r]
            if reasons:
                rows[(student, a)] = Row(student, a, 0.0, max_score(a), reasons[0])
                continue
            todo.append((student, a, [(s.notebook, s.path) for s in mine]))

    if todo:
        _grade_all(todo, work, out / "feedback", limits, rows)

    result_rows = sorted(rows.values(), key=lambda r: (r.student, r.assignment))
    write_csv(result_rows, out / "grades.csv")
    lms_ids: dict[str, list[str]] = {}
    for sub in subs:
        if sub.lms_id:
            lms_ids.setdefault(sub.student, []).append(sub.lms_id)
    write_lms_ids(lms_ids, out / LMS_IDS)
    if shard:
        (out / SHARD_FILE).write_text(json.dumps({"shard": shard[0], "of": shard[1],
                                                  "students": sorted(students)}, indent=1))
    return result_rows


def _grade_all(todo: list[tuple[str, str, list[tuple[str, Path]]]], work: Path, feedback: Path, limits: Limits,
               rows: dict[tuple[str, str], Row]) -> None:
    """Grade the submissions in ``todo`` into ``rows``, printing progress on stderr."""
    pool = None
    if limits.workers > 1:  # started first: their imports overlap the loading of the assignments
        pool = ProcessPoolExecutor(limits.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(work, feedback, work / "base.db", limits))
        for _ in range(limits.workers):
            pool.submit(_started)
    else:
        warm.template_for(limits, wait=False)
    # One gradebook holding the assignments; each worker grades on its own copy.
    base = course.nbgrader_api(release=work / "release", db=work / "base.db")
    for a in sorted({a for _, a, _ in todo}):
        result = base.generate_assignment(a, force=True)
        if not result["success"]:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            raise RuntimeError(f"could not load assignment {a} from solutions/:\n{result.get('error')}")
    del base
    _progress(grading_header(len(todo), [r for k, r in rows.items() if k not in {(s, a) for s, a, _ in todo}]))
    done, times = 0, []

    def report(row: Row, seconds: float) -> None:
        nonlocal done
        done += 1
        rows[(row.student, row.assignment)] = row
        if seconds > 0:  # 0: the grading process died, no time was measured
            times.append(seconds)
        _progress(progress_line(done, len(todo), row, seconds, estimate_left(times, len(todo) - done, limits.workers)))

    if limits.workers == 1:
        global _worker
        _worker = Grader(work / "worker", feedback, work / "base.db", limits)
        for task in todo:
            report(*_grade_task(*task))
        _worker = None
        return
    with pool:
        futures = {pool.submit(_grade_task, *task): task for task in todo}
        for fut in as_completed(futures):
            student, a, _ = futures[fut]
            try:
                report(*fut.result())
            except Exception as err:  # the worker process itself died
                report(Row(student, a, 0.0, max_score(a), f"error: grading process failed ({type(err).__name__})"), 0.0)
