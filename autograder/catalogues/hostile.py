"""A catalogue of mangled, broken and hostile submissions, each with the row it must get.

Every case is one student of a class folder (``write_class``); ``tests/test_hostile.py``
grades the folder with the real ``grade`` command (sandbox, probes, two workers) and checks
each row against ``Case.expect``:

- ``"full"``: full marks and status ``ok`` (a correct answer in mangled form);
- ``"zero"``: score 0 (a hostile submission that must not gain anything);
- ``"partial"``: 0 < score < max;
- ``"at most blank"``: no more than the blank notebook scores (0 here);

and ``Case.status``: the start of the status it must have (``"ok"``, ``"tampering detected"``,
``"kernel died"``, ...). ``python -m autograder hostile --out DIR`` writes and grades it.
"""
from __future__ import annotations

import copy
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .. import cells, course
from ..grading.results import text_table
from . import samples

__all__ = ["Case", "cases", "write_class", "matches", "unexpected", "case_lines", "verdict", "CANARY"]

NB1 = course.Notebook("01_change_of_variables", "change_of_variables")
NB2 = course.Notebook("02_actnorm", "actnorm")
NB3 = course.Notebook("03_invertible_conv", "invertible_conv")
NB4 = course.Notebook("04_affine_coupling", "affine_coupling")
CANARY = "HOSTILE_CANARY"  # a hostile case that managed to write would leave a file with this name


@dataclass
class Case:
    name: str
    notebook: course.Notebook
    expect: str                    # full | zero | partial | at most blank
    status: str                    # the row's status starts with this
    make: object = None            # () -> bytes of the .ipynb (or of whatever is handed in)
    file_name: str | None = None   # hand in under another name
    why: str = ""


def _nb(notebook) -> dict:
    return json.loads(nbformat.writes(notebook))


def _bytes(d: dict) -> bytes:
    return json.dumps(d, indent=1).encode()


def _grade_cells(d: dict, *, solution: bool) -> list[int]:
    """Indices of the solution cells (``solution=True``) or of the test cells of a notebook dict."""
    return [i for i, c in enumerate(d["cells"]) if (cells.is_solution(c) if solution else cells.is_test(c))]


def _code(source: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


def _insert_before_first_test(d: dict, source: str) -> dict:
    d["cells"].insert(_grade_cells(d, solution=False)[0], _code(source))
    return d


def _filled(nb) -> dict:
    return _nb(samples.filled(nb))


def _blank(nb) -> dict:
    return _nb(samples.blank(nb))


def _strip_metadata(d: dict) -> dict:
    for c in d["cells"]:
        c["metadata"] = {}
    return d


def _colab(d: dict) -> dict:
    d["metadata"] = {"colab": {"provenance": [], "name": "actnorm.ipynb"}, "accelerator": "GPU",
                     "kernelspec": {"name": "python3", "display_name": "Python 3"},
                     "language_info": {"name": "python"}}
    for i, c in enumerate(d["cells"]):
        c["id"] = f"colabid{i:04d}"
        c["metadata"] = {"id": f"x{i}AbC", "colab": {"base_uri": "https://localhost:8080/"}}
    return d


def _v40(d: dict) -> dict:
    d["nbformat_minor"] = 0
    for c in d["cells"]:
        c.pop("id", None)
    return d


def _v3(nb) -> bytes:
    return nbformat.writes(nb, version=3).encode()


def _duplicate_test(d: dict) -> dict:
    i = _grade_cells(d, solution=False)[0]
    d["cells"].insert(i, copy.deepcopy(d["cells"][i]))
    return d


def _delete_tests(d: dict) -> dict:
    for i in reversed(_grade_cells(d, solution=False)[1:]):
        del d["cells"][i]
    return d


def _tests_pass(d: dict) -> dict:
    for i in _grade_cells(d, solution=False):
        d["cells"][i]["source"] = "pass"
    return d


def _reverse_solutions(d: dict) -> dict:
    idx = _grade_cells(d, solution=True)
    cells = [copy.deepcopy(d["cells"][i]) for i in idx]
    for i, c in zip(idx, reversed(cells)):
        d["cells"][i] = c
    return d


def _markdown_solution(d: dict) -> dict:
    c = d["cells"][_grade_cells(d, solution=True)[0]]
    c.update(cell_type="markdown", source="```python\n" + "".join(c["source"]) + "\n```")
    c.pop("outputs", None)
    c.pop("execution_count", None)
    c["metadata"] = {}
    return d


def _delete_solution(d: dict, gid: str) -> dict:
    d["cells"] = [c for c in d["cells"] if cells.grade_id(c) != gid]
    return d


def _helper_cells(d: dict) -> dict:
    # The student moved a solution's body into a helper of their own, in a new cell above it.
    i = _grade_cells(d, solution=True)[-1]
    src = "".join(d["cells"][i]["source"])
    d["cells"][i]["source"] = "from_my_helper = True\n" + src
    d["cells"].insert(i, _code("def my_helper():\n    return 'a cell the student added'\nmy_helper()"))
    return d


def _warns(d: dict) -> dict:
    # A correct answer that emits a UserWarning every time the checks call it.
    i = _grade_cells(d, solution=True)[0]
    src = "".join(d["cells"][i]["source"])
    d["cells"][i]["source"] = src.replace("    def forward(self, x):\n",
                                          "    def forward(self, x):\n        import warnings\n"
                                          "        warnings.warn('my own reminder: x should be float64')\n", 1)
    assert d["cells"][i]["source"] != src
    return d


def _patch_solution(d: dict, old: str, new: str) -> dict:
    for i in _grade_cells(d, solution=True):
        src = "".join(d["cells"][i]["source"])
        if old in src:
            d["cells"][i]["source"] = src.replace(old, new, 1)
            return d
    raise ValueError(f"{old!r} is in no solution cell")


HOSTILE_WRITES = f"""import os, pathlib
targets = [{str(course.ROOT / CANARY)!r}, {str(course.SOLUTIONS / CANARY)!r}, "/tmp/{CANARY}",
           os.path.expanduser("~/../../{CANARY}")]
for t in targets:
    try:
        pathlib.Path(t).write_text("pwned")
    except OSError as err:
        print("blocked:", t, type(err).__name__)
for db in [{str(course.ROOT / "autograder" / "gradebook.db")!r}]:
    try:
        open(db, "ab").write(b"pwned")
    except OSError as err:
        print("blocked:", db, type(err).__name__)
"""

READ_HIDDEN = f"""import os
secrets = [{str(course.SOLUTIONS)!r}, {str(course.ROOT / "autograder")!r}, {str(course.ROOT / "course")!r}]
found = [p for p in secrets if os.path.exists(p)]
assert not found, found  # nothing to read: the tests cannot be copied into the answers
"""

FORK = """import os, time
children = 0
for _ in range(5000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(1)
        os._exit(0)
    children += 1
print("forked", children, "children before the limit")
assert children < 5000
for _ in range(children):
    try:
        os.wait()
    except ChildProcessError:
        break
"""


# A student's own wrapper of torch.manual_seed, after torch.func has imported torch._dynamo (which
# wraps manual_seed itself): PyTorch's wrapper is accepted, this one is not.
WRAP_MANUAL_SEED = """import functools
import torch
torch.func.jacrev(torch.sin)(torch.zeros(2))  # imports torch._dynamo, which wraps torch.manual_seed
seed = torch.manual_seed
torch.manual_seed = functools.wraps(seed)(lambda s: seed(s))
"""


# Strips asserts on the real shell, and defines a get_ipython that returns a stand-in showing the
# original methods and no AST transformer: the probes take the shell from builtins, not from here.
FAKE_SHELL = """import ast
class NoAssert(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()
real = get_ipython()
real.ast_transformers.append(NoAssert())
class StandIn:
    pass
for m in ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "showtraceback", "_showtraceback",
          "showsyntaxerror", "transform_cell", "should_run_async"):
    setattr(StandIn, m, getattr(type(real), m, None))
stand_in = StandIn()
for a in ("displayhook", "kernel", "input_transformers_post", "input_transformer_manager", "events"):
    setattr(stand_in, a, getattr(real, a))
stand_in.ast_transformers = []
get_ipython = lambda: stand_in
"""


# Aimed at what one kernel could leave for the next (kernels forked from one warm template, or
# started one after the other): every trace is named with LEFTOVER, and the `m_after_leftovers`
# cases, graded after these, look for any of them and break their own answer if they find one.
LEFTOVER = "HOSTILE_LEFTOVER"

LEAVE_PROCESS = f"""import os, subprocess, sys
# A process in a session of its own that outlives this kernel if it can, marking every folder it may write.
code = '''import os, time
while True:
    for d in ("/tmp", "/dev/shm", os.path.expanduser("~"), "/"):
        try:
            open(os.path.join(d, "{LEFTOVER}_process"), "w").write("alive")
        except OSError:
            pass
    time.sleep(0.05)
'''
subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""

LEAVE_THREAD = f"""import threading, time, glowcourse, torch
def linger():  # a thread that keeps patching modules, long after the notebook's last cell
    while True:
        glowcourse.{LEFTOVER}_thread = True
        torch.{LEFTOVER}_thread = True
        time.sleep(0.05)
threading.Thread(target=linger, daemon=False).start()
"""

WRITE_FOR_NEXT = f"""import os, pathlib, glowcourse
places = ["/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd(), "/", os.path.dirname(glowcourse.__file__)]
for d in places:
    try:
        pathlib.Path(d, "{LEFTOVER}_file").write_text("left for the next kernel")
    except OSError as err:
        print("blocked:", d, type(err).__name__)
"""

PATCH_FOR_NEXT = f"""import builtins, os, sys, glowcourse, glowcourse.flows, torch
glowcourse.{LEFTOVER}_patch = True
torch.{LEFTOVER}_patch = True
builtins.{LEFTOVER}_patch = True
os.environ["{LEFTOVER}_patch"] = "1"
sys.path.insert(0, "/tmp/{LEFTOVER}_path")
def hostile_forward(self, x):
    raise RuntimeError("patched by another student")
glowcourse.flows.ActNorm.forward = hostile_forward  # the course's own layer, not the checks
"""

EXHAUST_FDS = """import os
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as err:
    print("file descriptors exhausted after", len(held), type(err).__name__)
"""

KILL_PARENT = """import os, signal
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.kill(os.getppid(), sig)
    except OSError as err:
        print("could not kill the parent:", type(err).__name__)
"""

FIND_LEFTOVERS = f"""import builtins, os, sys, glowcourse, glowcourse.flows, torch
found = []
for d in ("/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd(), "/", os.path.dirname(glowcourse.__file__)):
    try:
        found += [os.path.join(d, f) for f in os.listdir(d) if "{LEFTOVER}" in f]
    except OSError:
        pass
for mod in (glowcourse, torch, builtins):
    found += [f"{{mod.__name__}}.{{a}}" for a in dir(mod) if "{LEFTOVER}" in a]
found += [k for k in os.environ if "{LEFTOVER}" in k] + [p for p in sys.path if "{LEFTOVER}" in p]
if glowcourse.flows.ActNorm.forward.__name__ != "forward":
    found.append("glowcourse.flows.ActNorm.forward")
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        if b"{LEFTOVER}" in open(f"/proc/{{pid}}/cmdline", "rb").read():
            found.append(f"process {{pid}}")
    except OSError:
        pass
print("leftovers of other kernels:", found)
if found:
    ActNorm = None  # what another submission left here must never change this one's grade
"""


def _after_last_test(d: dict, source: str) -> dict:
    d["cells"].insert(_grade_cells(d, solution=False)[-1] + 1, _code(source))
    return d


def _variant(nb, name: str) -> dict:
    chosen = [v for v in samples.variants(nb.assignment) if v["name"] == name]
    return _nb(samples.with_mistake(samples.filled(nb), chosen[0]))


def cases() -> list[Case]:
    """The catalogue: mangled (``m_``), broken (``b_``) and hostile (``h_``) cases on notebooks 1-4."""
    C = Case
    return [
        # -- mangled: a correct answer must keep full marks --------------------------------
        C("m_stripped_metadata", NB1, "full", "ok", lambda: _bytes(_strip_metadata(_filled(NB1))),
          why="every cell lost its nbgrader metadata (re-created cells, a stripping tool)"),
        C("m_stripped_metadata_nb3", NB3, "full", "ok", lambda: _bytes(_strip_metadata(_filled(NB3)))),
        C("m_colab", NB2, "full", "ok", lambda: _bytes(_colab(_filled(NB2))),
          why="Colab's notebook metadata, its cell ids and per-cell metadata"),
        C("m_nbformat_4_0", NB1, "full", "ok", lambda: _bytes(_v40(_strip_metadata(_filled(NB1))))),
        C("m_nbformat_3", NB1, "full", "ok", lambda: _v3(samples.filled(NB1))),
        C("m_duplicated_test", NB1, "full", "ok", lambda: _bytes(_duplicate_test(_filled(NB1))),
          why="a copy-pasted test cell: the same cell id twice aborts plain nbgrader's batch"),
        C("m_deleted_tests", NB2, "full", "ok", lambda: _bytes(_delete_tests(_filled(NB2)))),
        C("m_reordered_solutions", NB1, "full", "ok", lambda: _bytes(_strip_metadata(_reverse_solutions(_filled(NB1))))),
        C("m_markdown_solution", NB2, "full", "ok", lambda: _bytes(_markdown_solution(_filled(NB2)))),
        C("m_helper_cells", NB1, "full", "ok", lambda: _bytes(_helper_cells(_filled(NB1)))),
        C("m_warnings", NB1, "full", "ok", lambda: _bytes(_warns(_filled(NB1))),
          why="a correct answer printing a UserWarning on stderr inside the checks"),
        C("m_torch_func", NB1, "full", "ok", lambda: _bytes(_variant(NB1, "brute-jacrev-vmap")),
          why="torch.func.jacrev imports torch._dynamo, which rebinds torch.manual_seed: PyTorch's own, not tampering"),
        C("m_missing_exercise", NB1, "partial", "missing exercise: bits_per_dim",
          lambda: _bytes(_delete_solution(_filled(NB1), "bits_per_dim"))),
        C("m_no_cells", NB2, "zero", "missing exercise: actnorm", lambda: _bytes({**_blank(NB2), "cells": []})),
        # -- broken ------------------------------------------------------------------------
        C("b_invalid_json", NB1, "zero", "unreadable: invalid JSON", lambda: _bytes(_filled(NB1))[:-200]),
        C("b_empty_file", NB2, "zero", "unreadable: empty file", lambda: b""),
        C("b_not_utf8", NB1, "zero", "unreadable: not UTF-8", lambda: b"\xff\xfe\x00garbage"),
        C("b_not_a_notebook", NB2, "zero", "unreadable: not a notebook", lambda: b'{"hello": "world"}'),
        C("b_wrong_file_name", NB1, "zero", "wrong file name", lambda: _bytes(_filled(NB1)), file_name="Untitled.ipynb"),
        C("b_infinite_loop", NB1, "partial", "timeout",
          lambda: _bytes(_patch_solution(_filled(NB1), "def bits_per_dim(", "def bits_per_dim(*a, **k):\n    while True:\n        pass\n\ndef _unused("))),
        C("b_sys_exit", NB2, "zero", "ok", lambda: _bytes(_patch_solution(_filled(NB2), "class ActNorm", "import sys\nsys.exit(0)\nclass ActNorm"))),
        C("b_os_exit", NB2, "zero", "kernel died", lambda: _bytes(_insert_before_first_test(_filled(NB2), "import os\nos._exit(0)"))),
        C("b_exit_builtin", NB1, "zero", "kernel died", lambda: _bytes(_insert_before_first_test(_filled(NB1), "exit()"))),
        C("b_huge_allocation", NB2, "full", "ok",
          lambda: _bytes(_insert_before_first_test(_filled(NB2), "import torch\nbig = torch.empty(2**40)"))),
        C("b_fork_bomb", NB1, "full", "ok", lambda: _bytes(_insert_before_first_test(_filled(NB1), FORK))),
        # -- hostile -------------------------------------------------------------------------
        C("h_write_outside", NB2, "full", "ok", lambda: _bytes(_insert_before_first_test(_filled(NB2), HOSTILE_WRITES)),
          why="writes to the repository, solutions/, the gradebook: all read-only or absent"),
        C("h_read_hidden_tests", NB1, "at most blank", "ok",
          lambda: _bytes(_insert_before_first_test(_blank(NB1), READ_HIDDEN))),
        C("h_torch_allclose", NB1, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB1), "import torch\ntorch.allclose = lambda *a, **k: True"))),
        C("h_torch_allclose_nb4", NB4, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB4), "import torch\ntorch.allclose = lambda *a, **k: True\n"
                                                   "torch.testing.assert_close = lambda *a, **k: None"))),
        C("h_numpy_allclose", NB1, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB1), "import numpy\nnumpy.allclose = lambda *a, **k: True"))),
        C("h_check_noop", NB2, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB2), "import glowcourse.checks.actnorm as m\n"
                                                   "for name in dir(m):\n    if name.startswith('check_'):\n"
                                                   "        setattr(m, name, lambda *a, **k: print('all good'))"))),
        C("h_check_code_swap", NB1, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB1), "import glowcourse.checks.change_of_variables as m\n"
                                                   "def nothing(*a, **k):\n    return None\n"
                                                   "for f in vars(m).values():\n    if callable(f) and hasattr(f, '__code__'):\n"
                                                   "        try:\n            f.__code__ = nothing.__code__\n"
                                                   "        except ValueError:\n            pass"))),
        C("h_strip_asserts", NB1, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB1), "import ast\nclass NoAssert(ast.NodeTransformer):\n"
                                                   "    def visit_Assert(self, node):\n        return ast.Pass()\n"
                                                   "get_ipython().ast_transformers.append(NoAssert())"))),
        C("h_hide_tracebacks", NB2, "at most blank", "tampering detected",
          lambda: _bytes(_insert_before_first_test(_blank(NB2), "ip = get_ipython()\n"
                                                   "ip.showtraceback = lambda *a, **k: None\n"
                                                   "ip._showtraceback = lambda *a, **k: None"))),
        C("h_wrap_manual_seed", NB1, "zero", "tampering detected: torch:manual_seed",
          lambda: _bytes(_insert_before_first_test(_filled(NB1), WRAP_MANUAL_SEED)),
          why="the student's own wrapper of manual_seed, next to PyTorch's"),
        C("h_fake_get_ipython", NB1, "at most blank", "tampering detected: ast_transformers",
          lambda: _bytes(_insert_before_first_test(_blank(NB1), FAKE_SHELL)),
          why="a get_ipython of the student's own hiding an assert-stripping transformer"),
        C("h_tests_replaced", NB2, "at most blank", "ok", lambda: _bytes(_tests_pass(_blank(NB2))),
          why="test cells edited to `pass`: restored from the source"),
        C("h_custom_exc", NB2, "at most blank", "tampering detected: shell.CustomTB",
          lambda: _bytes(_insert_before_first_test(_blank(NB2), "get_ipython().set_custom_exc((Exception,), "
                                                               "lambda *a, **k: None)")),
          why="IPython's own hook for custom exception handlers, set to show nothing: every failed check would pass"),
        # -- aimed at the next kernel: each does its own work right, then tries to reach the next one
        C("h_leaves_process", NB2, "full", "ok", lambda: _bytes(_insert_before_first_test(_filled(NB2), LEAVE_PROCESS)),
          why="a background process in its own session: killed with the kernel's sandbox"),
        C("h_leaves_thread", NB2, "full", "ok", lambda: _bytes(_after_last_test(_filled(NB2), LEAVE_THREAD)),
          why="a thread patching modules after the last cell: it dies with its kernel"),
        C("h_writes_for_next", NB2, "full", "ok", lambda: _bytes(_insert_before_first_test(_filled(NB2), WRITE_FOR_NEXT)),
          why="files in /tmp, /dev/shm, HOME, the work folder: each kernel has its own, discarded after"),
        C("h_patches_for_next", NB2, "full", "ok", lambda: _bytes(_after_last_test(_filled(NB2), PATCH_FOR_NEXT)),
          why="modules, builtins, environment and the course's ActNorm patched: in this kernel's memory only"),
        C("h_exhausts_file_descriptors", NB2, "full", "ok", lambda: _bytes(_after_last_test(_filled(NB2), EXHAUST_FDS)),
          why="every file descriptor of the kernel taken: a per-process limit"),
        C("h_kills_parent", NB2, "full", "ok", lambda: _bytes(_insert_before_first_test(_filled(NB2), KILL_PARENT)),
          why="the kernel's parent is the sandbox's pid 1, which its own namespace cannot signal"),
        C("m_after_leftovers_1", NB2, "full", "ok",
          lambda: _bytes(_insert_before_first_test(_filled(NB2), FIND_LEFTOVERS)),
          why="graded after the cases above: breaks its own answer if it finds anything they left"),
        C("m_after_leftovers_2", NB2, "full", "ok",
          lambda: _bytes(_insert_before_first_test(_filled(NB2), FIND_LEFTOVERS)),
          why="the same, for the other worker"),
    ]


def write_class(dest: Path) -> dict[str, Case]:
    """Write every case as a student folder ``dest/<case>/<assignment>/<notebook>.ipynb``."""
    out = {}
    for case in cases():
        path = dest / case.name / case.notebook.assignment / (case.file_name or f"{case.notebook.name}.ipynb")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.make())
        out[case.name] = case
    return out


def matches(case: Case, row) -> bool:
    """Whether ``row`` is what ``case`` must get: its score as ``case.expect`` says, its status
    starting with ``case.status``."""
    if row is None:
        return False
    top = row.max_score or 0
    ok_score = {"full": row.score == top and top > 0, "zero": row.score == 0,
                "partial": 0 < row.score < top, "at most blank": row.score == 0}[case.expect]
    return ok_score and row.status.startswith(case.status)


def _rows_of(rows, catalogue: dict[str, Case]) -> dict[str, object]:
    """Each case's own row (None where it has none), by case name; the other rows of the
    class (``missing`` for the assignments a case never handed in) are left out."""
    by_key = {(r.student, r.assignment): r for r in rows}
    return {name: by_key.get((name, case.notebook.assignment)) for name, case in catalogue.items()}


def unexpected(rows, catalogue: dict[str, Case]) -> list[str]:
    """The rows that differ from what their case expects (empty: the catalogue passes)."""
    wrong = []
    for name, row in _rows_of(rows, catalogue).items():
        case = catalogue[name]
        if row is None:
            wrong.append(f"{name}: no row")
        elif not matches(case, row):
            top = row.max_score or 0
            wrong.append(f"{name}: got {row.score:g}/{top:g} {row.status!r}, expected {case.expect} and status {case.status!r}")
    return wrong


def must_get(case: Case) -> str:
    """What ``case`` must get, in words: ``full marks, ok``, ``0, kernel died``, ``<= blank,
    tampering detected`` (no more than the blank notebook scores, with that status), ..."""
    score = {"full": "full marks", "zero": "0", "partial": "partial", "at most blank": "<= blank"}[case.expect]
    return f"{score}, {case.status}"


def got(row) -> str:
    """What a row got, in words: ``12/12 ok``; ``no row`` for None."""
    if row is None:
        return "no row"
    return f"{row.score:g}/{row.max_score or 0:g} {row.status}"


def case_lines(rows, catalogue: dict[str, Case], width: int = 100) -> list[str]:
    """One line per case (header first), at most ``width`` wide: the case, what it must get,
    what it got and whether that matched; a long status is cut after a whole word with "..."
    (grades.csv has it whole)."""
    own = _rows_of(rows, catalogue)
    table = [[name, must_get(case), got(own[name]), "yes" if matches(case, own[name]) else "NO"]
             for name, case in catalogue.items()]
    return text_table(["case", "must get", "got", "matched"], table, width, wrap=False, whole=(0, 3)).splitlines()


def verdict(rows, catalogue: dict[str, Case], width: int = 100) -> tuple[list[str], bool]:
    """The lines that end the hostile run, and whether every case matched: ``all N cases
    matched``, or each case that did not in full (wrapped at word boundaries), then which."""
    wrong = unexpected(rows, catalogue)
    n = len(catalogue)
    if not wrong:
        return [f"all {n} cases matched"], True
    lines = [f"{len(wrong)} of {n} cases did not match:"]
    for w in wrong:
        lines += textwrap.wrap(w, width, initial_indent="  ", subsequent_indent="    ",
                               break_long_words=False, break_on_hyphens=False)
    names = ", ".join(w.split(":", 1)[0] for w in wrong)
    lines += textwrap.wrap(f"{len(wrong)} of {n} cases did not match: {names}", width,
                           break_long_words=False, break_on_hyphens=False)
    return lines, False
