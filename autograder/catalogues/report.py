"""``report``: per exercise, which catalogued mistakes the checks catch and which correct
variants they accept, with the messages a student would see. In-process (``harness.py``).

The run takes minutes, so it says on stderr which mistake or variant it is on; the whole
report, every message in full, goes to a file, and the terminal gets a summary table whose
cells wrap at word boundaries (a message cut mid-sentence would say something else).
"""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .. import cells, course
from ..grading.results import text_table
from . import harness, samples


def likely_cause(message: str | None) -> str:
    """The "Likely cause: ..." part of a check's message ('' when the check names none)."""
    if not message or "Likely cause:" not in message:
        return ""
    return message.split("Likely cause:", 1)[1].strip()


def names_cause(mistake: dict, message: str | None) -> bool:
    """Whether ``message`` names the cause the catalogue gives for ``mistake``.

    Each catalogued mistake says in ``cause`` a few words its visible message must contain in
    its "Likely cause" line; ``cause = ""`` marks a mistake whose cause the check cannot tell
    apart from others, where the message must say what differs and guess nothing.
    """
    cause = mistake.get("cause")
    if cause is None or not message:
        return False
    if cause == "":
        return "Likely cause" not in message
    return cause.lower() in likely_cause(message).lower()


@dataclass
class Exercise:
    """What the catalogue found for one exercise (a solution cell, by grade_id)."""
    assignment: str
    notebook: str
    cell: str
    # (name, hidden check caught it, the visible message or None, the message names its cause)
    mistakes: list[tuple[str, bool, str | None, bool]] = field(default_factory=list)
    # (name, every check passed, the checks that failed)
    variants: list[tuple[str, bool, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"mistakes": len(self.mistakes), "hidden": sum(m[1] for m in self.mistakes),
                "visible": sum(bool(m[2]) for m in self.mistakes), "named": sum(m[3] for m in self.mistakes),
                "variants": len(self.variants), "accepted": sum(v[1] for v in self.variants)}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_catalogue(assignment: str | None = None, progress=_stderr) -> list[Exercise]:
    """Run every catalogued mistake and variant through its notebook's checks (``harness.run``),
    calling ``progress`` with ``[report n/N] <assignment> <cell>: mistake <name>`` before each."""
    jobs = [(nb, kind, item) for nb in course.notebooks(assignment)
            for kind, items in (("mistake", samples.mistakes(nb.assignment)), ("variant", samples.variants(nb.assignment)))
            for item in items]
    exercises: dict[tuple[str, str], Exercise] = {}
    bases: dict[str, object] = {}
    for n, (nb, kind, item) in enumerate(jobs, 1):
        if progress:
            progress(f"[report {n}/{len(jobs)}] {nb.assignment} {item['cell']}: {kind} {item['name']}")
        if nb.assignment not in bases:
            bases[nb.assignment] = samples.filled(nb)
        ex = exercises.setdefault((nb.assignment, item["cell"]), Exercise(nb.assignment, nb.name, item["cell"]))
        results = harness.run(nb, cells.solutions(samples.with_mistake(bases[nb.assignment], item)))
        if kind == "mistake":
            targets = item.get("fails", [f"{item['cell']}_check"])
            hidden = any(results[t].hidden for t in targets)
            visible = next((results[t].visible for t in targets if results[t].visible), None)
            ex.mistakes.append((item["name"], hidden, visible, bool(item.get("cause")) and names_cause(item, visible)))
        else:
            failed = [g for g, o in results.items() if o.visible or o.hidden]
            ex.variants.append((item["name"], not failed, ", ".join(failed)))
    return list(exercises.values())


def totals(exercises: list[Exercise]) -> dict[str, int]:
    """The counts of every exercise added up."""
    t = dict.fromkeys(["mistakes", "hidden", "visible", "named", "variants", "accepted"], 0)
    for ex in exercises:
        for k, v in ex.counts().items():
            t[k] += v
    return t


def totals_line(t: dict[str, int]) -> str:
    """The report's last line: the totals, with the visible and named shares."""
    return (f"mistakes {t['mistakes']}: hidden checks catch {t['hidden']}, visible {t['visible']} "
            f"({100 * t['visible'] / max(t['mistakes'], 1):.0f}%), cause named {t['named']} "
            f"({100 * t['named'] / max(t['mistakes'], 1):.0f}%); variants {t['variants']}: accepted {t['accepted']}")


def _wrapped(text: str, width: int, indent: str) -> list[str]:
    """``text`` (several lines) wrapped at word boundaries under ``indent``; nothing dropped."""
    out = []
    for line in text.splitlines() or [""]:
        out += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent + "  ",
                             break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]
    return out


def full_report(exercises: list[Exercise], width: int = 100) -> str:
    """The whole report: per exercise its counts, then every mistake with the whole message a
    student would see (wrapped to ``width`` at word boundaries) and every variant with the
    checks that refused it (if any)."""
    lines: list[str] = []
    notebook = None
    for ex in exercises:
        if (ex.assignment, ex.notebook) != notebook:
            notebook = (ex.assignment, ex.notebook)
            lines += ["", f"== {ex.assignment}/{ex.notebook}"]
        c = ex.counts()
        lines.append(f"  {ex.cell}: mistakes {c['mistakes']} (hidden caught {c['hidden']}, visible caught {c['visible']}, "
                     f"cause named {c['named']}); variants {c['variants']} (accepted {c['accepted']})")
        for name, hidden, message, named in ex.mistakes:
            lines.append(f"    - {name}: hidden {'caught' if hidden else 'MISSED'}; cause {'named' if named else '-'}; "
                         f"visible: {'caught' if message else 'MISSED'}")
            if message:
                lines += _wrapped(message, width, " " * 8)
        for name, ok, failed in ex.variants:
            lines.append(f"    + {name}: {'accepted' if ok else 'REFUSED by ' + failed}")
    lines += ["", totals_line(totals(exercises))]
    return "\n".join(lines).lstrip("\n") + "\n"


def summary_table(exercises: list[Exercise], width: int = 100) -> str:
    """One row per exercise with its counts, then, by name, the mistakes a check missed and the
    variants it refused; a cell or line too long for the width wraps at word boundaries."""
    header = ["exercise", "mistakes", "hidden caught", "visible caught", "cause named", "variants", "accepted"]
    rows, trouble = [], []
    for ex in exercises:
        name = f"{ex.assignment.split('_')[0]} {ex.cell}"
        rows.append([name, *map(str, ex.counts().values())])
        missed = ([f"{m[0]} (hidden missed)" for m in ex.mistakes if not m[1]]
                  + [f"{m[0]} (visible missed)" for m in ex.mistakes if not m[2]]
                  + [f"{v[0]} (refused)" for v in ex.variants if not v[1]])
        if missed:
            trouble += textwrap.wrap(f"{name}: {', '.join(missed)}", width, initial_indent="  ", subsequent_indent="    ",
                                     break_long_words=False, break_on_hyphens=False)
    lines = [text_table(header, rows, width)]
    if trouble:
        lines += ["", "missed or refused:", *trouble]
    return "\n".join(lines)


def report(assignment: str | None = None, out: Path = Path("build/report.txt"), *, progress: bool = True,
           width: int = 100) -> dict[str, int]:
    """Run the catalogue, write the whole report to ``out``, print the summary table; return the totals."""
    exercises = run_catalogue(assignment, _stderr if progress else None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(full_report(exercises))
    t = totals(exercises)
    print(summary_table(exercises, width))
    print()
    print("\n".join(textwrap.wrap(totals_line(t), width)))
    print(f"whole report, every message in full: {out}")
    return t
