"""``grades.csv`` as a gradebook an LMS imports: one row per student, one column per assignment.

``grades.csv`` has one row per student and assignment. An LMS imports the other shape, and
only with its own ids, so the export fills in the instructor's own gradebook export (the
*template*) rather than inventing one:

- **Canvas** (Grades > Export): leading columns ``Student, ID, SIS User ID, SIS Login ID,
  Section`` (some courses add ``Integration ID``), a ``Points Possible`` row under the
  header, then one column per assignment, ``Name (assignment id)``; Canvas matches students
  by their ids and assignments by the id in parentheses (or the exact name). A blank cell
  changes nothing; read-only total columns are ignored on import.
- **Moodle** (Export > Plain text file): ``First name, Last name, ID number, Institution,
  Department, Email address``, one column per grade item (``Assignment: Name (Real)``) and
  ``Last downloaded from this course``. *Import > CSV file* asks which column identifies the
  user (email, username or ID number) and which grade item each column goes to. A blank
  or ``-`` cell means *no grade* (it removes an existing one), and a user it cannot find
  stops the whole import, so no row is ever added to the template.

The template comes back cell for cell except the assignments' cells of the students that were
graded: ids (leading zeros included, never read as numbers), other columns, the separator, a
UTF-8 byte-order mark and the line endings are kept.

**Students** are matched on what ``grade`` knew of them: an id that equals one of the
template's id columns (``ID``, ``SIS User ID``, ``SIS Login ID``, ``Integration ID``;
``ID number``, ``Email address``, ``Username``), as given or as ``collect.student_id`` makes
it folder-safe; otherwise the name an LMS zip carries (Canvas ``smithjane`` from ``Smith,
Jane``, Moodle ``Jane-Smith`` from ``Jane`` ``Smith``), compared as letters and digits only.
Case is ignored. Two candidates for one student, or two students for one gradebook row, are
reported and written nowhere.

**Assignments** go to the column given by ``--map ASSIGNMENT=COLUMN`` (the exact header, or
its name without Canvas's ``(id)`` / Moodle's ``Assignment:`` and ``(Real)``; a header not
in the template adds a new column: Canvas creates the assignment on import, Moodle offers a
*new grade item*), otherwise to the one column whose name is the assignment's, with or
without its number (``02_actnorm`` fits ``ActNorm (4321)``, ``02 ActNorm``, ``Assignment:
actnorm (Real)``).

**Rows with no grade** of the student's work (see :func:`graded`: ``missing``, ``unreadable``,
``wrong file name``, ``error`` ...; a ``timeout``, ``kernel died`` or ``tampering detected``
row *is* a grade) leave the template's cell as the LMS exported it (``ungraded="leave"``,
the default: nothing changes in Canvas, the existing grade or none stays in Moodle), or get 0
(``ungraded="zero"``). Either way each is listed in the summary, and so are gradebook students
with no row, rows that matched no student and assignments with no column.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from .collect import student_id
from .results import Row

__all__ = ["Template", "Export", "graded", "read_template", "export", "write"]

LMSES = ("canvas", "moodle")
CANVAS_IDS = ("ID", "SIS User ID", "SIS Login ID", "Integration ID")
CANVAS_FIXED = ("Student", *CANVAS_IDS, "Section")
POINTS_POSSIBLE = "Points Possible"
MOODLE_IDS = ("ID number", "Email address", "Username")
MOODLE_NAMES = ("First name", "Last name", "Surname")  # older Moodles say Surname
MOODLE_FIXED = (*MOODLE_NAMES, *MOODLE_IDS, "Institution", "Department",
                "Last downloaded from this course")
# Statuses whose score is a grade of the student's work: the rest of the cells ran, or the
# student's own code stopped the kernel or tampered with the checks.
GRADED_PREFIXES = ("ok", "missing exercise", "timeout", "kernel died", "tampering detected")


def graded(row: Row) -> bool:
    """Whether ``row``'s score grades the student's work (else nothing of it was run: nothing handed
    in, an unreadable or misnamed file, the grader's own error). Unknown statuses count as ungraded."""
    return row.status.startswith(GRADED_PREFIXES)


def _compact(text: str) -> str:
    """Letters and digits only, case folded: how names from file names and from a gradebook compare."""
    return re.sub(r"[\W_]+", "", text).casefold()


def _column_name(header: str) -> str:
    """A header without Canvas's ``(assignment id)`` or Moodle's ``Type:`` and ``(Real)`` around the name."""
    name = re.sub(r"\s*\((\d+|Real|Percentage|Letter)\)\s*$", "", header.strip())
    return re.sub(r"^(Assignment|Quiz|Manual item|Workshop|Lesson|External tool)\s*:\s*", "", name, flags=re.I)


@dataclass
class Template:
    """An LMS gradebook export as read: its cells as strings, and how to write it back the same way."""
    lms: str
    table: list[list[str]]  # header first
    delimiter: str = ","
    bom: bool = False
    newline: str = "\r\n"

    @property
    def header(self) -> list[str]:
        return self.table[0]

    def index(self, *names: str) -> int | None:
        """The column of the first of ``names`` in the header (spaces around a header ignored)."""
        stripped = [h.strip() for h in self.header]
        return next((stripped.index(n) for n in names if n in stripped), None)

    def points_row(self) -> int | None:
        """Canvas's ``Points Possible`` row (the first cell, indented by Canvas, says so)."""
        if self.lms != "canvas":
            return None
        return next((i for i, r in enumerate(self.table[1:], 1) if r and r[0].strip().startswith(POINTS_POSSIBLE)), None)

    def student_rows(self) -> list[int]:
        """Rows that are students: some id or name filled in, not the Points Possible row."""
        who = [i for i in (self.index(n) for n in self.id_columns() + self.name_columns()) if i is not None]
        pp = self.points_row()
        return [i for i, r in enumerate(self.table[1:], 1)
                if i != pp and any(j < len(r) and r[j].strip() for j in who)]

    def id_columns(self) -> list[str]:
        return [c for c in (CANVAS_IDS if self.lms == "canvas" else MOODLE_IDS) if self.index(c) is not None]

    def name_columns(self) -> list[str]:
        if self.lms == "canvas":
            return ["Student"]
        return [c for c in MOODLE_NAMES if self.index(c) is not None]

    def cell(self, row: int, column: str) -> str:
        j = self.index(column)
        r = self.table[row]
        return r[j] if j is not None and j < len(r) else ""

    def who(self, row: int) -> str:
        """A gradebook student, for the summary: name and ids as the template has them."""
        if self.lms == "canvas":
            name = self.cell(row, "Student")
        else:
            name = f"{self.cell(row, 'First name')} {self.cell(row, 'Last name') or self.cell(row, 'Surname')}".strip()
        ids = ", ".join(f"{c} {self.cell(row, c)}" for c in self.id_columns() if self.cell(row, c))
        return f"{name} ({ids})" if ids else name

    def keys(self, row: int) -> tuple[set[str], set[str]]:
        """The ids (as given and folder-safe, case folded) and the compacted names this row matches."""
        ids = set()
        for c in self.id_columns():
            v = self.cell(row, c).strip()
            if v:
                ids |= {v.casefold(), student_id(v).casefold()}
        names = set()
        if self.lms == "canvas":
            full = self.cell(row, "Student").strip()
            forms = [full]
            if "," in full:  # Canvas's sortable name, "Last, First": also "First Last"
                last, first = full.split(",", 1)
                forms.append(f"{first} {last}")
        else:
            first = self.cell(row, "First name").strip()
            last = (self.cell(row, "Last name") or self.cell(row, "Surname")).strip()
            forms = [f"{first} {last}", f"{last} {first}"]
        for form in forms:
            if form.strip():
                names |= {_compact(form), _compact(student_id(form))}
        email = self.cell(row, "Email address").strip()
        if "@" in email:  # the part before @ is often the login a roster or a folder uses
            names.add(_compact(email.split("@")[0]))
        names.discard("")
        return ids, names

    def fixed_columns(self) -> set[str]:
        return set(CANVAS_FIXED if self.lms == "canvas" else MOODLE_FIXED)


def read_template(path: Path, lms: str | None = None) -> Template:
    """Read an LMS gradebook export; ``lms`` (``canvas``/``moodle``) is told from the header if not given."""
    raw = Path(path).read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    first = text.splitlines()[0] if text else ""
    delimiter = max(",;\t", key=first.count) if first else ","
    table = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]
    if not table:
        raise SystemExit(f"{path}: empty gradebook export")
    header = [h.strip() for h in table[0]]
    if lms is None:
        if "Student" in header and ("SIS Login ID" in header or "SIS User ID" in header):
            lms = "canvas"
        elif any(h in header for h in MOODLE_IDS) and "First name" in header:
            lms = "moodle"
        else:
            raise SystemExit(f"{path}: not a Canvas or Moodle gradebook export (header: {', '.join(header[:6])}, ...); "
                             "give --lms canvas|moodle")
    if lms not in LMSES:
        raise SystemExit(f"unknown LMS {lms!r} (have: {', '.join(LMSES)})")
    t = Template(lms, table, delimiter, bom, "\r\n" if b"\r\n" in raw else "\n")
    if lms == "canvas":
        missing = [c for c in ("Student", "ID", "SIS Login ID", "Section") if t.index(c) is None]
        if missing:
            raise SystemExit(f"{path}: not a Canvas gradebook export: no column {', '.join(missing)}")
    elif not t.id_columns():
        raise SystemExit(f"{path}: no column identifies the user ({', '.join(MOODLE_IDS)})")
    return t


@dataclass
class Export:
    """The gradebook to write, and what the summary must tell the instructor."""
    lms: str  # canvas, moodle or plain
    template: Template
    columns: dict[str, str] = field(default_factory=dict)  # assignment -> header it went to
    new_columns: list[str] = field(default_factory=list)
    written: int = 0
    ungraded: list[str] = field(default_factory=list)  # "student assignment: status -> cell"
    no_row: list[str] = field(default_factory=list)  # gradebook students without a row (for some assignment)
    unknown: list[str] = field(default_factory=list)  # grades.csv students matching no gradebook row
    ambiguous: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # assignments with no column
    unplaced: list[str] = field(default_factory=list)  # rows of files whose assignment is unknown
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every grade found its gradebook cell (students, assignments: nothing left behind)."""
        return not (self.unknown or self.ambiguous or self.unmapped)

    def summary(self) -> str:
        lines = [f"{self.written} grades written into {len(self.columns)} column(s): "
                 + ", ".join(f"{a} -> {h!r}" for a, h in self.columns.items())]
        sections = [
            ("new column(s), not in the template (the LMS creates them on import)", self.new_columns),
            ("ungraded rows (nothing of the student's work was run)", self.ungraded),
            ("gradebook students with no row in grades.csv (cells left as exported)", self.no_row),
            ("grades.csv students matching no gradebook student (NOT exported)", self.unknown),
            ("ambiguous (NOT exported)", self.ambiguous),
            ("assignments with no column (NOT exported; use --map ASSIGNMENT=COLUMN)", self.unmapped),
            ("files whose assignment is unknown (not exported)", self.unplaced),
            ("warnings", self.warnings),
        ]
        for title, items in sections:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {item}" for item in items]
        return "\n".join(lines)


def _plain_template(students: list[str], assignments: list[str]) -> Template:
    """A wide CSV with nothing in it yet: ``student`` and a column per assignment."""
    return Template("plain", [["student", *assignments]] + [[s] + [""] * len(assignments) for s in students])


def _score(value: float) -> str:
    return f"{round(value, 2):g}"


def _match_students(t: Template, students: list[str], result: Export,
                    lms_ids: dict[str, list[str]] | None = None) -> dict[str, int]:
    """Each grades.csv student's template row: by the LMS's user id from the zip (``lms_ids``),
    then by the student id as an id, then by name; reports what is left."""
    if t.lms == "plain":
        return {s: i for i, s in enumerate((r[0] for r in t.table[1:]), 1)}
    by_id: dict[str, set[int]] = {}
    by_name: dict[str, set[int]] = {}
    for i in t.student_rows():
        ids, names = t.keys(i)
        for k in ids:
            by_id.setdefault(k, set()).add(i)
        for k in names:
            by_name.setdefault(k, set()).add(i)
    found: dict[str, int] = {}
    for s in students:
        keys = [(by_id, i.casefold(), "LMS id") for i in (lms_ids or {}).get(s, [])]
        for index, key, how in keys + [(by_id, s.casefold(), "id"), (by_name, _compact(s), "name")]:
            rows = index.get(key, set())
            if len(rows) == 1:
                found[s] = next(iter(rows))
                break
            if len(rows) > 1:
                result.ambiguous.append(f"{s}: its {how} fits {len(rows)} gradebook students: "
                                        + "; ".join(t.who(i) for i in sorted(rows)))
                break
        else:
            result.unknown.append(s)
    taken: dict[int, list[str]] = {}
    for s, i in found.items():
        taken.setdefault(i, []).append(s)
    for i, who in taken.items():
        if len(who) > 1:
            result.ambiguous.append(f"{t.who(i)}: fitted by several graded students: {', '.join(who)}")
            for s in who:
                del found[s]
    return found


def _columns(t: Template, assignments: list[str], mapping: dict[str, str], result: Export) -> dict[str, int]:
    """Each assignment's column in ``t`` (appended if ``mapping`` names a header it lacks)."""
    unknown = set(mapping) - set(assignments)
    if unknown:
        raise SystemExit(f"--map names assignment(s) with no row in grades.csv: {', '.join(sorted(unknown))} "
                         f"(have: {', '.join(assignments)})")
    fixed = t.fixed_columns() if t.lms != "plain" else {"student"}
    candidates = {j: h for j, h in enumerate(t.header) if h.strip() not in fixed}
    out: dict[str, int] = {}
    for a in assignments:
        if a in mapping:
            want = mapping[a]
            hits = [j for j, h in candidates.items() if h.strip() == want.strip()] or \
                   [j for j, h in candidates.items() if _column_name(h).casefold() == _column_name(want).casefold()]
            if len(hits) > 1:
                raise SystemExit(f"--map {a}={want}: fits several columns: {', '.join(repr(t.header[j]) for j in hits)}")
            if not hits:
                t.table[0].append(want)
                hits = [len(t.table[0]) - 1]
                candidates[hits[0]] = want
                result.new_columns.append(f"{want!r} for {a}")
        else:
            names = {_compact(a), _compact(re.sub(r"^\d+[_\s-]*", "", a))}
            hits = [j for j, h in candidates.items() if _compact(_column_name(h)) in names]
            if len(hits) > 1:
                raise SystemExit(f"{a}: fits several columns ({', '.join(repr(t.header[j]) for j in hits)}); "
                                 f"choose one with --map {a}=COLUMN")
            if not hits:
                result.unmapped.append(a)
                continue
        out[a] = hits[0]
        result.columns[a] = t.header[hits[0]]
    taken = {}
    for a, j in out.items():
        if j in taken:
            raise SystemExit(f"{taken[j]} and {a} both go to column {t.header[j]!r}")
        taken[j] = a
    return out


def export(rows: list[Row], template: Template | None = None, mapping: dict[str, str] | None = None,
           ungraded: str = "leave", scale: bool = False, lms_ids: dict[str, list[str]] | None = None) -> Export:
    """Put ``rows`` (``grades.csv``) into ``template`` (or a plain wide CSV), one cell per student and assignment.

    ``ungraded``: ``leave`` keeps the template's cell for a row with no grade (blank in a plain
    CSV), ``zero`` writes 0. ``scale``: rescale each score to the Canvas column's Points Possible.
    ``lms_ids``: student -> the LMS user ids its files carried (``grade`` writes them to
    ``LMS_IDS`` next to grades.csv): matched before anything else.
    """
    if ungraded not in ("leave", "zero"):
        raise SystemExit(f"ungraded must be 'leave' or 'zero', not {ungraded!r}")
    mapping = mapping or {}
    seen: dict[tuple[str, str], Row] = {}
    placed = []
    unplaced = []
    for r in rows:
        if r.assignment == "?" or r.max_score is None:
            unplaced.append(f"{r.student}: {r.status}")
            continue
        if (r.student, r.assignment) in seen:
            raise SystemExit(f"grades.csv has two rows for {r.student} {r.assignment}")
        seen[(r.student, r.assignment)] = r
        placed.append(r)
    assignments = sorted({r.assignment for r in placed})
    students = sorted({r.student for r in placed})
    t = template or _plain_template(students, [mapping.get(a, a) for a in assignments])
    result = Export(t.lms, t, unplaced=unplaced)
    if scale and t.points_row() is None:
        raise SystemExit("--scale needs a Canvas template (its Points Possible row)")
    columns = _columns(t, assignments, mapping, result)
    where = _match_students(t, students, result, lms_ids)
    width = len(t.header)
    for r in t.table[1:]:
        if r:  # an empty line stays empty (Moodle would read a line of commas as a user it cannot find)
            r.extend([""] * (width - len(r)))
    pp = t.points_row()
    top = {a: max(r.max_score for r in placed if r.assignment == a) for a in assignments}
    points: dict[str, float] = {}
    if pp is not None:
        for a, j in columns.items():
            cell = t.table[pp][j].strip()
            if not cell:  # a new column: Canvas takes its points from this row
                t.table[pp][j] = _score(top[a])
                cell = t.table[pp][j]
            try:
                points[a] = float(cell)
            except ValueError:
                raise SystemExit(f"Points Possible of {t.header[j]!r} is {cell!r}, not a number: is it an assignment?")
            if points[a] != top[a] and not scale:
                result.warnings.append(f"{t.header[j]!r}: Points Possible {points[a]:g} in the LMS, "
                                       f"{top[a]:g} in the course: scores go in as they are (--scale rescales them)")
    for r in placed:
        if r.student not in where or r.assignment not in columns:
            continue
        cell = t.table[where[r.student]]
        j = columns[r.assignment]
        if not graded(r):
            if ungraded == "zero":
                cell[j] = "0"
            shown = cell[j] if cell[j].strip() else "blank"
            result.ungraded.append(f"{r.student} {r.assignment}: {r.status} -> {shown}")
            continue
        score = r.score * points[r.assignment] / r.max_score if scale and r.max_score else r.score
        cell[j] = _score(score)
        result.written += 1
    if t.lms != "plain" and columns:
        has = {(where[r.student], r.assignment) for r in placed if r.student in where}
        for i in t.student_rows():
            lacking = [a for a in columns if (i, a) not in has]
            if len(lacking) == len(columns):
                result.no_row.append(f"{t.who(i)}: no row")
            elif lacking:
                result.no_row.append(f"{t.who(i)}: no row for {', '.join(lacking)}")
    return result


def write(result: Export, path: Path) -> Path:
    """Write the gradebook as the template was written (separator, byte-order mark, line endings)."""
    t = result.template
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8-sig" if t.bom else "utf-8") as fh:
        csv.writer(fh, delimiter=t.delimiter, lineterminator=t.newline).writerows(t.table)
    return path
