"""Warm kernels (``autograder/grading/warm.py``, ``template.py``): a kernel forked from a template
that has imported torch must be as isolated as one started in bubblewrap, die with its sandbox,
and, wherever the template cannot serve, grading must fall back and say so once."""
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets.config import Config

from autograder import course
from autograder.catalogues import hostile, samples
from autograder.grading import sandbox, warm
from autograder.grading.limits import Limits
from autograder.grading.run import grade

MARK = "AG_WARM_TEST_MARK"


@pytest.fixture
def fresh_warm(monkeypatch):
    """This process's template state, reset before and after the test."""
    monkeypatch.setattr(warm, "_template", None)
    monkeypatch.setattr(warm, "_unavailable", None)
    monkeypatch.setattr(warm, "_spare", None)
    yield
    warm._discard_spare()
    if warm._template is not None:
        warm._template.close()


def marked_processes() -> list[int]:
    """Host processes whose command line carries MARK (what a kernel left running)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def wait_until(predicate, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_forked_sandbox_sees_what_the_bubblewrap_one_sees(fresh_warm, monkeypatch):
    monkeypatch.setenv("AG_UNIT_SECRET", "the grader's token")
    template = warm.template_for(Limits())
    assert template is not None, warm._unavailable
    secrets = [course.SOLUTIONS, course.ROOT / "autograder", course.ROOT / "course", course.ROOT / "README.md",
               Path.home() / ".bash_history", template.log.name]
    seen = template.report(look_for=[str(p) for p in secrets] + [str(course.ROOT / "glowcourse")])
    assert seen["uid"] == 65534 and seen["cwd"] == sandbox.WORK
    assert seen["pid"] == 2 and seen["processes"] == [1, 2]      # its own pid namespace: nothing else
    assert seen["capabilities"] == 0 and seen["init_capabilities"] == 0
    assert seen["writable_root"] is False
    assert seen["visible"] == [str(course.ROOT / "glowcourse")]  # the package, not the course's answers
    env = dict(item.split("=", 1) for item in seen["environ"].split("\0") if item)
    assert "AG_UNIT_SECRET" not in env and "the grader's token" not in seen["environ"]
    assert set(env) <= set(sandbox.kernel_env(Limits())) | {"OPENBLAS_NUM_THREADS"}


def test_only_a_sandboxed_warm_run_uses_a_template(fresh_warm, capsys):
    assert warm.template_for(Limits(warm=False)) is None
    assert warm.template_for(Limits(sandbox=False)) is None
    assert capsys.readouterr().err == ""  # asked for: nothing to say


def _run(nb, limits: Limits, timeout: int = 60):
    """Execute ``nb`` as grading does: nbclient starts the kernel, and shuts it down after."""
    config = Config()
    config.SandboxKernelManager.limits = limits
    NotebookClient(nb, kernel_manager_class=sandbox.SandboxKernelManager, config=config, timeout=timeout,
                   allow_errors=True, shutdown_kernel="immediate").execute()
    return nb


def _notebook(*sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_a_warm_kernel_runs_cells_and_takes_what_it_started_with_it(fresh_warm):
    limits = Limits()
    assert warm.template_for(limits) is not None, warm._unavailable
    nb = _run(_notebook(
        "import sys, torch; print(sys.modules['torch'] is torch, torch.get_num_threads())\n"
        "import ctypes, numpy\n"  # numpy's OpenBLAS: loaded by the template with one thread, then given the kernel's
        "lib = ctypes.CDLL(next(l.split()[-1] for l in open('/proc/self/maps') if 'openblas64' in l))\n"
        "print(lib.scipy_openblas_get_num_threads64_())",
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time  # {MARK}\\n"
        f"while True: time.sleep(1)'], start_new_session=True)",
        "import os; print(os.getpid(), os.getuid(), os.getcwd())"), limits)
    threads = str(limits.kernel_threads())
    assert nb.cells[0].outputs[0]["text"].split() == ["True", threads, threads]  # torch's, numpy's BLAS
    assert nb.cells[2].outputs[0]["text"].split() == ["2", "65534", sandbox.WORK]
    assert wait_until(lambda: not marked_processes()), marked_processes()  # killed with the sandbox


def test_a_warm_kernel_dies_at_the_notebook_timeout(fresh_warm):
    limits = Limits(notebook_timeout=3, cell_timeout=120)
    assert warm.template_for(limits) is not None, warm._unavailable
    nb = _notebook("print(1 + 1)", "while True:\n    pass", "print('never')")
    with pytest.raises(DeadKernelError):  # killed by its supervisor, long before the cell's 120 s
        _run(nb, limits, timeout=120)
    assert nb.cells[0].outputs[0]["text"] == "2\n" and not nb.cells[2].get("outputs")


def test_a_dead_template_falls_back_to_bubblewrap_and_says_so_once(fresh_warm, capsys):
    limits = Limits()
    template = warm.template_for(limits)
    assert template is not None, warm._unavailable
    template.proc.kill()
    template.proc.wait()
    first = _run(_notebook("import os; print(os.getpid(), os.getuid())"), limits)
    second = _run(_notebook("print('again')"), limits)
    # bubblewrap's pid 1 is its init and 2 the kernel (prlimit execs it): the cold path ran it
    assert first.cells[0].outputs[0]["text"].split() == ["2", "65534"]
    assert second.cells[0].outputs[0]["text"] == "again\n"
    err = capsys.readouterr().err
    assert err.count("warm kernels off") == 1 and "the template exited" in err


def test_a_template_that_cannot_start_is_not_used(fresh_warm, capsys, monkeypatch, tmp_path):
    broken = tmp_path / "template.py"
    broken.write_text("import json\nprint(json.dumps({'error': 'no torch here'}))\n")
    monkeypatch.setattr(warm, "PROGRAM", broken)
    assert warm.template_for(Limits()) is None
    assert warm.template_for(Limits()) is None
    err = capsys.readouterr().err
    assert err.count("warm kernels off: no torch here") == 1


# The hostile catalogue's cases aimed at the next kernel all get full marks only if the next kernel
# finds nothing: the finder must see each one's traces where they are (the same kernel).
@pytest.mark.parametrize("writer", ["LEAVE_PROCESS", "LEAVE_THREAD", "WRITE_FOR_NEXT", "PATCH_FOR_NEXT"])
def test_the_leftover_finder_sees_what_each_case_leaves_in_its_own_kernel(writer, tmp_path):
    program = "\n".join([getattr(hostile, writer), "import time; time.sleep(0.5)", hostile.FIND_LEFTOVERS,
                         "import os, sys; sys.stdout.flush(); os._exit(0 if found else 3)"])
    (tmp_path / "work").mkdir()
    cmd = sandbox.command([sys.executable, "-c", program], tmp_path / "work", Limits(notebook_timeout=60))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "leftovers of other kernels: [" in proc.stdout and "[]" not in proc.stdout


@pytest.mark.slow
def test_warm_and_cold_kernels_grade_a_mixed_class_row_for_row_alike(tmp_path):
    """Correct, wrong, hostile and broken submissions: the same rows from both paths."""
    subs = tmp_path / "class"
    keep = ["m_colab", "m_after_leftovers_1", "b_os_exit", "b_huge_allocation", "h_torch_allclose",
            "h_leaves_process", "h_patches_for_next", "h_kills_parent", "m_missing_exercise"]
    subs.mkdir()
    for name in hostile.write_class(tmp_path / "all"):
        if name in keep:
            (tmp_path / "all" / name).rename(subs / name)
    nb2 = course.notebooks("02_actnorm")[0]
    for i, mistake in enumerate(samples.mistakes("02_actnorm")[:4]):
        samples.write(samples.with_mistake(samples.filled(nb2), mistake), subs / f"wrong{i}" / nb2.assignment / f"{nb2.name}.ipynb")
    rows = {}
    for warm_on in (True, False):
        limits = Limits(cell_timeout=20, notebook_timeout=120, workers=2, warm=warm_on)
        rows[warm_on] = [(r.student, r.assignment, r.score, r.status, r.notes)
                         for r in grade(subs, tmp_path / f"out-{warm_on}", limits=limits)]
    assert rows[True] == rows[False]
    assert any(r[3] == "ok" and r[2] > 0 for r in rows[True]) and any(r[3] != "ok" for r in rows[True])


def test_the_next_kernel_is_forked_ahead_and_its_clock_starts_when_it_is_handed_out(fresh_warm):
    """After a kernel starts, the next one is forked at once (a spare), so that its start-up
    overlaps this submission's grading; it waits longer than the notebook limit without being
    killed, and is killed at the limit counted from when it is handed out."""
    limits = Limits(notebook_timeout=3, cell_timeout=120)
    assert warm.template_for(limits) is not None, warm._unavailable
    _run(_notebook("print('first')"), limits)
    spare = warm._spare
    assert spare is not None and spare.process.poll() is None
    time.sleep(4)  # longer than the notebook limit: a spare's clock has not started
    nb = _notebook("import time; time.sleep(1); print('second')", "while True:\n    pass", "print('never')")
    with pytest.raises(DeadKernelError):
        _run(nb, limits, timeout=120)
    assert nb.cells[0].outputs[0]["text"] == "second\n"  # the spare ran it, then died at its limit
    sandbox.sweep()  # what grading does after each submission: a dead kernel skips its clean-up
    assert spare.process.poll() is not None and not spare.scratch.exists()
    assert warm._spare is not None and warm._spare.process.pid != spare.process.pid
