"""Feedback without the hidden tests: ``ScrubHiddenTracebacks``, an nbgrader preprocessor.

nbgrader's ``ClearHiddenTests`` removes the hidden tests from a test cell's source before the
feedback HTML is written, but not from the cell's outputs: a failed hidden check's traceback
quotes the failing line with its neighbours. This preprocessor, run just before it, drops
from the error and stream outputs of every test cell each line that quotes a hidden line or
a hidden-tests marker.
"""
from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

from .. import cells

__all__ = ["ScrubHiddenTracebacks", "scrub"]

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
