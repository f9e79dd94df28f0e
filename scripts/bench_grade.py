"""Benchmark: what grading costs per notebook-submission, side by side in one run.

Builds N correct submissions, half of notebook 1 and half of notebook 2, and measures on this
machine, one after the other (each a fresh process; nothing else should run meanwhile):

- ``bare``: nbclient executing the same notebooks in grading mode, no nbgrader, no sandbox;
- ``nbgrader``: plain ``nbgrader autograde`` of the class, one batch per assignment (its own
  ``Execute``, no sandbox, no probes, no feedback);
- ``cold``: ``python -m autograder grade --no-warm``: a kernel started in bubblewrap per
  submission, tamper probes, feedback HTML, grades.csv: the whole command;
- ``warm``: ``python -m autograder grade``: the same, kernels forked from a warm template;
- both again with ``--workers W``.

Prints seconds per notebook-submission (the whole command's wall time over N) and the ratios.
Bars: warm serial at most 1.0 s and at least 2.5x faster than plain nbgrader; with 2 workers
at most 0.6 s.

    python scripts/bench_grade.py [N] [W]            (defaults: 50 submissions, 2 workers)
    python scripts/bench_grade.py 50 2 --only warm   (one configuration: bare, nbgrader, cold, warm)
    python scripts/bench_grade.py 20 --phases        (where a warm serial run's time goes)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder import course  # noqa: E402
from autograder.catalogues import samples  # noqa: E402

BARE = """import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
os.environ["NBGRADER_EXECUTION"] = "autograde"  # the same cells run (or skip) as in grading
from autograder.authoring.notebooks import execute
for path in sorted(Path({subs!r}).rglob("*.ipynb")):
    execute(path, timeout=120)
"""

PLAIN = """import shutil, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from autograder import course
work = Path({work!r})
api = course.nbgrader_api(release=work / "release", submitted=work / "submitted", autograded=work / "autograded",
                          feedback=work / "feedback", db=work / "gradebook.db")
for a in {assignments!r}:
    assert api.generate_assignment(a, force=True)["success"]
for a in {assignments!r}:
    result = api.autograde(a, "*", force=True, create=True)  # nbgrader's batch: every student at once
    assert result["success"], result.get("error", "")[-2000:]
"""


def timed(cmd: list[str], what: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return seconds


def grade(subs: Path, out: Path, *extra: str) -> float:
    seconds = timed([sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out), *extra],
                    "grade " + " ".join(extra))
    with open(out / "grades.csv") as fh:
        bad = [line for line in fh.read().splitlines()[1:] if ",ok," not in line]
    if bad:
        sys.exit("not every submission was graded ok:\n" + "\n".join(bad[:5]))
    return seconds


def main(n: int = 50, workers: int = 2, only: str | None = None) -> None:
    nbs = [course.notebooks("01_change_of_variables")[0], course.notebooks("02_actnorm")[0]]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        for i in range(n):
            nb = nbs[i % 2]
            samples.write(samples.filled(nb), subs / f"student{i // 2:03d}" / nb.assignment / f"{nb.name}.ipynb")

        def want(name):
            return only is None or only == name

        if want("bare"):
            results["bare nbclient"] = timed([sys.executable, "-c", BARE.format(root=str(ROOT), subs=str(subs))],
                                             "bare")
        if want("nbgrader"):
            work = Path(tmp) / "plain"
            shutil.copytree(subs, work / "submitted")
            code = PLAIN.format(root=str(ROOT), work=str(work), assignments=sorted({nb.assignment for nb in nbs}))
            results["plain nbgrader autograde"] = timed([sys.executable, "-c", code], "nbgrader")
        if want("cold"):
            results["grade --no-warm (cold)"] = grade(subs, Path(tmp) / "cold", "--no-warm")
        if want("warm"):
            results["grade (warm)"] = grade(subs, Path(tmp) / "warm")
        if want("cold"):
            results[f"grade --no-warm --workers {workers}"] = grade(subs, Path(tmp) / "cold2", "--no-warm",
                                                                    "--workers", str(workers))
        if want("warm"):
            results[f"grade --workers {workers} (warm)"] = grade(subs, Path(tmp) / "warm2", "--workers", str(workers))

    print(f"{n} notebook-submissions (notebooks 1 and 2 alternately), {os.cpu_count()} cores; "
          "seconds per notebook-submission, whole command:")
    for name, seconds in results.items():
        print(f"  {name:34s} {seconds / n:6.2f} s")
    plain = results.get("plain nbgrader autograde")
    warm = results.get("grade (warm)")
    if plain and warm:
        print(f"  plain nbgrader / warm serial        {plain / warm:6.2f}x  (bar: >= 2.5x; warm serial bar: <= 1.0 s)")
    cold = results.get("grade --no-warm (cold)")
    if cold and warm:
        print(f"  cold / warm, serial                 {cold / warm:6.2f}x")
    warm2 = results.get(f"grade --workers {workers} (warm)")
    if warm2:
        print(f"  warm, {workers} workers                     {warm2 / n:6.2f} s  (bar with 2 workers: <= 0.6 s)")


PHASES = """import collections, functools, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import nbclient.client
import nbgrader.apps.api as nbgrader_api
from autograder.grading import execute, grader, run
from autograder.grading.limits import Limits

spent = collections.Counter()

def timed(owner, name, phase):
    original = getattr(owner, name)
    if name.startswith("async") or name.startswith("_async") or name == "_user_expression":
        async def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return await original(*a, **k)
            finally:
                spent[phase] += time.perf_counter() - t
    else:
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[phase] += time.perf_counter() - t
    setattr(owner, name, functools.wraps(original)(wrapper))

timed(grader.Grader, "grade", "submission, all of it")
timed(nbgrader_api.NbGraderAPI, "autograde", "  nbgrader autograde")
timed(execute.GuardedExecute, "preprocess", "    running the notebook")
timed(nbclient.client.NotebookClient, "start_new_kernel", "      kernel: start")
timed(nbclient.client.NotebookClient, "start_new_kernel_client", "      kernel: connect, ready")
timed(execute.GuardedExecute, "_user_expression", "      tamper and reference probes")
timed(nbclient.client.NotebookClient, "_cleanup_kernel", "      kernel: shut down")
timed(nbgrader_api.NbGraderAPI, "generate_feedback", "  feedback HTML")
start = time.perf_counter()
run.grade(Path({subs!r}), Path({out!r}), limits=Limits())
total = time.perf_counter() - start
n = {n}
print(f"grading run, serial, warm: {{total / n:.3f}} s per notebook ({{total:.1f}} s for {{n}})")
print(f"  once per run (start-up, loading the assignments, the template): {{(total - spent['submission, all of it']) / n:.3f}}")
for phase, seconds in spent.items():
    print(f"  {{phase:40s}} {{seconds / n:.3f}}")
"""


def phases(n: int) -> None:
    """Where a warm serial run's time goes, per notebook-submission (timers around its steps)."""
    nbs = [course.notebooks("01_change_of_variables")[0], course.notebooks("02_actnorm")[0]]
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        for i in range(n):
            nb = nbs[i % 2]
            samples.write(samples.filled(nb), subs / f"student{i // 2:03d}" / nb.assignment / f"{nb.name}.ipynb")
        code = PHASES.format(root=str(ROOT), subs=str(subs), out=str(Path(tmp) / "out"), n=n)
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        print(proc.stdout, end="")


if __name__ == "__main__":
    if "--phases" in sys.argv:
        phases(int(next((a for a in sys.argv[1:] if a.isdigit()), 20)))
        sys.exit(0)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if only:
        args = [a for a in args if a != only]
    main(int(args[0]) if args else 50, int(args[1]) if len(args) > 1 else 2, only)
