"""Benchmark: what grading costs per submission, serial and in parallel, against bare execution.

Builds N correct submissions, half of notebook 1 and half of notebook 2, and measures, on the
same machine, one after the other:

- bare nbclient execution of the same notebooks (no nbgrader, no sandbox);
- ``python -m autograder grade`` serially (the whole command: collect, repair, sandboxed
  autograde with tamper probes, feedback HTML, CSV);
- the same with ``--workers W``.

Prints seconds per notebook-submission and the speed-up (targets: under 3 s per notebook
serially with the sandbox, at least 1.7x faster with 2 workers).

    python scripts/bench_grade.py [N] [W]          (defaults: 50 submissions, 2 workers)
    python scripts/bench_grade.py 50 2 --no-bare   (skip the bare-execution baseline)
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder import course  # noqa: E402
from autograder.authoring.notebooks import execute  # noqa: E402
from autograder.catalogues import samples  # noqa: E402


def grade(subs: Path, out: Path, *extra: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    with open(out / "grades.csv") as fh:
        bad = [line for line in fh.read().splitlines()[1:] if ",ok," not in line]
    if bad:
        sys.exit("not every submission was graded ok:\n" + "\n".join(bad[:5]))
    return seconds


def main(n: int = 50, workers: int = 2, bare: bool = True) -> None:
    nbs = [course.notebooks("01_change_of_variables")[0], course.notebooks("02_actnorm")[0]]
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        for i in range(n):
            nb = nbs[i % 2]
            samples.write(samples.filled(nb), subs / f"student{i // 2:03d}" / nb.assignment / f"{nb.name}.ipynb")

        if bare:
            os.environ["NBGRADER_EXECUTION"] = "autograde"  # the same cells run (or skip) in both
            start = time.perf_counter()
            for path in sorted(subs.rglob("*.ipynb")):
                execute(path, timeout=120)
            bare_s = (time.perf_counter() - start) / n
            del os.environ["NBGRADER_EXECUTION"]

        serial = grade(subs, Path(tmp) / "serial") / n
        parallel = grade(subs, Path(tmp) / "parallel", "--workers", str(workers)) / n

    print(f"submissions          : {n} (notebooks 1 and 2 alternately), {os.cpu_count()} cores")
    if bare:
        print(f"bare nbclient        : {bare_s:.2f} s per notebook")
    print(f"grade (serial)       : {serial:.2f} s per notebook (whole command, sandbox and feedback included; target < 3 s)")
    print(f"grade --workers {workers}    : {parallel:.2f} s per notebook")
    print(f"speed-up             : {serial / parallel:.2f}x (target >= 1.7x with 2 workers)")
    if bare:
        print(f"serial / bare        : {serial / bare_s:.2f}x")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 50, int(args[1]) if len(args) > 1 else 2, bare="--no-bare" not in sys.argv)
