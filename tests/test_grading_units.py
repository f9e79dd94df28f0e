"""The grader's security-critical pure functions, one by one: no notebook run, no kernel, no nbgrader call.

The hidden tests kept out of feedback, the tamper probe's program, the sandbox's command line,
the limits, the reading of a failed nbgrader call, and the cell conventions they all rest on.
"""
import dataclasses
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell

from autograder import cells, course
from autograder.grading import probe, sandbox
from autograder.grading.feedback import ScrubHiddenTracebacks, scrub
from autograder.grading.grader import failure_status, unreadable
from autograder.grading.limits import Limits
from autograder.grading.results import FIELDS, Row, format_table, read_csv, write_csv
from autograder.grading.shards import parse_shard, shard_of

TEST_CELL = """check_affine_flow(ElementwiseAffine)
### BEGIN HIDDEN TESTS
check_affine_flow(ElementwiseAffine, seed=11, strict=True)

  assert secret_threshold < 1e-6
### END HIDDEN TESTS
print("done")"""


def graded(source, **meta):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade_id": "c", **meta}
    return cell


# --- the cell conventions ------------------------------------------------------------------------

def test_a_test_cell_splits_into_its_visible_and_hidden_parts():
    visible, hidden = cells.split_hidden(TEST_CELL)
    assert visible == 'check_affine_flow(ElementwiseAffine)\nprint("done")'
    assert hidden == "check_affine_flow(ElementwiseAffine, seed=11, strict=True)\n\n  assert secret_threshold < 1e-6"
    assert cells.hidden_lines(TEST_CELL) == ["check_affine_flow(ElementwiseAffine, seed=11, strict=True)",
                                             "assert secret_threshold < 1e-6"]
    assert cells.visible(TEST_CELL) == visible
    assert cells.split_hidden("x = 1") == ("x = 1", "")


def test_solution_markers_are_removed_and_the_answer_kept():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
    assert cells.strip_solution_markers(source) == "def f(x):\n    return 2 * x"


@pytest.mark.parametrize("make", [lambda c: c, lambda c: json.loads(json.dumps(c))], ids=["node", "dict"])
def test_cell_kinds_as_nbgrader_defines_them(make):
    solution = make(graded("x = 1", solution=True, grade=False, locked=False))
    test = make(graded("assert x", solution=False, grade=True, locked=True, points=2))
    given = make(graded("def helper(): pass", solution=False, grade=False, locked=True))
    plain, text = make(new_code_cell("plot()")), make(new_markdown_cell("# Title"))
    kinds = [(cells.is_solution(c), cells.is_test(c), cells.is_locked(c), cells.points(c))
             for c in (solution, test, given, plain, text)]
    assert kinds == [(True, False, False, 0), (False, True, True, 2.0), (False, False, True, 0), (False, False, False, 0),
                     (False, False, False, 0)]
    assert cells.grade_id(test) == "c" and cells.grade_id(plain) is None and cells.meta(plain) == {}
    markdown_graded = make(graded("an answer in words", grade=True, solution=False))
    markdown_graded["cell_type"] = "markdown"
    assert not cells.is_test(markdown_graded)  # graded by hand, not run


def test_solutions_of_a_notebook_by_grade_id():
    nb = NotebookNode(cells=[graded("### BEGIN SOLUTION\ny = 2\n### END SOLUTION", solution=True),
                             graded("assert y == 2", grade=True, points=1), new_code_cell("z = 3")])
    nb.cells[1].metadata.nbgrader.grade_id = "y_check"
    assert cells.solutions(nb) == {"c": "y = 2"}


# --- feedback: the hidden tests never quoted ----------------------------------------------------

def test_scrub_drops_lines_quoting_a_hidden_line_even_when_coloured():
    secrets = cells.hidden_lines(TEST_CELL)
    traceback = ("\x1b[0;31mAssertionError\x1b[0m                            Traceback (most recent call last)\n"
                 "\x1b[0;32m----> 3\x1b[0m \x1b[43mcheck_affine_flow\x1b[49m\x1b[43m(\x1b[49m"
                 "\x1b[43mElementwiseAffine, seed=11, strict=True)\x1b[49m\n"
                 "      4 \x1b[38;5;66;03m### END HIDDEN TESTS\x1b[39;00m\n"
                 "\x1b[0;31mAssertionError\x1b[0m: the log-det is wrong")
    kept = scrub(traceback, secrets)
    assert kept.split("\n") == [traceback.split("\n")[0], traceback.split("\n")[3]]
    assert scrub("nothing secret\nhere", secrets) == "nothing secret\nhere"


def test_scrub_hidden_tracebacks_cleans_error_and_stream_outputs_of_the_cell_holding_them():
    cell = graded(TEST_CELL, grade=True)
    cell.outputs = [NotebookNode(output_type="stream", name="stdout",
                                 text="ok\n  assert secret_threshold < 1e-6\nbye"),
                    NotebookNode(output_type="error", ename="AssertionError", evalue="",
                                 traceback=["Traceback", "----> 3 check_affine_flow(ElementwiseAffine, seed=11, strict=True)",
                                            "AssertionError: wrong"])]
    out, _ = ScrubHiddenTracebacks().preprocess_cell(cell, {}, 0)
    assert out.outputs[0].text == "ok\nbye"
    assert out.outputs[1].traceback == ["Traceback", "", "AssertionError: wrong"]
    visible_only = graded("check(x)", grade=True)
    visible_only.outputs = [NotebookNode(output_type="stream", name="stdout", text="check(x, seed=11)")]
    assert ScrubHiddenTracebacks().preprocess_cell(visible_only, {}, 0)[0].outputs[0].text == "check(x, seed=11)"


# --- the tamper probe's program ------------------------------------------------------------------

def run_program(code: str):
    ns = {}
    exec(code, ns)
    assert set(ns) == {"__builtins__", probe.RESULT}, "the probe leaves only its result in the student's namespace"
    return ns[probe.RESULT]


@pytest.fixture(scope="module")
def baseline():
    return run_program(probe.snapshot_code())


def test_the_snapshot_is_plain_data_that_travels_as_a_literal(baseline):
    assert {"torch:allclose", "numpy:allclose", "math:isclose", "builtins:isinstance"} <= set(baseline)
    assert any(name.startswith("glowcourse.checks.") for name in baseline)
    assert all(isinstance(v, int) for v in baseline.values())
    assert eval(repr(baseline), {"__builtins__": {}}) == baseline


def test_an_untouched_process_has_no_problems(baseline):
    assert run_program(probe.probe_code(baseline)) == []


def test_an_object_replaced_since_the_snapshot_is_named(baseline):
    moved = {**baseline, "math:isclose": baseline["math:isclose"] + 1}
    assert run_program(probe.probe_code(moved)) == ["math:isclose was replaced"]
    gone = {**baseline, "torch:not_a_function": 1}
    assert run_program(probe.probe_code(gone)) == ["torch:not_a_function was removed"]


def test_a_patched_function_is_named_and_its_canary_sings(baseline, monkeypatch):
    monkeypatch.setattr(math, "isclose", lambda *a, **k: True)
    assert run_program(probe.probe_code(baseline)) == ["math:isclose was replaced",
                                                       "math.isclose no longer fails where it must"]


# --- the sandbox's command line ------------------------------------------------------------------

@pytest.fixture
def fake_bwrap(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bwrap").write_text("#!/bin/sh\n")
    (bindir / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AG_UNIT_SECRET", "token")  # the grader's environment must not reach the kernel
    return str(bindir / "bwrap")


def options(cmd: list[str], flag: str, n: int) -> list[tuple[str, ...]]:
    return [tuple(cmd[i + 1:i + 1 + n]) for i, arg in enumerate(cmd) if arg == flag]


def test_sandbox_command_isolates_the_kernel_and_applies_every_limit(tmp_path, fake_bwrap):
    limits = Limits(memory_mb=1000, cpu_s=77, processes=33, notebook_timeout=44, threads=3)
    cmd = sandbox.command(["python", "-m", "ipykernel"], tmp_path / "scratch", limits, shared=["/tmp/ipc"])
    # the wall clock outside the sandbox, where the kernel cannot kill it
    assert cmd[:4] == ["timeout", "-s", "KILL", "44"] and cmd[4] == fake_bwrap
    for flag in ("--unshare-all", "--die-with-parent", "--clearenv"):
        assert flag in cmd
    assert options(cmd, "--cap-drop", 1) == [("ALL",)] and options(cmd, "--uid", 1) == [("65534",)]
    assert options(cmd, "--bind", 2) == [(str(tmp_path / "scratch"), sandbox.WORK), ("/tmp/ipc", "/tmp/ipc")]
    readable = [src for src, _ in options(cmd, "--ro-bind", 2)]
    for secret in (course.SOLUTIONS, course.ROOT / "autograder", course.ROOT / "course"):
        assert not any(Path(secret) == Path(p) or Path(p) in Path(secret).parents for p in readable), secret
    env = dict(options(cmd, "--setenv", 2))
    assert env["HOME"] == sandbox.WORK and env["OMP_NUM_THREADS"] == "3"
    assert "AG_UNIT_SECRET" not in env and set(env) <= set(sandbox.ENV_KEEP) | {
        "HOME", "TMPDIR", "MPLCONFIGDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE"}
    tail = cmd[cmd.index("prlimit"):]
    assert tail == ["prlimit", f"--as={1000 * 2**20}", "--cpu=77", "--nproc=33", "--core=0", "--",
                    "python", "-m", "ipykernel"]


def test_sandbox_command_joins_the_pids_cgroup_before_anything_runs(tmp_path, fake_bwrap):
    cmd = sandbox.command(["k"], tmp_path, Limits(), cgroup=Path("/sys/fs/cgroup/pids/ag/x"))
    assert cmd[:2] == ["sh", "-c"] and '"/sys/fs/cgroup/pids/ag/x/cgroup.procs"' in cmd[2] and 'exec "$@"' in cmd[2]
    assert cmd[4:9] == ["timeout", "-s", "KILL", str(Limits().notebook_timeout), fake_bwrap]


def test_sandbox_command_without_bubblewrap_refuses(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
        sandbox.command(["k"], tmp_path, Limits())


# --- the limits ----------------------------------------------------------------------------------

def test_limits_are_frozen_and_share_the_cores_among_workers():
    limits = Limits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.cell_timeout = 1
    cores = os.cpu_count() or 1
    assert Limits(workers=2).kernel_threads() == max(1, cores // 2)
    assert Limits(workers=10**6).kernel_threads() == 1 and Limits(threads=5, workers=2).kernel_threads() == 5
    assert Limits(workers=0).workers == 1


# --- reading what went wrong ---------------------------------------------------------------------

@pytest.mark.parametrize("text, status", [
    ("nbclient.exceptions.DeadKernelError: Kernel died", "kernel died"),
    ("RuntimeError: Kernel didn't respond in 60 seconds", "kernel failed to start"),
    ("nbclient.exceptions.CellTimeoutError: A cell timed out", "timeout"),
    ("Traceback\n  ValueError: bad cell\nsqlalchemy.exc.OperationalError: database is locked\n"
     "nbgrader.utils.NbGraderException: Please see the error log", "error: sqlalchemy.exc.OperationalError: database is locked"),
    ("something went wrong", "error: autograde failed (see .nbgrader/logs)"),
    ("KeyError: " + "x" * 300, "error: KeyError: " + "x" * 110),
])
def test_failure_status_names_the_cause(text, status):
    assert failure_status({"error": text, "log": ""}) == status
    assert failure_status({"error": None, "log": text}) == status


@pytest.mark.parametrize("content, status", [
    (b"", "unreadable: empty file"),
    (b"\xff\xfe\x00", "unreadable: not UTF-8 text"),
    (b'{"cells": [', "unreadable: invalid JSON (line 1)"),
    (b'{"hello": 1}', "unreadable: not a notebook (no cells)"),
    (b'{"cells": [], "nbformat": 5}', "unreadable: notebook format 5, expected 4"),
    (b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', None),
])
def test_unreadable_says_why(tmp_path, content, status):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    assert unreadable(path) == status


# --- results and shards --------------------------------------------------------------------------

def test_rows_round_trip_through_grades_csv_and_print_as_a_table(tmp_path):
    rows = [Row("ada", "01_x", 12.0, 12.0, "ok", "nb: fixed"), Row("bob", "?", 0.0, None, "wrong file name: a.ipynb")]
    write_csv(rows, tmp_path / "grades.csv")
    assert read_csv(tmp_path / "grades.csv") == rows
    header, rule, first, second = format_table(rows).splitlines()
    assert header.split() == FIELDS and set(rule) == {"-", " "}
    assert first.split() == ["ada", "01_x", "12", "12", "ok", "nb:", "fixed"]
    assert [line.index("ok") for line in (first,)] == [header.index("status")]  # the columns line up
    assert [r.outcome() for r in rows + [Row("c", "a", 0.0, 7.0, "ok"), Row("d", "a", 3.0, 7.0, "ok")]] == [
        "full", "wrong file name", "zero", "partial"]


def test_shards_split_every_student_into_exactly_one_stable_slice():
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(SystemExit, match="expected i/N"):
            parse_shard(bad)
    students = [f"s{i}" for i in range(50)]
    slices = [shard_of(s, 3) for s in students]
    assert set(slices) == {1, 2, 3} and slices == [shard_of(s, 3) for s in students]
    assert shard_of("ada", 4) == 2  # sha256 of the id, not Python's per-process hash(): the same on every machine


# --- the wiring --------------------------------------------------------------------------------

def test_grading_runs_nbgraders_own_steps_with_the_course_classes_and_the_given_limits():
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.preprocessors import ClearHiddenTests, Execute

    from autograder.grading.execute import GuardedExecute
    from autograder.grading.nbgrader_setup import grading_config

    limits = Limits(cell_timeout=7, memory_mb=1000, workers=2)
    config = grading_config(limits)
    assert config.Execute.timeout == 7
    nbgraders = Autograde.class_traits()["autograde_preprocessors"].default()
    assert config.Autograde.autograde_preprocessors == [GuardedExecute if p is Execute else p for p in nbgraders]
    feedback = config.GenerateFeedback.preprocessors
    assert set(GenerateFeedback.class_traits()["preprocessors"].default()) < set(feedback)
    # the outputs are scrubbed while the hidden code is still there to say what to scrub
    assert feedback.index(ScrubHiddenTracebacks) < feedback.index(ClearHiddenTests)
    assert sandbox.SandboxKernelManager(config=config).limits == limits  # (traitlets hands each a copy)


def test_every_option_of_every_command_has_help_with_its_default():
    """`python -m autograder <command> --help` documents every option and says its default."""
    import argparse

    from autograder.__main__ import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub.choices) == len(set(sub.choices)) >= 9
    for name, command in sub.choices.items():
        assert any(c.dest == name and c.help for c in sub._choices_actions), f"{name} has no summary"
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{what} has no help text"
            if action.option_strings and not action.required:
                assert "default" in action.help, f"{what} does not say its default"


def test_top_level_help_lists_each_command_once():
    import re

    from autograder.__main__ import build_parser

    text = build_parser().format_help()
    for name in ("release", "grade", "merge", "selfcheck", "demo", "hostile", "execute", "report", "book"):
        assert len(re.findall(rf"^\s+{name}\s", text, re.M)) == 1, (name, text)


def test_the_gradebook_schema_revision_is_what_the_alembic_command_says():
    """nbgrader asks the ``alembic`` command for it when it creates a gradebook; the course asks
    alembic's API in-process (seconds faster): the same answer, from the same files."""
    from nbgrader.dbutil import _temp_alembic_ini

    course.ensure_tools_on_path()
    with _temp_alembic_ini("sqlite:////tmp/gradebook.db") as ini:
        heads = subprocess.check_output(["alembic", "-c", ini, "heads"], text=True)
    assert heads.split()[0] == course._alembic_head() and len(course._alembic_head()) >= 12
