"""A grading run's results: one :class:`Row` per student and assignment, ``grades.csv``, the table.

``status`` is ``ok`` or a short reason: ``missing``, ``missing notebook: ...``, ``missing
exercise: ...``, ``unreadable: ...``, ``wrong file name: ...``, ``timeout``, ``kernel died``,
``tampering detected: ...``, ``error: ...``. ``notes`` says what was repaired, and first, as
``course's own answer: <exercise>: ...``, any answer that is or wraps the course package's own
version of that exercise (scored as it is; for the instructor to look at).
"""
from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["FIELDS", "Row", "write_csv", "read_csv", "format_table"]

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


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned plain-text table, header first."""
    data = [FIELDS] + [[r.as_csv()[k] for k in FIELDS] for r in rows]
    widths = [max(len(str(line[i])) for line in data) for i in range(len(FIELDS))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in data]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
