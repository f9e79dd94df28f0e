"""Run a notebook's exercises and checks in-process, without Jupyter or nbgrader.

A fast way to ask "which checks does this answer pass?": the first code cell (the imports,
by the course's convention), then every solution cell, every locked "given" cell and every
test cell in order, the test cells split into their visible part and their hidden part.
Cells without nbgrader metadata (demonstrations, training, plots) are skipped. ``report`` and
the tests use it to show that each catalogued mistake fails its checks and every correct
answer passes them; ``selfcheck`` and ``grade`` remain the real thing.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import nbformat
import torch

from .. import cells, course


@dataclass
class Outcome:
    """What one test cell said."""
    visible: str | None  # None: passed; else the error message
    hidden: str | None
    output: str
    rng_kept: bool = True  # the cell left torch's global random state as it found it


def _run(code: str, ns: dict) -> tuple[str | None, str]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            exec(compile(code, "<cell>", "exec"), ns)
    except BaseException as err:  # noqa: BLE001 (a student's SystemExit is a failure too)
        return f"{type(err).__name__}: {err}", buf.getvalue()
    return None, buf.getvalue()


def run(nb: course.Notebook, answers: dict[str, str] | None = None) -> dict[str, Outcome]:
    """Outcome of every test cell (by grade_id) with ``answers`` (grade_id -> code) in place of
    the solutions; solution cells not in ``answers`` get the reference solution."""
    notebook = nbformat.read(nb.source, 4)
    ns: dict = {"__name__": "__main__"}
    first = next(c for c in notebook.cells if c.cell_type == "code")
    err, _ = _run(first.source, ns)
    if err:
        raise RuntimeError(f"imports cell of {nb.source} failed: {err}")
    results = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        gid = cells.grade_id(cell)
        if cells.is_solution(cell):
            _run((answers or {}).get(gid, cells.strip_solution_markers(cell.source)), ns)
        elif cells.is_test(cell):
            visible, hidden = cells.split_hidden(cell.source)
            state = torch.random.get_rng_state()
            v, out_v = _run(visible, ns)
            h, out_h = _run(hidden, ns) if hidden.strip() else (None, "")
            kept = torch.equal(state, torch.random.get_rng_state())
            results[gid] = Outcome(v, h, out_v + out_h, kept)
        elif cells.is_locked(cell):  # given code (helpers the exercises use)
            err, _ = _run(cell.source, ns)
            if err:
                raise RuntimeError(f"given cell {gid} of {nb.source} failed: {err}")
    return results
