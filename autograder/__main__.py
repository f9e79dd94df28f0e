"""The instructor command line: ``python -m autograder <command>``, run from the repo root.

  release      regenerate course/ from solutions/ (badge and setup cell included)
  grade        grade a folder or LMS zip of submissions into --out (grades.csv, feedback/)
  merge        combine the --out folders of sharded grade runs (--shard i/N) into one
  selfcheck    solutions get full marks and releases get zero, through real nbgrader
  hostile      grade the catalogue of mangled, broken and hostile submissions (autograder/hostile.py)
  demo         build a small class of sample submissions, grade it, print the table
  execute      run the solution notebooks in order and save their outputs
  report       per exercise: catalogued mistakes caught, correct variants accepted, messages
  book         build the self-learners' site from solutions/ (Jupyter Book 1.x, offline)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import course


def cmd_release(args) -> int:
    from .release import release

    for path in release(args.assignment and [args.assignment]):
        print("released", path.relative_to(course.ROOT))
    return 0


def _limits(args):
    from .grade import Limits

    if args.no_sandbox:
        print("WARNING: --no-sandbox: student code runs as you, with your files and network.", file=sys.stderr)
    return Limits(sandbox=not args.no_sandbox, cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                  memory_mb=args.memory_mb)


def cmd_grade(args) -> int:
    from .grade import format_table, grade, parse_shard
    from .sandbox import SandboxUnavailable

    start = time.perf_counter()
    try:
        rows = grade(args.submissions, args.out, roster=args.roster, only=args.assignment and [args.assignment],
                     workers=args.workers, shard=parse_shard(args.shard), limits=_limits(args))
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(f"\n{len(rows)} rows -> {Path(args.out) / 'grades.csv'}; feedback in {Path(args.out) / 'feedback'} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_merge(args) -> int:
    from .grade import format_table, merge

    rows = merge(args.shards, args.out)
    print(format_table(rows))
    print(f"\n{len(rows)} rows from {len(args.shards)} shards -> {Path(args.out) / 'grades.csv'}")
    return 0


def _outcome(row) -> str:
    if row.status != "ok":
        return row.status.split(":")[0]
    if row.score == row.max_score:
        return "full"
    return "zero" if row.score == 0 else "partial"


def cmd_selfcheck(args) -> int:
    """Solutions must get full marks and blank releases zero, through the real grade path."""
    import shutil

    from .grade import format_table, grade

    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        for nb in course.notebooks(args.assignment):
            for who, src in (("solution", nb.source), ("release", nb.release)):
                if not src.exists():
                    failures.append(f"{src.relative_to(course.ROOT)} does not exist (run `python -m autograder release`)")
                    continue
                dest = subs / who / nb.assignment / f"{nb.name}.ipynb"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
        rows = grade(subs, Path(tmp) / "out", only=args.assignment and [args.assignment], limits=_limits(args),
                     workers=args.workers)
    print(format_table(rows))
    for row in rows:
        want = "full" if row.student == "solution" else "zero"
        if _outcome(row) != want:
            failures.append(f"{row.student} of {row.assignment}: {row.score:g}/{row.max_score:g} {row.status}, expected {want}")
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print("selfcheck:", "FAILED" if failures else "passed")
    return 1 if failures else 0


def cmd_demo(args) -> int:
    from .grade import format_table, grade
    from .samples import demo_submissions

    out = Path(args.out)
    roster, expected = demo_submissions(out)
    print(f"Demo class written to {out / 'submissions'} (roster {roster}); grading...\n", flush=True)
    rows = grade(out / "submissions", out, roster=roster, limits=_limits(args), workers=args.workers)
    print(format_table(rows))
    wrong = [r for r in rows if _outcome(r) != expected.get((r.student, r.assignment), "missing")]
    for r in wrong:
        print(f"UNEXPECTED: {r.student} {r.assignment}: {r.score:g}/{r.max_score:g} {r.status}, "
              f"expected {expected.get((r.student, r.assignment), 'missing')}", file=sys.stderr)
    print(f"\ngrades: {out / 'grades.csv'}   feedback: {out / 'feedback'}")
    return 1 if wrong else 0


def cmd_hostile(args) -> int:
    from .grade import format_table, grade
    from .hostile import unexpected, write_class

    out = Path(args.out)
    catalogue = write_class(out / "submissions")
    rows = grade(out / "submissions", out, limits=_limits(args), workers=args.workers)
    print(format_table(rows))
    wrong = unexpected(rows, catalogue)
    for w in wrong:
        print("UNEXPECTED:", w, file=sys.stderr)
    print(f"\n{len(catalogue) - len(wrong)}/{len(catalogue)} cases got their expected row")
    return 1 if wrong else 0


def cmd_execute(args) -> int:
    from .notebooks import execute_solution

    for nb in course.notebooks(args.assignment):
        start = time.perf_counter()
        execute_solution(nb.source, timeout=args.timeout)
        print(f"executed {nb.source.relative_to(course.ROOT)} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_report(args) -> int:
    from .report import report

    t = report(args.assignment, verbose=not args.quiet)
    ok = t["hidden"] == t["mistakes"] and t["accepted"] == t["variants"]
    return 0 if ok else 1


def cmd_book(args) -> int:
    from .book import build

    html = build()
    print(f"book: {html / 'index.html'}")
    return 0


def _grading_options(p) -> None:
    from .sandbox import DEFAULT_MEMORY_MB, DEFAULT_WALL_S

    p.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py)")
    p.add_argument("--notebook-timeout", type=int, default=DEFAULT_WALL_S,
                   help=f"wall-clock seconds per notebook (default {DEFAULT_WALL_S})")
    p.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                   help=f"address-space limit of a student's kernel (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run student code without bubblewrap (only for trusted notebooks, or where it cannot run)")


def main(argv=None) -> int:
    course.ensure_tools_on_path()
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="regenerate course/ from solutions/")
    p.add_argument("--assignment", help="only this assignment (default: all)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("grade", help="grade a folder or zip of submissions")
    p.add_argument("submissions", type=Path, help="folder <student>/<assignment>/<notebook>.ipynb, or an LMS zip")
    p.add_argument("--out", type=Path, required=True, help="output folder: grades.csv and feedback/")
    p.add_argument("--roster", type=Path, help="student ids, one per line: those without a submission get 'missing'")
    p.add_argument("--assignment", help="grade only this assignment")
    _grading_options(p)
    p.add_argument("--workers", type=int, default=1, help="grade this many submissions at once (processes)")
    p.add_argument("--shard", metavar="I/N", help="grade only slice I of N of the students (for a batch system)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("merge", help="combine sharded grade runs")
    p.add_argument("shards", type=Path, nargs="+", help="the --out folders of the grade --shard i/N runs")
    p.add_argument("--out", type=Path, required=True, help="folder for the combined grades.csv and feedback/")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("selfcheck", help="solutions full marks, releases zero")
    p.add_argument("--assignment")
    _grading_options(p)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_selfcheck)

    p = sub.add_parser("demo", help="grade a bundled sample class and print the table")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    _grading_options(p)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("hostile", help="grade the catalogue of mangled, broken and hostile submissions")
    p.add_argument("--out", type=Path, default=Path("hostile-out"))
    _grading_options(p)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_hostile)

    p = sub.add_parser("execute", help="run solution notebooks in order, saving outputs")
    p.add_argument("--assignment")
    p.add_argument("--timeout", type=int, default=600)
    p.set_defaults(func=cmd_execute)

    p = sub.add_parser("report", help="mistakes caught and variants accepted, per exercise")
    p.add_argument("--assignment")
    p.add_argument("--quiet", action="store_true", help="counts only, no messages")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("book", help="build the self-learners' site into build/book/html")
    p.set_defaults(func=cmd_book)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
