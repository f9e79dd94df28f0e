"""``GuardedExecute``: nbgrader's ``Execute`` with the kernel sandboxed and the tests guarded.

Grading replaces nbgrader's ``Execute`` preprocessor with this one (``nbgrader_setup.py``):

- the kernel is started by ``SandboxKernelManager`` (``sandbox.py``), under the run's limits;
- before the first cell, a snapshot of what the checks rely on is taken in the kernel
  (``probe.py``); before each test cell a probe compares against it. If anything was
  replaced, the test cell is not run: it gets a ``TamperingDetected`` error (so it scores 0)
  and the row's status says what was found;
- before each test cell, the objects its exercise defines are inspected in the kernel
  (``probe.references_code``): an answer that is, subclasses or whose code reaches the
  course's own version of that exercise (``glowcourse.flows``, ``glowcourse.density``, ...)
  is listed in ``references``; the score stands;
- output on stderr in a test cell (a ``UserWarning`` from correct code) is shown as stdout:
  nbgrader would score any stderr output 0, but the checks fail by raising.

What was found is written next to the autograded notebook (``<name>`` + ``REPORT_SUFFIX``),
because nbgrader clears notebook metadata after execution; the grader reads and removes it.
"""
from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

import nbformat
from nbclient.util import run_sync
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute

from .. import cells, course
from . import probe
from .sandbox import SandboxKernelManager

__all__ = ["GuardedExecute", "REPORT_SUFFIX", "defined_names", "exercise_names"]

REPORT_SUFFIX = ".autograder.json"


def defined_names(source: str) -> list[str]:
    """The names a cell defines at its top level (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
    return list(dict.fromkeys(names))


@functools.lru_cache(maxsize=None)
def exercise_names(assignment: str) -> dict[str, tuple[str, ...]]:
    """grade_id -> the names the course's solution cell defines (what its checks are given)."""
    out = {}
    for nb in course.notebooks(assignment):
        for gid, source in cells.solutions(nbformat.read(nb.source, 4)).items():
            out[gid] = tuple(defined_names(source))
    return out


class GuardedExecute(Execute):
    """nbgrader's ``Execute``, with the kernel in the sandbox and a tamper probe before each test
    cell (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)
        self._baseline = None
        self.tampering: list[str] = []
        self.references: list[str] = []
        self.probe_error: str | None = None
        self._assignment = None

    async def _user_expression(self, code: str):
        msg_id = self.kc.execute(code, silent=True, store_history=False, user_expressions={"r": probe.RESULT})
        reply = await self.async_wait_for_reply(msg_id)
        content = (reply or {}).get("content", {})
        value = content.get("user_expressions", {}).get("r", {})
        if value.get("status") != "ok":
            return None
        try:
            return ast.literal_eval(value["data"]["text/plain"])
        except (KeyError, ValueError, SyntaxError):
            return None

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if self._baseline is None:
            self._baseline = await self._user_expression(probe.snapshot_code())
            if self._baseline is None:  # before any student code: the kernel, not the student
                self.probe_error = "the tamper probe's snapshot failed before any student cell ran"
                self._baseline = {}
        if cells.is_test(cell) and cell.source.strip() and self.probe_error:
            cell.outputs = [NotebookNode(output_type="error", ename="ProbeFailed", evalue=self.probe_error,
                                         traceback=[f"ProbeFailed: this check was not run: {self.probe_error}"])]
            return cell
        if cells.is_test(cell) and cell.source.strip():
            await self._examine_exercise(cell_index)
            problems = await self._user_expression(probe.probe_code(self._baseline))
            if problems is None:
                problems = ["the tamper probe could not run"]
            if problems:
                for p in problems:
                    if p not in self.tampering:
                        self.tampering.append(p)
                cell.outputs = [NotebookNode(output_type="error", ename="TamperingDetected",
                                             evalue="; ".join(problems),
                                             traceback=["TamperingDetected: this check was not run because "
                                                        + "; ".join(problems)])]
                return cell
        cell = await super().async_execute_cell(cell, cell_index, execution_count=execution_count,
                                                store_history=store_history)
        if cells.is_test(cell):
            for out in cell.outputs:
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    out["name"] = "stdout"
        return cell

    async def _examine_exercise(self, test_index: int) -> None:
        """Note an exercise whose answer is the course's own reference. At each of its test cells:
        an answer swapped for the reference between two of them is noted too."""
        solution = next((c for c in reversed(self.nb.cells[:test_index]) if cells.is_solution(c)), None)
        if solution is None:
            return
        gid = cells.grade_id(solution) or ""
        try:
            names = exercise_names(self._assignment)[gid] if self._assignment else None
        except (KeyError, SystemExit):
            names = None
        names = names or defined_names(solution.source)
        found = await self._user_expression(probe.references_code(names, probe.EXTRA_REFERENCES.get(gid, [])))
        for what in found or []:
            if f"{gid}: {what}" not in self.references:
                self.references.append(f"{gid}: {what}")

    # nbclient binds its synchronous wrapper to its own coroutine: rebind it to this one.
    execute_cell = run_sync(async_execute_cell)

    def preprocess(self, nb, resources=None, km=None):
        self._baseline, self.tampering, self.references, self.probe_error = None, [], [], None
        self._assignment = (resources or {}).get("nbgrader", {}).get("assignment")
        try:
            return super().preprocess(nb, resources, km=km)
        finally:
            meta = (resources or {}).get("metadata", {})
            if meta.get("path") and meta.get("name"):
                report = Path(meta["path"]) / (meta["name"] + REPORT_SUFFIX)
                report.write_text(json.dumps({"tampering": self.tampering, "references": self.references,
                                              "probe_error": self.probe_error}))
