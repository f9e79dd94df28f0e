"""The instructor command line: ``python -m autograder <command>``, run from the repo root.

  release      regenerate course/ from solutions/ (badge and setup cell included)
  grade        grade a folder or LMS zip of submissions into --out (grades.csv, feedback/)
  selfcheck    solutions get full marks and releases get zero, through real nbgrader
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


def cmd_grade(args) -> int:
    from .grade import format_table, grade

    start = time.perf_counter()
    rows = grade(args.submissions, args.out, timeout=args.timeout, roster=args.roster,
                 only=args.assignment and [args.assignment])
    print(format_table(rows))
    print(f"\n{len(rows)} rows -> {Path(args.out) / 'grades.csv'}; feedback in {Path(args.out) / 'feedback'} "
          f"({time.perf_counter() - start:.1f} s)")
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
        rows = grade(subs, Path(tmp) / "out", timeout=args.timeout, only=args.assignment and [args.assignment])
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
    rows = grade(out / "submissions", out, timeout=args.timeout, roster=roster)
    print(format_table(rows))
    wrong = [r for r in rows if _outcome(r) != expected.get((r.student, r.assignment), "missing")]
    for r in wrong:
        print(f"UNEXPECTED: {r.student} {r.assignment}: {r.score:g}/{r.max_score:g} {r.status}, "
              f"expected {expected.get((r.student, r.assignment), 'missing')}", file=sys.stderr)
    print(f"\ngrades: {out / 'grades.csv'}   feedback: {out / 'feedback'}")
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
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("selfcheck", help="solutions full marks, releases zero")
    p.add_argument("--assignment")
    p.add_argument("--timeout", type=int, default=None)
    p.set_defaults(func=cmd_selfcheck)

    p = sub.add_parser("demo", help="grade a bundled sample class and print the table")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("--timeout", type=int, default=None)
    p.set_defaults(func=cmd_demo)

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
