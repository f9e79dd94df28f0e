"""Find the submissions in what an instructor downloaded: a folder or an LMS zip.

Two layouts are understood, inside a folder or a zip (nested zips are unpacked too):

- nbgrader's own, ``<student>/<assignment>/<notebook>.ipynb``;
- flat LMS downloads, where the file name carries the student and the notebook name, e.g.
  Canvas ``smithjane_12345_678901_change_of_variables.ipynb``, Moodle
  ``Jane Smith_1234_assignsubmission_file_/change_of_variables.ipynb``, or browser copies
  ``change_of_variables (1).ipynb`` inside a student folder. The notebook name decides the
  assignment, so one zip may hold several assignments.

Anything that cannot be placed becomes a :class:`Problem` with a reason, never silently dropped.
"""
from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .. import course


@dataclass
class Submission:
    """One notebook handed in: whose, for which assignment, which notebook (file stem), where."""
    student: str
    assignment: str
    notebook: str
    path: Path
    lms_id: str | None = None  # the LMS's own user id, where the file name carries it (Canvas)


@dataclass
class Problem:
    """A file that cannot be graded: its row's student, assignment (``?`` if unknown) and status."""
    student: str
    assignment: str
    status: str


def student_id(raw: str) -> str:
    """A folder-safe student id: letters, digits, ``.``, ``_``, ``-``; spaces become ``-``."""
    s = re.sub(r"\s+", "-", raw.strip())
    s = re.sub(r"[^A-Za-z0-9._-]", "", s).strip(".-")
    return s or "unknown"


def _unzip_all(src: Path, dest: Path) -> None:
    """Extract ``src`` into ``dest``, then any zip found inside, refusing paths that escape."""
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(dest.resolve())) or info.filename.startswith("__MACOSX"):
                continue
            z.extract(info, dest)
    for inner in sorted(dest.rglob("*.zip")):
        sub = inner.with_suffix("")
        sub.mkdir(exist_ok=True)
        try:
            _unzip_all(inner, sub)
        except zipfile.BadZipFile:
            pass
        inner.unlink()


def collect(source: Path, scratch: Path) -> tuple[list[Submission], list[Problem]]:
    """Submissions and problems found in ``source`` (a folder or a ``.zip``)."""
    source = Path(source)
    if not source.exists():
        raise SystemExit(f"submissions not found: {source}")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise SystemExit(f"{source} is neither a folder nor a zip file")
        root = scratch / "unzipped"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _unzip_all(source, root)
    else:
        root = source
    by_name = {nb.name: nb for nb in course.notebooks()}
    known = "|".join(sorted(map(re.escape, by_name), key=len, reverse=True))
    flat = re.compile(rf"^(?P<prefix>.*?)[_\-\s]*(?P<notebook>{known})(\s*\(\d+\)|-\d+)?\.ipynb$") if known else None
    assignments = set(course.assignments())

    found: dict[tuple[str, str, str], Submission] = {}
    problems: list[Problem] = []
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__MACOSX" not in p.parts)
    for path in files:
        rel = path.relative_to(root)
        if path.suffix != ".ipynb":
            continue
        parts = rel.parts
        lms_id = None
        if len(parts) >= 3 and parts[-2] in assignments:  # <student>/<assignment>/<notebook>.ipynb
            student, assignment = student_id(parts[-3]), parts[-2]
            m = flat.match(parts[-1]) if flat else None
            name = m["notebook"] if m else path.stem
            if name not in by_name or by_name[name].assignment != assignment:
                problems.append(Problem(student, assignment, f"wrong file name: {parts[-1]}"))
                continue
        else:
            m = flat.match(parts[-1]) if flat else None
            if m is None:
                who = student_id(parts[0] if len(parts) > 1 else path.stem.split("_")[0])
                problems.append(Problem(who, "?", f"wrong file name: {rel}"))
                continue
            name = m["notebook"]
            assignment = by_name[name].assignment
            if m["prefix"]:  # Canvas: <student>_[LATE_]<user id>_<submission id>_<notebook>.ipynb
                student = student_id(m["prefix"].split("_")[0])
                lms_id = next((p for p in m["prefix"].split("_")[1:] if p.isdigit()), None)
            elif len(parts) > 1:  # <student folder>/<notebook>.ipynb; Moodle adds _<id>_assignsubmission_file_
                student = student_id(re.sub(r"_\d+_assignsubmission.*$", "", parts[-2]))
            else:
                problems.append(Problem(path.stem, assignment, f"no student in file name: {rel}"))
                continue
        key = (student, assignment, name)
        if key in found:  # a re-submission: keep the newest file
            if path.stat().st_mtime < found[key].path.stat().st_mtime:
                continue
        found[key] = Submission(student, assignment, name, path, lms_id)
    return list(found.values()), problems


def read_roster(path: Path) -> list[str]:
    """Student ids, one per line (or the first column of a CSV with a header ``id``/``student``)."""
    ids = []
    for line in Path(path).read_text().splitlines():
        first = line.split(",")[0].strip()
        if first and first.lower() not in ("id", "student", "student_id") and not first.startswith("#"):
            ids.append(student_id(first))
    return ids
