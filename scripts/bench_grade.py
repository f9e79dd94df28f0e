"""Benchmark: the cost of `grade` per submission against bare nbclient execution.

Grades N copies of a correct notebook-1 submission with `python -m autograder grade` (the
whole command: collect, nbgrader autograde, feedback HTML, CSV) and executes the same N
notebooks with bare nbclient, one after the other, on the same machine. Prints the seconds
per notebook for each and their ratio (target: grading <= 1.5x bare execution).

    python scripts/bench_grade.py [N]
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder import course, samples  # noqa: E402
from autograder.notebooks import execute  # noqa: E402


def main(n: int = 20) -> None:
    nb = course.notebooks("01_change_of_variables")[0]
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        for i in range(n):
            samples.write(samples.filled(nb), subs / f"student{i:03d}" / nb.assignment / f"{nb.name}.ipynb")

        os.environ["NBGRADER_EXECUTION"] = "autograde"  # the same cells run (or skip) in both
        start = time.perf_counter()
        for path in sorted(subs.rglob("*.ipynb")):
            execute(path, timeout=120)
        bare = (time.perf_counter() - start) / n
        del os.environ["NBGRADER_EXECUTION"]

        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(Path(tmp) / "out")],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        graded = (time.perf_counter() - start) / n

    print(f"notebooks            : {n} x {nb.assignment}/{nb.name}.ipynb")
    print(f"bare nbclient        : {bare:.2f} s per notebook")
    print(f"python -m autograder grade: {graded:.2f} s per notebook (whole command, feedback included)")
    print(f"ratio                : {graded / bare:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
