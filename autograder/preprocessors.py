"""nbgrader preprocessors the course adds.

``ScrubHiddenTracebacks`` removes hidden test lines from the tracebacks of failed test cells
before feedback is generated. nbgrader's ``ClearHiddenTests`` removes the hidden code from the
cell source but not from the error output, whose traceback quotes the failing lines with their
context (nbgrader issue #917).
"""
from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BEGIN, END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def hidden_lines(source: str) -> list[str]:
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside and line.strip():
            out.append(line.strip())
    return out


def scrub(text: str, secrets: list[str]) -> str:
    """Drop every line of ``text`` that quotes a secret line or a hidden-test marker."""
    kept = []
    for line in text.split("\n"):
        plain = ANSI.sub("", line)
        if BEGIN in plain or END in plain or any(s in plain for s in secrets):
            continue
        kept.append(line)
    return "\n".join(kept)


class ScrubHiddenTracebacks(NbGraderPreprocessor):
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and BEGIN in cell.source:
            secrets = hidden_lines(cell.source)
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    out["traceback"] = [scrub(entry, secrets) for entry in out.get("traceback", [])]
                elif out.get("output_type") == "stream":
                    out["text"] = scrub(out.get("text", ""), secrets)
        return cell, resources
