"""``release``: generate ``course/`` from ``solutions/`` and make each notebook Colab-ready.

nbgrader's ``generate_assignment`` does the real work (strips solutions and hidden tests,
records the source cells in the gradebook, computes checksums). Afterwards every released
notebook gets two cells at the top, stamped with the repository URL from pyproject.toml:

- an "Open in Colab" badge;
- a setup cell that pip-installs the ``glowcourse`` package from the repository when it is
  not importable (Colab), and does nothing where it is (a grading machine, a local venv).

Notebook and cell metadata are reduced to what Jupyter and nbgrader need, so the release
diffs cleanly.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat

from .. import course
from .notebooks import tidy

SETUP_TAG = "course-setup"

BADGE = """\
[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})

Run the setup cell below first: on Colab it installs the course helpers (`glowcourse`);
anywhere they are already installed it does nothing. Then fill in every
`raise NotImplementedError()` and run the check cell that follows it. When you are done,
*File > Download > Download .ipynb* and hand in that file, keeping its name `{name}.ipynb`."""

SETUP = """\
# Setup: installs the course's helper package on Colab; does nothing where it is installed.
import importlib, importlib.util, subprocess, sys

if importlib.util.find_spec("glowcourse") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet",
                           "glowcourse @ git+{repo}.git@main"])
    importlib.invalidate_caches()
import glowcourse

print("glowcourse", glowcourse.__version__, "ready")"""


def colab_url(nb: course.Notebook) -> str:
    repo = course.repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repo}/blob/main/course/{nb.assignment}/{nb.name}.ipynb"


def stamp(path: Path, nb: course.Notebook) -> None:
    """Add the badge and setup cells (replacing earlier ones) and tidy the metadata."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [c for c in notebook.cells if SETUP_TAG not in c.metadata.get("tags", [])]
    badge = nbformat.v4.new_markdown_cell(BADGE.format(colab=colab_url(nb), name=nb.name), id="colab-badge")
    setup = nbformat.v4.new_code_cell(SETUP.format(repo=course.repository_url()), id="colab-setup")
    for cell in (badge, setup):
        cell.metadata = {"tags": [SETUP_TAG]}
    notebook.cells[:0] = [badge, setup]
    tidy(notebook)
    nbformat.validate(notebook)
    nbformat.write(notebook, path)


def release(assignments: list[str] | None = None, release_dir: Path = course.COURSE, db: Path | None = None) -> list[Path]:
    """Regenerate the release of each assignment into ``release_dir``; return the notebooks written.

    ``db`` defaults to the instructor gradebook from nbgrader_config.py, which ``generate_assignment``
    updates with the source cells (the formgrader and plain ``nbgrader autograde`` need them).
    """
    api = course.nbgrader_api(release=release_dir, db=db)
    written = []
    for a in assignments or course.assignments():
        result = api.generate_assignment(a, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {a} failed:\n{result.get('error', '')}\n{result.get('log', '')}")
        for nb in course.notebooks(a):
            path = Path(release_dir) / a / f"{nb.name}.ipynb"
            stamp(path, nb)
            written.append(path)
    return written


def release_diff(assignments: list[str] | None = None) -> list[str]:
    """Names of released notebooks that differ from a fresh release (empty when in sync)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = release(assignments, release_dir=Path(tmp) / "course", db=Path(tmp) / "gradebook.db")
        stale = []
        for path in fresh:
            committed = course.COURSE / path.relative_to(Path(tmp) / "course")
            if not committed.exists() or nbformat.read(committed, 4) != nbformat.read(path, 4):
                stale.append(str(committed.relative_to(course.ROOT)))
        names = {p.relative_to(Path(tmp) / "course") for p in fresh}
        for extra in course.COURSE.rglob("*.ipynb"):
            if extra.relative_to(course.COURSE) not in names and ".ipynb_checkpoints" not in extra.parts:
                stale.append(f"{extra.relative_to(course.ROOT)} (no source in solutions/)")
    return stale
