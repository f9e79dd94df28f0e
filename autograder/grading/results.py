"""A grading run's results: one :class:`Row` per student and assignment, ``grades.csv``, the table.

``status`` is ``ok`` or a short reason: ``missing``, ``missing notebook: ...``, ``missing
exercise: ...``, ``unreadable: ...``, ``wrong file name: ...``, ``timeout``, ``kernel died``,
``tampering detected: ...``, ``error: ...``. ``notes`` says what was repaired, and first, as
``course's own answer: <exercise>: ...``, any answer that is or wraps the course package's own
version of that exercise (scored as it is; for the instructor to look at).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["FIELDS", "LMS_IDS", "Row", "write_csv", "read_csv", "write_lms_ids", "read_lms_ids", "format_table", "elide",
           "column_widths", "text_table"]

LMS_IDS = "lms_ids.json"  # next to grades.csv: student -> the LMS user ids its files carried

FIELDS = ["student", "assignment", "score", "max_score", "status", "notes"]


@dataclass
class Row:
    student: str
    assignment: str
    score: float
    max_score: float | None  # None: the assignment is unknown (a file that could not be placed)
    status: str
    notes: str = ""

    def as_csv(self) -> dict:
        d = asdict(self)
        for k in ("score", "max_score"):
            d[k] = "" if d[k] is None else f"{d[k]:g}"
        return d

    def outcome(self) -> str:
        """``full``, ``zero`` or ``partial`` for a graded row; else the status's first word (``missing``, ...)."""
        if self.status != "ok":
            return self.status.split(":")[0]
        if self.score == self.max_score:
            return "full"
        return "zero" if self.score == 0 else "partial"


def write_csv(rows: list[Row], path: Path) -> None:
    """Write ``grades.csv`` atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())
    os.replace(tmp, path)


def read_csv(path: Path) -> list[Row]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"{path}: not a grades.csv of this autograder (no column {', '.join(sorted(missing))})")
        return [Row(r["student"], r["assignment"], float(r["score"] or 0),
                    float(r["max_score"]) if r["max_score"] else None, r["status"], r.get("notes", ""))
                for r in reader]


def write_lms_ids(ids: dict[str, list[str]], path: Path) -> None:
    """The LMS's own user ids of the students (a Canvas zip names each file with one), for
    ``export`` to match a gradebook exactly; no file when there are none."""
    if ids:
        Path(path).write_text(json.dumps({s: sorted(set(v)) for s, v in sorted(ids.items())}, indent=1) + "\n")


def read_lms_ids(path: Path) -> dict[str, list[str]]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned plain-text table, header first."""
    data = [FIELDS] + [[r.as_csv()[k] for k in FIELDS] for r in rows]
    widths = [max(len(str(line[i])) for line in data) for i in range(len(FIELDS))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in data]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- text that fits a terminal: the instructor commands print with these -----------------------

def elide(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` characters, cut after a whole word with "...".

    A status is never cut mid-token (``tampering detected: torch:allcl`` would read as another
    name); only a first word longer than the whole width is, there being nothing else to keep.
    """
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    kept = ""
    for word in text.split(" "):
        candidate = f"{kept} {word}" if kept else word
        if len(candidate) > width - 3:
            break
        kept = candidate
    return (kept.rstrip(",;") if kept else text[: width - 3]) + "..."


def column_widths(data: list[list[str]], width: int, sep: int = 2, least: int | list[int] = 8) -> list[int]:
    """Column widths for ``data`` (header first) that sum, with ``sep`` between, to at most
    ``width``: each column as wide as its widest cell, the widest one narrowed first, none below
    its ``least`` (one number, or one per column: a column that must stay whole gets its own
    width), so that short columns (names, counts) stay whole."""
    widths = [max(len(str(line[i])) for line in data) for i in range(len(data[0]))]
    floor = [min(w, f) for w, f in zip(widths, least if isinstance(least, list) else [least] * len(widths))]
    while sum(widths) + sep * (len(widths) - 1) > width:
        narrowable = [i for i in range(len(widths)) if widths[i] > floor[i]]
        if not narrowable:
            break
        widths[max(narrowable, key=lambda j: widths[j])] -= 1
    return widths


def text_table(header: list[str], rows: list[list[str]], width: int = 100, *, wrap: bool = True,
               whole: tuple[int, ...] = ()) -> str:
    """``rows`` as aligned columns at most ``width`` wide, header and rule first.

    A cell longer than its column wraps onto further lines at word boundaries (``wrap``; a
    column is narrowed no further than its longest word) or is cut after a whole word with
    "..." (:func:`elide`). The columns numbered in ``whole`` are never narrowed.
    """
    import textwrap

    data = [[" ".join(str(v).split()) for v in line] for line in [header] + rows]
    natural = [max(len(line[i]) for line in data) for i in range(len(header))]
    longest_word = [max((len(w) for line in data for w in line[i].split()), default=1) for i in range(len(header))]
    least = [natural[i] if i in whole else (longest_word[i] if wrap else 8) for i in range(len(header))]
    widths = column_widths(data, width, least=least)
    if sum(widths) + 2 * (len(widths) - 1) > width:  # the longest words alone are too wide: break them
        widths = column_widths(data, width, least=[natural[i] if i in whole else 4 for i in range(len(header))])
    out = []
    for n, line in enumerate(data):
        if wrap:  # a word wider than the whole table still has to break somewhere
            parts = [textwrap.wrap(v, w, break_on_hyphens=False) or [""] for v, w in zip(line, widths)]
        else:
            parts = [[elide(v, w)] for v, w in zip(line, widths)]
        for k in range(max(len(p) for p in parts)):
            out.append("  ".join((p[k] if k < len(p) else "").ljust(w) for p, w in zip(parts, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
