"""Feedback without the hidden tests, and a summary that names each check: nbgrader preprocessors.

nbgrader's ``ClearHiddenTests`` removes the hidden tests from a test cell's source before the
feedback HTML is written, but not from the cell's outputs: a failed hidden check's traceback
quotes the failing line with its neighbours. ``ScrubHiddenTracebacks``, run just before it, drops
from the error and stream outputs of every test cell each line that quotes a hidden line or
a hidden-tests marker.

``NameTestCells`` gives the page's summary (the template in ``templates/course_feedback``,
nbgrader's own with its list of cells changed) a name for each test cell where nbgrader writes
"Test cell": the exercise's heading and grade_id, and a note where hidden checks' details are
withheld.
"""
from __future__ import annotations

import re
from pathlib import Path

from jinja2 import BytecodeCache
from nbconvert.exporters import HTMLExporter
from nbgrader.preprocessors import NbGraderPreprocessor

from .. import cells

__all__ = ["ScrubHiddenTracebacks", "scrub", "NameTestCells", "CourseFeedbackExporter", "TEMPLATES"]

TEMPLATES = Path(__file__).parent / "templates"  # holds course_feedback/, the feedback page's template
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


def scrub(text: str, secrets: list[str]) -> str:
    """Drop every line of ``text`` that quotes a secret line or a hidden-test marker."""
    kept = []
    for line in text.split("\n"):
        plain = ANSI.sub("", line)
        if cells.BEGIN_HIDDEN in plain or cells.END_HIDDEN in plain or any(s in plain for s in secrets):
            continue
        kept.append(line)
    return "\n".join(kept)


class ScrubHiddenTracebacks(NbGraderPreprocessor):
    """Remove the hidden tests' lines from the outputs of the cells that hold them."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cells.BEGIN_HIDDEN in cell.source:
            secrets = cells.hidden_lines(cell.source)
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    out["traceback"] = [scrub(entry, secrets) for entry in out.get("traceback", [])]
                elif out.get("output_type") == "stream":
                    out["text"] = scrub(out.get("text", ""), secrets)
        return cell, resources


HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
WITHHELD_PASSED = "Hidden checks ran too and passed; their details are withheld."
WITHHELD = "This cell also runs hidden checks; their details are withheld."


class NameTestCells(NbGraderPreprocessor):
    """What the feedback page's summary says about each test cell, in place of nbgrader's
    "Test cell": the heading of the exercise it checks (the last markdown heading above it), the
    exercise's grade_id (the solution cell above it) and, for a cell with hidden checks, that
    their details are withheld. Run before ``ClearHiddenTests`` (it reads the hidden-tests
    marker) and after ``GetGrades`` (it reads the score); the template
    (``templates/course_feedback``) reads ``resources["course_feedback"][grade_id]``."""

    def preprocess(self, nb, resources):
        title, exercise, named = None, None, {}
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                headings = HEADING.findall(cell.source)
                title = headings[-1] if headings else title
            elif cells.is_solution(cell):
                exercise = cells.grade_id(cell)
            elif cells.is_test(cell) and cells.grade_id(cell):
                hidden = None
                if cells.BEGIN_HIDDEN in cell.source:
                    meta = cells.meta(cell)
                    passed = meta.get("score") is not None and float(meta["score"]) >= float(meta.get("points", 0))
                    hidden = WITHHELD_PASSED if passed else WITHHELD
                named[cells.grade_id(cell)] = {"title": title, "exercise": exercise, "hidden": hidden}
        resources["course_feedback"] = named
        return nb, resources


class _CompiledTemplates(BytecodeCache):
    """Jinja's compiled templates, kept for the life of the grading process: nbgrader makes a new
    exporter (and Jinja environment) for each submission's feedback, which would compile the
    same templates every time. A template's key includes a checksum of its source."""

    def __init__(self):
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket):
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket):
        self.compiled[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledTemplates()


class CourseFeedbackExporter(HTMLExporter):
    """nbgrader's feedback exporter with the course's template. nbgrader's API sets
    ``HTMLExporter.template_name = "feedback"`` for every feedback run; configuration given
    to this subclass by its own name takes precedence over its parent's (traitlets), so
    ``nbgrader_setup`` configures ``CourseFeedbackExporter.template_name``."""

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = _COMPILED
        return environment
