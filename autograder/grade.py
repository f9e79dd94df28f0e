"""``grade``: collect, autograde, feedback, and one CSV row per student and assignment.

The grading itself is nbgrader's ``autograde`` (it restores the hidden tests from the
gradebook, runs the notebook, scores the test cells) and ``generate_feedback``, called
through ``NbGraderAPI`` one submission at a time, so that each submission's success or
failure is known and reported on its own row. Everything nbgrader writes for a run lives in
``OUT/.nbgrader/`` (a fresh gradebook each run, so no stale score survives a re-run); the
results are ``OUT/grades.csv`` and ``OUT/feedback/<student>/<assignment>/<notebook>.html``.

Before nbgrader sees a notebook it is rebuilt on the released notebook (``repair.py``: lost
metadata, Colab's ids, nbformat 4.0, duplicated/deleted/edited test cells, solution cells
turned markdown); the kernel runs in a sandbox (``sandbox.py``) and a tamper probe runs before
each test cell (``probe.py``, through ``preprocessors.GuardedExecute``).

``status`` is ``ok`` or a short reason: ``missing``, ``missing notebook: ...``, ``missing
exercise: ...``, ``unreadable: ...``, ``wrong file name: ...``, ``timeout``, ``kernel died``,
``tampering detected: ...``, ``error: ...``. ``notes`` says what was repaired, and first, as
``course's own answer: <exercise>: ...``, any answer that is or wraps the course package's own
version of that exercise (scored as it is; for the instructor to look at).

Submissions are graded by ``workers`` processes at once (each with its own gradebook), or a
deterministic ``shard`` of the students (``i/N``) so that several machines share a class;
``merge`` combines the shards' output folders.
"""
from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from . import course
from . import sandbox as sandbox_mod
from .collect import collect, read_roster

FIELDS = ["student", "assignment", "score", "max_score", "status", "notes"]


@dataclass
class Row:
    student: str
    assignment: str
    score: float
    max_score: float
    status: str
    notes: str = ""

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
    # nbformat 3 keeps its cells in worksheets (nbformat converts it to 4 when it is read)
    cells = data.get("worksheets" if data.get("nbformat") == 3 else "cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
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


def read_csv(path: Path) -> list[Row]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"{path}: not a grades.csv of this autograder (no column {', '.join(sorted(missing))})")
        return [Row(r["student"], r["assignment"], float(r["score"] or 0),
                    float(r["max_score"]) if r["max_score"] else None, r["status"], r.get("notes", ""))
                for r in reader]


@dataclass
class Limits:
    """How student code is run (see ``sandbox.py``); per cell and per notebook."""
    sandbox: bool = True
    cell_timeout: int | None = None      # seconds per cell (None: nbgrader_config.py)
    notebook_timeout: int = sandbox_mod.DEFAULT_WALL_S
    memory_mb: int = sandbox_mod.DEFAULT_MEMORY_MB
    cpu_s: int = sandbox_mod.DEFAULT_CPU_S
    threads: int = 0                     # torch/OpenMP threads per kernel (0: cores / workers)


class Grader:
    """Grades one submission at a time with its own gradebook and folders under ``work``."""

    def __init__(self, work: Path, feedback: Path, base_db: Path, limits: Limits):
        self.work, self.limits = work, limits
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base_db, work / "gradebook.db")
        self.api = course.nbgrader_api(release=work / "release", submitted=work / "submitted",
                                       autograded=work / "autograded", feedback=feedback,
                                       db=work / "gradebook.db", timeout=limits.cell_timeout, limits=limits)
        self.templates: dict[tuple[str, str], nbformat.NotebookNode] = {}

    def template(self, a: str, notebook: str):
        if (a, notebook) not in self.templates:
            self.templates[(a, notebook)] = nbformat.read(course.Notebook(a, notebook).release, 4)
        return self.templates[(a, notebook)]

    def grade(self, student: str, a: str, files: list[tuple[str, Path]]) -> Row:
        from nbgrader.api import Gradebook

        from .preprocessors import REPORT_SUFFIX
        from .repair import repair

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
            status = _failure(result)
            if status == "kernel died" and elapsed >= self.limits.notebook_timeout - 1:
                status = f"timeout (notebook over {self.limits.notebook_timeout} s)"
            (self.work / "logs").mkdir(exist_ok=True)
            (self.work / "logs" / f"{student}-{a}.log").write_text((result.get("log") or "") + (result.get("error") or ""))
            return Row(student, a, 0.0, top, status, "; ".join(notes))
        with Gradebook(self.api.coursedir.db_url) as gb:
            sub = gb.find_submission(a, student)
            row = Row(student, a, float(sub.score), float(sub.max_score), "ok", "; ".join(notes))
        autograded = self.work / "autograded" / student / a
        tampering, references = [], []
        for report in sorted(autograded.glob("*" + REPORT_SUFFIX)):
            found = json.loads(report.read_text())
            tampering += found.get("tampering", [])
            references += found.get("references", [])
            report.unlink()  # not part of the feedback
        if references:  # scored as it is, but the instructor should look: first in the notes
            row.notes = "; ".join([f"course's own answer: {r}" for r in references] + ([row.notes] if row.notes else []))
        missing_nbs = {nb.name for nb in course.notebooks(a)} - {name for name, _ in files}
        if tampering:
            row.status = "tampering detected: " + "; ".join(dict.fromkeys(tampering))[:200]
        elif _timed_out(autograded):
            row.status = "timeout"
        elif missing_nbs:
            row.status = "missing notebook: " + ", ".join(sorted(missing_nbs))
        elif missing_ex:
            row.status = "missing exercise: " + ", ".join(missing_ex)
        fb = self.api.generate_feedback(a, student, force=True)
        if not fb["success"]:
            row.status += " (no feedback: " + _failure(fb) + ")"
        return row


_worker: Grader | None = None


def _init_worker(work: Path, feedback: Path, base_db: Path, limits: Limits) -> None:
    global _worker
    _worker = Grader(work / f"worker-{os.getpid()}", feedback, base_db, limits)


def _grade_task(student: str, a: str, files: list[tuple[str, Path]]) -> tuple[Row, float]:
    start = time.perf_counter()
    try:
        row = _worker.grade(student, a, files)
    except Exception as err:  # one bad submission never stops the others
        row = Row(student, a, 0.0, max_score(a), f"error: {type(err).__name__}: {str(err)[:100]}")
    finally:
        sandbox_mod.sweep()
    return row, time.perf_counter() - start


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> (2, 4): the second of four slices of the class (1-based)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SystemExit(f"--shard {text!r}: expected i/N with 1 <= i <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def shard_of(student: str, n: int) -> int:
    """The shard (1..n) a student belongs to: a stable hash of the id, the same on every machine."""
    import hashlib

    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % n + 1


def grade(source: Path, out: Path, *, timeout: int | None = None, roster: Path | None = None,
          only: list[str] | None = None, log=None, workers: int = 1, shard: tuple[int, int] | None = None,
          limits: Limits | None = None) -> list[Row]:
    """Grade every submission in ``source`` into ``out``; return (and write) the rows."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    limits = limits or Limits()
    if timeout is not None:
        limits.cell_timeout = timeout
    if limits.sandbox:
        sandbox_mod.check()
    workers = max(1, int(workers))
    if not limits.threads:
        limits.threads = max(1, (os.cpu_count() or 1) // workers)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".nbgrader"
    for stale in (work, out / "feedback", out / "grades.csv", out / "shard.json"):
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
            reasons = [r for r in (_readable(s.path) for s in mine) if r]
            if reasons:
                rows[(student, a)] = Row(student, a, 0.0, max_score(a), reasons[0])
                continue
            todo.append((student, a, [(s.notebook, s.path) for s in mine]))

    if todo:
        # One gradebook holding the assignments; each worker grades on its own copy.
        base = course.nbgrader_api(release=work / "release", db=work / "base.db")
        for a in sorted({a for _, a, _ in todo}):
            result = base.generate_assignment(a, force=True)
            if not result["success"]:
                raise RuntimeError(f"could not load assignment {a} from solutions/:\n{result.get('error')}")
        del base
        feedback = out / "feedback"
        start, done = time.perf_counter(), 0

        def report(row: Row, seconds: float) -> None:
            nonlocal done
            done += 1
            rows[(row.student, row.assignment)] = row
            left = (time.perf_counter() - start) / done * (len(todo) - done)
            log(f"[{done}/{len(todo)}] {row.student} {row.assignment}: {row.score:g}/{row.max_score:g} {row.status} "
                f"({seconds:.1f} s; about {left:.0f} s left)")

        if workers == 1:
            global _worker
            _worker = Grader(work / "worker", feedback, work / "base.db", limits)
            for task in todo:
                report(*_grade_task(*task))
            _worker = None
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(work, feedback, work / "base.db", limits)) as pool:
                futures = {pool.submit(_grade_task, *task): task for task in todo}
                for fut in as_completed(futures):
                    student, a, _ = futures[fut]
                    try:
                        report(*fut.result())
                    except Exception as err:  # the worker process itself died
                        report(Row(student, a, 0.0, max_score(a), f"error: grading process failed ({type(err).__name__})"), 0.0)

    result_rows = sorted(rows.values(), key=lambda r: (r.student, r.assignment))
    write_csv(result_rows, out / "grades.csv")
    if shard:
        (out / "shard.json").write_text(json.dumps({"shard": shard[0], "of": shard[1],
                                                    "students": sorted(students)}, indent=1))
    return result_rows


def merge(shard_dirs: list[Path], out: Path) -> list[Row]:
    """Combine the output folders of ``grade --shard i/N`` runs into one ``out``.

    Every shard 1..N must be present exactly once (else nothing is written and the error
    names what is missing); their rows and feedback folders are combined.
    """
    out = Path(out).resolve()
    infos = []
    for d in shard_dirs:
        d = Path(d)
        meta = d / "shard.json"
        if not meta.exists() or not (d / "grades.csv").exists():
            raise SystemExit(f"{d}: not a finished shard (no shard.json / grades.csv): was it graded with --shard i/N?")
        infos.append((json.loads(meta.read_text()), d))
    sizes = {info["of"] for info, _ in infos}
    if len(sizes) != 1:
        raise SystemExit(f"shards of different splits: {sorted(sizes)} (all must use the same N)")
    n = sizes.pop()
    seen: dict[int, Path] = {}
    for info, d in infos:
        if info["shard"] in seen:
            raise SystemExit(f"shard {info['shard']}/{n} given twice: {seen[info['shard']]} and {d}")
        seen[info["shard"]] = d
    absent = sorted(set(range(1, n + 1)) - set(seen))
    if absent:
        raise SystemExit(f"missing shard(s) {', '.join(f'{i}/{n}' for i in absent)}: grade them, then merge again")
    rows: dict[tuple[str, str], Row] = {}
    for info, d in sorted(infos, key=lambda x: x[0]["shard"]):
        for row in read_csv(d / "grades.csv"):
            if (row.student, row.assignment) in rows:
                raise SystemExit(f"{row.student} {row.assignment} appears in two shards")
            rows[(row.student, row.assignment)] = row
    out.mkdir(parents=True, exist_ok=True)
    for info, d in infos:
        if (d / "feedback").is_dir() and d.resolve() != out:
            shutil.copytree(d / "feedback", out / "feedback", dirs_exist_ok=True)
    result = sorted(rows.values(), key=lambda r: (r.student, r.assignment))
    write_csv(result, out / "grades.csv")
    return result



def format_table(rows: list[Row]) -> str:
    data = [FIELDS] + [[r.as_csv()[k] for k in FIELDS] for r in rows]
    widths = [max(len(str(line[i])) for line in data) for i in range(len(FIELDS))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in data]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
