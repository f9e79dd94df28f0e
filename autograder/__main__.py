"""The instructor command line: ``python -m autograder <command>``, run from the repo root.

  release      regenerate course/ from solutions/ (badge and setup cell included)
  grade        grade a folder or LMS zip of submissions into --out (grades.csv, feedback/)
  merge        combine the --out folders of sharded grade runs (--shard i/N) into one
  selfcheck    solutions get full marks and releases get zero, through real nbgrader
  hostile      grade the catalogue of mangled, broken and hostile submissions (autograder/catalogues/hostile.py)
  demo         build a small class of sample submissions, grade it, print the table
  execute      run the solution notebooks in order and save their outputs
  report       per exercise: catalogued mistakes caught, correct variants accepted, messages
  book         build the self-learners' site from solutions/ (Jupyter Book 1.x, offline)
"""
# This module only turns flags into calls and prints what they return; each command's work is
# in the module it imports (imported when the command runs, so that --help stays fast).
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import course
from .grading.limits import Limits

DEFAULTS = Limits()


def cmd_release(args) -> int:
    from .authoring.release import release

    for path in release(args.assignment and [args.assignment]):
        print("released", path.relative_to(course.ROOT))
    return 0


def _limits(args) -> Limits:
    """The grading options' flags as a :class:`Limits`."""
    if args.no_sandbox:
        print("WARNING: --no-sandbox: student code runs as you, with your files and network.", file=sys.stderr)
    return Limits(sandbox=not args.no_sandbox, cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                  memory_mb=args.memory_mb, workers=args.workers)


def cmd_grade(args) -> int:
    from .grading.results import format_table
    from .grading.run import grade
    from .grading.sandbox import SandboxUnavailable
    from .grading.shards import parse_shard

    start = time.perf_counter()
    try:
        rows = grade(args.submissions, args.out, roster=args.roster, only=args.assignment and [args.assignment],
                     shard=parse_shard(args.shard), limits=_limits(args))
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(f"\n{len(rows)} rows -> {Path(args.out) / 'grades.csv'}; feedback in {Path(args.out) / 'feedback'} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_merge(args) -> int:
    from .grading.results import format_table
    from .grading.shards import merge

    rows = merge(args.shards, args.out)
    print(format_table(rows))
    print(f"\n{len(rows)} rows from {len(args.shards)} shards -> {Path(args.out) / 'grades.csv'}")
    return 0


def cmd_selfcheck(args) -> int:
    from .authoring.selfcheck import selfcheck
    from .grading.results import format_table

    rows, failures = selfcheck(args.assignment, _limits(args))
    print(format_table(rows))
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print("selfcheck:", "FAILED" if failures else "passed")
    return 1 if failures else 0


def cmd_demo(args) -> int:
    from .catalogues.samples import demo_submissions, unexpected
    from .grading.results import format_table
    from .grading.run import grade

    out = Path(args.out)
    roster, expected = demo_submissions(out)
    print(f"Demo class written to {out / 'submissions'} (roster {roster}); grading...\n", flush=True)
    rows = grade(out / "submissions", out, roster=roster, limits=_limits(args))
    print(format_table(rows))
    wrong = unexpected(rows, expected)
    for w in wrong:
        print("UNEXPECTED:", w, file=sys.stderr)
    print(f"\ngrades: {out / 'grades.csv'}   feedback: {out / 'feedback'}")
    return 1 if wrong else 0


def cmd_hostile(args) -> int:
    from .catalogues.hostile import unexpected, write_class
    from .grading.results import format_table
    from .grading.run import grade

    out = Path(args.out)
    catalogue = write_class(out / "submissions")
    rows = grade(out / "submissions", out, limits=_limits(args))
    print(format_table(rows))
    wrong = unexpected(rows, catalogue)
    for w in wrong:
        print("UNEXPECTED:", w, file=sys.stderr)
    print(f"\n{len(catalogue) - len(wrong)}/{len(catalogue)} cases got their expected row")
    return 1 if wrong else 0


def cmd_execute(args) -> int:
    from .authoring.notebooks import execute_solution

    for nb in course.notebooks(args.assignment):
        start = time.perf_counter()
        execute_solution(nb.source, timeout=args.timeout)
        print(f"executed {nb.source.relative_to(course.ROOT)} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_report(args) -> int:
    from .catalogues.report import report

    t = report(args.assignment, verbose=not args.quiet)
    ok = t["hidden"] == t["mistakes"] and t["accepted"] == t["variants"]
    return 0 if ok else 1


def cmd_book(args) -> int:
    from .authoring.book import build

    html = build()
    print(f"book: {html / 'index.html'}")
    return 0


def _grading_options(p) -> None:
    """The flags of the commands that grade, one per field of :class:`Limits`, defaults from it."""
    p.add_argument("--timeout", type=int, default=DEFAULTS.cell_timeout,
                   help=f"seconds per cell (default {DEFAULTS.cell_timeout})")
    p.add_argument("--notebook-timeout", type=int, default=DEFAULTS.notebook_timeout,
                   help=f"wall-clock seconds per notebook (default {DEFAULTS.notebook_timeout})")
    p.add_argument("--memory-mb", type=int, default=DEFAULTS.memory_mb,
                   help=f"address-space limit of a student's kernel (default {DEFAULTS.memory_mb})")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run student code without bubblewrap (only for trusted notebooks, or where it cannot run; "
                        "default: sandboxed)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers,
                   help=f"grade this many submissions at once (processes; default {DEFAULTS.workers})")


def build_parser() -> argparse.ArgumentParser:
    """The command line: every subcommand once, every option with its help and default."""
    from .authoring.notebooks import SOLUTION_CELL_TIMEOUT

    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="regenerate course/ from solutions/")
    p.add_argument("--assignment", help="only this assignment (default: all)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("grade", help="grade a folder or zip of submissions")
    p.add_argument("submissions", type=Path, help="folder <student>/<assignment>/<notebook>.ipynb, or an LMS zip")
    p.add_argument("--out", type=Path, required=True, help="output folder: grades.csv and feedback/")
    p.add_argument("--roster", type=Path,
                   help="student ids, one per line: those without a submission get 'missing' (default: no roster)")
    p.add_argument("--assignment", help="grade only this assignment (default: all)")
    _grading_options(p)
    p.add_argument("--shard", metavar="I/N",
                   help="grade only slice I of N of the students, for a batch system (default: all)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("merge", help="combine sharded grade runs")
    p.add_argument("shards", type=Path, nargs="+", help="the --out folders of the grade --shard i/N runs")
    p.add_argument("--out", type=Path, required=True, help="folder for the combined grades.csv and feedback/")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("selfcheck", help="solutions full marks, releases zero")
    p.add_argument("--assignment", help="only this assignment (default: all)")
    _grading_options(p)
    p.set_defaults(func=cmd_selfcheck)

    p = sub.add_parser("demo", help="grade a bundled sample class and print the table")
    p.add_argument("--out", type=Path, default=Path("demo-out"),
                   help="output folder: grades.csv and feedback/ (default demo-out)")
    _grading_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("hostile", help="grade the catalogue of mangled, broken and hostile submissions")
    p.add_argument("--out", type=Path, default=Path("hostile-out"),
                   help="output folder: grades.csv and feedback/ (default hostile-out)")
    _grading_options(p)
    p.set_defaults(func=cmd_hostile)

    p = sub.add_parser("execute", help="run solution notebooks in order, saving outputs")
    p.add_argument("--assignment", help="only this assignment (default: all)")
    p.add_argument("--timeout", type=int, default=SOLUTION_CELL_TIMEOUT,
                   help=f"seconds per cell (default {SOLUTION_CELL_TIMEOUT})")
    p.set_defaults(func=cmd_execute)

    p = sub.add_parser("report", help="mistakes caught and variants accepted, per exercise")
    p.add_argument("--assignment", help="only this assignment (default: all)")
    p.add_argument("--quiet", action="store_true", help="counts only, no messages (default: with messages)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("book", help="build the self-learners' site into build/book/html")
    p.set_defaults(func=cmd_book)
    return parser


def main(argv=None) -> int:
    course.ensure_tools_on_path()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
