"""``report``: per exercise, which catalogued mistakes the checks catch and which correct
variants they accept, with the messages a student would see. In-process (``harness.py``)."""
from __future__ import annotations

from collections import defaultdict

from .. import cells, course
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


def _first_lines(message: str | None, width: int = 150) -> str:
    if not message:
        return "-"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    cause = next((line for line in lines if line.startswith("Likely cause")), "")
    text = lines[0] + (" | " + cause if cause else "")
    return text if len(text) <= width else text[: width - 3] + "..."


def report(assignment: str | None = None, verbose: bool = True) -> dict:
    """Print the catalogue report; return the totals."""
    totals = defaultdict(int)
    for nb in course.notebooks(assignment):
        base = samples.filled(nb)
        by_cell: dict[str, list] = defaultdict(list)
        for m in samples.mistakes(nb.assignment):
            results = harness.run(nb, cells.solutions(samples.with_mistake(base, m)))
            targets = m.get("fails", [f"{m['cell']}_check"])
            hidden = any(results[t].hidden for t in targets)
            visible = next((results[t].visible for t in targets if results[t].visible), None)
            by_cell[m["cell"]].append(("mistake", m["name"], hidden, visible, bool(m.get("cause")) and names_cause(m, visible)))
        for v in samples.variants(nb.assignment):
            results = harness.run(nb, cells.solutions(samples.with_mistake(base, v)))
            failed = [g for g, o in results.items() if o.visible or o.hidden]
            by_cell[v["cell"]].append(("variant", v["name"], not failed, ", ".join(failed)))
        print(f"\n== {nb.assignment}/{nb.name}")
        for cell, rows in by_cell.items():
            ms = [r for r in rows if r[0] == "mistake"]
            vs = [r for r in rows if r[0] == "variant"]
            caught_h = sum(r[2] for r in ms)
            caught_v = sum(bool(r[3]) for r in ms)
            named = sum(r[4] for r in ms)
            accepted = sum(r[2] for r in vs)
            print(f"  {cell}: mistakes {len(ms)} (hidden caught {caught_h}, visible caught {caught_v}, cause named {named}); "
                  f"variants {len(vs)} (accepted {accepted})")
            if verbose:
                for _, name, h, msg, ok in ms:
                    print(f"    - {name:36s} hidden {'caught' if h else 'MISSED'}; cause {'named' if ok else '-'}; visible: {_first_lines(msg)}")
                for _, name, ok, failed in vs:
                    print(f"    + {name:36s} {'accepted' if ok else 'REFUSED by ' + failed}")
            totals["mistakes"] += len(ms)
            totals["hidden"] += caught_h
            totals["visible"] += caught_v
            totals["named"] += named
            totals["variants"] += len(vs)
            totals["accepted"] += accepted
    t = totals
    print(f"\nmistakes {t['mistakes']}: hidden checks catch {t['hidden']}, visible {t['visible']} "
          f"({100 * t['visible'] / max(t['mistakes'], 1):.0f}%), cause named {t['named']} "
          f"({100 * t['named'] / max(t['mistakes'], 1):.0f}%); "
          f"variants {t['variants']}: accepted {t['accepted']}")
    return dict(t)
