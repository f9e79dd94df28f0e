"""Grading a class on several machines: a stable split of the students, and the merge after.

``grade --shard i/N`` grades only the students whose shard is ``i`` (a hash of the id, the same
on every machine) and writes ``shard.json`` beside ``grades.csv``; ``merge`` combines the N
output folders into one, refusing an incomplete or doubled set.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from .results import LMS_IDS, Row, read_csv, read_lms_ids, write_csv, write_lms_ids

__all__ = ["parse_shard", "shard_of", "merge", "SHARD_FILE"]

SHARD_FILE = "shard.json"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> (2, 4): the second of four slices of the class (1-based)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SystemExit(f"--shard {text!r}: expected i/N with 1 <= i <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def shard_of(student: str, n: int) -> int:
    """The shard (1..n) a student belongs to: a stable hash of the id, the same on every machine."""
    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % n + 1


def merge(shard_dirs: list[Path], out: Path) -> list[Row]:
    """Combine the output folders of ``grade --shard i/N`` runs into one ``out``.

    Every shard 1..N must be present exactly once (else nothing is written and the error
    names what is missing); their rows and feedback folders are combined.
    """
    out = Path(out).resolve()
    infos = []
    for d in shard_dirs:
        d = Path(d)
        meta = d / SHARD_FILE
        if not meta.exists() or not (d / "grades.csv").exists():
            raise SystemExit(f"{d}: not a finished shard (no shard.json / grades.csv): was it graded with --shard i/N?")
        infos.append((json.loads(meta.read_text()), d))
    sizes = {info["of"] for info, _ in infos}
    if len(sizes) != 1:
        raise SystemExit(f"shards of different splits: {sorted(sizes)} (all must use the same N)")
    n = sizes.pop()
    seen: dict[int, Path] = {}
    for info, d in infos:
        if info["shard"] in seen:
            raise SystemExit(f"shard {info['shard']}/{n} given twice: {seen[info['shard']]} and {d}")
        seen[info["shard"]] = d
    absent = sorted(set(range(1, n + 1)) - set(seen))
    if absent:
        raise SystemExit(f"missing shard(s) {', '.join(f'{i}/{n}' for i in absent)}: grade them, then merge again")
    rows: dict[tuple[str, str], Row] = {}
    for info, d in sorted(infos, key=lambda x: x[0]["shard"]):
        for row in read_csv(d / "grades.csv"):
            if (row.student, row.assignment) in rows:
                raise SystemExit(f"{row.student} {row.assignment} appears in two shards")
            rows[(row.student, row.assignment)] = row
    out.mkdir(parents=True, exist_ok=True)
    for info, d in infos:
        if (d / "feedback").is_dir() and d.resolve() != out:
            shutil.copytree(d / "feedback", out / "feedback", dirs_exist_ok=True)
    result = sorted(rows.values(), key=lambda r: (r.student, r.assignment))
    write_csv(result, out / "grades.csv")
    lms_ids: dict[str, list[str]] = {}
    for _, d in infos:
        for student, ids in read_lms_ids(d / LMS_IDS).items():
            lms_ids.setdefault(student, []).extend(ids)
    write_lms_ids(lms_ids, out / LMS_IDS)
    return result
