"""The instructor command line: ``python -m autograder <command>``, run from the repo root.

  release      regenerate course/ from solutions/ (badge and setup cell included)
  grade        grade a folder or LMS zip of submissions into --out (grades.csv, feedback/)
  merge        combine the --out folders of sharded grade runs (--shard i/N) into one
  export       grades.csv into a Canvas or Moodle gradebook import (or a wide CSV)
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
                  memory_mb=args.memory_mb, workers=args.workers, warm=not args.no_warm)


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


def cmd_export(args) -> int:
    from .grading.lms import export, read_template, write
    from .grading.results import LMS_IDS, read_csv, read_lms_ids

    grades = args.source / "grades.csv" if args.source.is_dir() else args.source
    if not grades.is_file():
        print(f"error: no grades.csv at {grades}", file=sys.stderr)
        return 2
    if args.lms and not args.template:
        print(f"error: --lms {args.lms} needs --template: the gradebook exported from {args.lms.title()} "
              "(its students' ids and its columns)", file=sys.stderr)
        return 2
    mapping = {}
    for item in args.map:
        assignment, sep, column = item.partition("=")
        if not sep or not assignment.strip() or not column.strip():
            print(f"error: --map {item!r}: expected ASSIGNMENT=COLUMN", file=sys.stderr)
            return 2
        mapping[assignment.strip()] = column.strip()
    template = read_template(args.template, args.lms) if args.template else None
    result = export(read_csv(grades), template, mapping, ungraded=args.ungraded, scale=args.scale,
                    lms_ids=read_lms_ids(grades.parent / LMS_IDS))
    out = write(result, args.out or grades.parent / f"gradebook-{result.lms}.csv")
    print(result.summary())
    print(f"\n{result.lms} gradebook -> {out}" + ("" if result.complete else "  (INCOMPLETE: see NOT exported above)"))
    return 0 if result.complete else 1


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
    from .catalogues.samples import demo_submissions, demo_verdict, describe_demo
    from .grading.results import format_table
    from .grading.run import grade

    out = Path(args.out)
    roster, expected = demo_submissions(out)
    width = _columns()
    print("\n".join(describe_demo(expected, width)))
    print(f"\nDemo class written to {out / 'submissions'} (roster {roster}); grading...\n", flush=True)
    rows = grade(out / "submissions", out, roster=roster, limits=_limits(args))
    print(format_table(rows))
    print(f"\ngrades: {out / 'grades.csv'}   feedback: {out / 'feedback'}\n")
    lines, ok = demo_verdict(rows, expected, width)
    print("\n".join(lines))
    return 0 if ok else 1


def _columns() -> int:
    """The terminal's width, kept between 80 and 100 columns (100 when not a terminal)."""
    import shutil

    return max(80, min(100, shutil.get_terminal_size((100, 24)).columns))


def cmd_hostile(args) -> int:
    from .catalogues.hostile import case_lines, verdict, write_class
    from .grading.run import grade

    out = Path(args.out)
    catalogue = write_class(out / "submissions")
    print(f"{len(catalogue)} cases written to {out / 'submissions'}; grading...\n", flush=True)
    rows = grade(out / "submissions", out, limits=_limits(args))
    width = _columns()
    print("\n".join(case_lines(rows, catalogue, width)))
    print(f"\nevery row of the class, whole: {out / 'grades.csv'}   feedback: {out / 'feedback'}\n")
    lines, ok = verdict(rows, catalogue, width)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_execute(args) -> int:
    from .authoring.notebooks import execute_solution

    for nb in course.notebooks(args.assignment):
        start = time.perf_counter()
        execute_solution(nb.source, timeout=args.timeout)
        print(f"executed {nb.source.relative_to(course.ROOT)} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_report(args) -> int:
    from .catalogues.report import report

    t = report(args.assignment, args.out, progress=not args.quiet, width=_columns())
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
    p.add_argument("--no-warm", action="store_true",
                   help="start every kernel from scratch instead of forking it from a warm template that has "
                        "imported torch once per worker (as isolated, slower; default: warm)")


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

    p = sub.add_parser("export", help="grades.csv as a Canvas or Moodle gradebook import, or a wide CSV")
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR",
                   help="a grade --out folder (its grades.csv) or a grades.csv")
    p.add_argument("--template", type=Path,
                   help="the gradebook exported from the LMS (Canvas: Grades > Export; Moodle: Export > Plain text "
                        "file), filled in and written back (default: none, a plain CSV: student, one column per assignment)")
    p.add_argument("--lms", choices=["canvas", "moodle"], help="the template's LMS (default: told from its header)")
    p.add_argument("--map", action="append", default=[], metavar="ASSIGNMENT=COLUMN",
                   help="the gradebook column of an assignment, e.g. '02_actnorm=ActNorm (4321)'; a column the "
                        "template lacks is added (default: the column named like the assignment, number optional)")
    p.add_argument("--ungraded", choices=["leave", "zero"], default="leave",
                   help="rows with no grade of the student's work (missing, unreadable, wrong file name, error): "
                        "leave the template's cell as exported, or write 0 (default leave)")
    p.add_argument("--scale", action="store_true",
                   help="rescale scores to each Canvas column's Points Possible (default: scores as graded)")
    p.add_argument("--out", type=Path, help="the CSV to write (default: gradebook-<lms|plain>.csv beside grades.csv)")
    p.set_defaults(func=cmd_export)

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
    p.add_argument("--out", type=Path, default=Path("build/report.txt"),
                   help="file for the whole report, every message in full (default build/report.txt)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr (default: one line per mistake or variant run)")
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
