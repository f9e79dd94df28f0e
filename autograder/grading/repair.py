"""Repair a handed-in notebook before nbgrader sees it.

nbgrader identifies cells by their ``nbgrader`` metadata. Notebooks that come back from a
class lose or scramble it: a student re-creates a cell (its metadata is gone), Colab rewrites
ids and adds its own metadata, an old tool saves nbformat 4.0, a test cell gets duplicated,
deleted or edited, a solution cell is turned into markdown. nbgrader then grades 0 without a
word, or (a cell id that occurs twice) aborts a whole batch.

``repair`` rebuilds the notebook from the *released* notebook, which is the template every
student started from: every cell comes from the template (markdown, given code, test cells,
with their metadata and ids), except the solution cells, whose content comes from the
student. A solution cell is found in the submission

1. by its ``grade_id`` when the student's cell still carries one, else
2. by content: the lines the release put around the blank (``def actnorm_init(x):``, the
   docstring) or the name it defines, in a code cell or a markdown cell.

Cells the student added (a helper function, a plot) are kept after the solution cell they
followed. What was repaired is reported; a solution cell found nowhere is reported as a
missing exercise (the row is still graded: that exercise scores 0).
"""
from __future__ import annotations

import re
import uuid
import warnings
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode

from .. import cells as nbcells

__all__ = ["Repair", "repair"]

STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()", "raise NotImplementedError", "pass", "..."}
DEFINES = re.compile(r"^\s*(?:def|class)\s+(\w+)", re.M)
FENCE = re.compile(r"^```[\w+-]*\s*$", re.M)


@dataclass
class Repair:
    notebook: NotebookNode
    fixes: list[str] = field(default_factory=list)     # what was repaired (informational)
    missing: list[str] = field(default_factory=list)   # solution cells found nowhere


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def _markers(template_source: str) -> set[str]:
    return {line for line in _lines(template_source) if line not in STUB_LINES and not line.startswith("#")}


def _similarity(template_source: str, student_source: str) -> float:
    """How much of the template's own text the student's cell still contains (0..1)."""
    marks = _markers(template_source)
    if not marks:
        return 0.0
    score = len(marks & _lines(student_source)) / len(marks)
    names = set(DEFINES.findall(template_source))
    if names and names <= set(DEFINES.findall(student_source)):
        score = max(score, 1.0)
    return score


def _as_code(cell) -> str:
    """The code of a student's cell; a markdown cell loses its ``` fences."""
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(src)
    if cell.get("cell_type") == "markdown":
        src = FENCE.sub("", src).strip("\n")
    return src


def repair(text: str, template: NotebookNode) -> Repair:
    """Rebuild the submission ``text`` (notebook JSON) on ``template`` (the released notebook)."""
    with warnings.catch_warnings():  # missing or duplicate ids: exactly what is being repaired
        warnings.simplefilter("ignore")
        raw = nbformat.reads(text, as_version=4)
    # Cells without ids (nbformat 4.0-4.4, as Colab saves) are routine, not worth a note.
    fixes: list[str] = []
    cells = [c for c in raw.cells if c.get("cell_type") in ("code", "markdown", "raw")]
    for c in cells:
        c.source = "".join(c.source) if isinstance(c.get("source"), list) else c.get("source", "")

    tcells = template.cells
    solution_idx = [i for i, c in enumerate(tcells) if nbcells.is_solution(c)]
    test_idx = [i for i, c in enumerate(tcells) if nbcells.is_test(c)]
    by_gid = {nbcells.grade_id(c): i for i, c in enumerate(tcells) if nbcells.grade_id(c)}

    owner: dict[int, int] = {}   # student cell index -> template cell index it stands for
    found: dict[int, int] = {}   # template solution cell index -> student cell index
    # 1. Solution cells by grade_id (the first carrying it that is not the untouched stub).
    for t in solution_idx:
        gid = nbcells.grade_id(tcells[t])
        cands = [s for s, c in enumerate(cells) if nbcells.grade_id(c) == gid and s not in owner]
        if cands:
            changed = [s for s in cands if cells[s].source.strip() != tcells[t].source.strip()]
            pick = (changed or cands)[0]
            found[t], owner[pick] = pick, t
            if len(cands) > 1:
                fixes.append(f"{gid}: {len(cands)} copies, graded the first one edited")
    # 2. The others by content, best match first.
    pairs = sorted(((_similarity(tcells[t].source, _as_code(c)), t, s) for t in solution_idx if t not in found
                    for s, c in enumerate(cells) if s not in owner), reverse=True)
    by_content, from_markdown = [], []
    for score, t, s in pairs:
        if score >= 0.5 and t not in found and s not in owner:
            found[t], owner[s] = s, t
            gid = nbcells.grade_id(tcells[t])
            (from_markdown if cells[s].cell_type == "markdown" else by_content).append(gid)
    if by_content:
        fixes.append(f"nbgrader metadata lost: found {', '.join(sorted(by_content))} by content")
    if from_markdown:
        fixes.append(f"{', '.join(sorted(from_markdown))}: a markdown cell, turned back into code")
    missing = [nbcells.grade_id(tcells[t]) for t in solution_idx if t not in found]

    # Test cells and given cells: recognised so they are not kept as extras; restored from the template.
    for t in test_idx:
        gid = nbcells.grade_id(tcells[t])
        mine = [s for s, c in enumerate(cells) if s not in owner and nbcells.grade_id(c) == gid]
        if not mine:
            mine = [s for s, c in enumerate(cells) if s not in owner and c.cell_type == "code"
                    and _similarity(tcells[t].source, c.source) >= 0.5]
        if not mine:
            fixes.append(f"{gid}: test cell deleted, restored")
        elif len(mine) > 1:
            fixes.append(f"{gid}: test cell duplicated, restored once")
        elif nbcells.visible(cells[mine[0]].source) != nbcells.visible(tcells[t].source):
            fixes.append(f"{gid}: test cell edited, restored")
        for s in mine:
            owner[s] = t
    given = {c.source.strip(): i for i, c in enumerate(tcells) if i not in found}
    for s, c in enumerate(cells):
        if s in owner:
            continue
        t = by_gid.get(nbcells.grade_id(c))
        if t is None:
            t = given.get(c.source.strip())
        if t is None and c.cell_type == "code":
            best = max(((_similarity(tc.source, c.source), i) for i, tc in enumerate(tcells)
                        if tc.cell_type == "code" and i not in found), default=(0, None))
            t = best[1] if best[0] >= 0.8 else None
        if t is not None:
            owner[s] = t

    order = [found[t] for t in solution_idx if t in found]
    if order != sorted(order):
        fixes.append("solution cells were reordered: put back in the course's order")

    # Extra code cells the student wrote go after the template cell their predecessor stands for.
    extras: dict[int, list] = {}
    anchor = -1
    for s, c in enumerate(cells):
        if s in owner:
            anchor = owner[s]
        elif c.cell_type == "code" and c.source.strip():
            extras.setdefault(anchor, []).append(c)
    out_cells = [_extra(c) for c in extras.get(-1, [])]
    for t, tc in enumerate(tcells):
        cell = nbformat.from_dict(tc)
        if t in found:
            cell.source = _as_code(cells[found[t]])
            if tc.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        elif tc.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        out_cells.append(cell)
        out_cells += [_extra(c) for c in extras.get(t, [])]
    if any(extras.values()):
        fixes.append(f"kept {sum(len(v) for v in extras.values())} cell(s) the student added")

    nb = nbformat.v4.new_notebook(cells=out_cells, metadata=nbformat.from_dict(template.metadata))
    nb.nbformat, nb.nbformat_minor = 4, max(template.get("nbformat_minor", 5), 5)
    nbformat.validate(nb)
    return Repair(nb, fixes, missing)


def _extra(cell) -> NotebookNode:
    return nbformat.v4.new_code_cell(cell.source, id=f"student-{uuid.uuid4().hex[:8]}")
