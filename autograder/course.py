"""Where things are, and an nbgrader API object pointed at them.

Every command loads the repository's ``nbgrader_config.py`` (the same file plain ``nbgrader``
reads from the repo root) and may override a few folders, so that a grading run or a test
writes into its own directory and never into the instructor's gradebook.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
COURSE = ROOT / "course"
CONFIG_FILE = ROOT / "nbgrader_config.py"


def ensure_tools_on_path() -> None:
    """nbgrader starts ``alembic`` (and Jupyter kernels) as subprocesses: put this
    interpreter's ``bin/`` first on PATH, so they come from the same environment."""
    bindir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[:1] != [bindir]:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


@functools.cache
def _alembic_head() -> str:
    """The gradebook schema's revision, from alembic's API in this process: what nbgrader's
    ``get_alembic_version`` asks the ``alembic`` command for (a new Python process importing
    nbgrader: about 2.5 s) each time it creates a gradebook."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import _temp_alembic_ini

    with _temp_alembic_ini("sqlite:////tmp/gradebook.db") as ini:  # nbgrader's own alembic set-up
        return ScriptDirectory.from_config(Config(ini)).get_current_head()


def repository_url() -> str:
    """The course repository, from pyproject.toml ``[project.urls] Repository``."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        url = tomllib.load(fh)["project"]["urls"]["Repository"]
    return url.rstrip("/").removesuffix(".git")


@dataclass(frozen=True)
class Notebook:
    """One notebook of the course: its source in ``solutions/`` and its release in ``course/``."""
    assignment: str
    name: str  # file stem, without .ipynb

    @property
    def source(self) -> Path:
        return SOLUTIONS / self.assignment / f"{self.name}.ipynb"

    @property
    def release(self) -> Path:
        return COURSE / self.assignment / f"{self.name}.ipynb"


def assignments() -> list[str]:
    """The assignments: the folders of ``solutions/`` holding notebooks, in order."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebooks(assignment: str | None = None) -> list[Notebook]:
    """The notebooks of one assignment, or of all, in course order."""
    names = [assignment] if assignment else assignments()
    out = []
    for a in names:
        if not (SOLUTIONS / a).is_dir():
            raise SystemExit(f"no assignment {a!r} in {SOLUTIONS} (have: {', '.join(assignments())})")
        out += [Notebook(a, p.stem) for p in sorted((SOLUTIONS / a).glob("*.ipynb"))]
    return out


def nbgrader_api(*, release: Path | None = None, submitted: Path | None = None, autograded: Path | None = None,
                 feedback: Path | None = None, db: Path | None = None, config=None):
    """An ``NbGraderAPI`` configured by ``nbgrader_config.py``, with folders overridden.

    Overridden folders are absolute; nbgrader joins them onto the course root unchanged.
    ``config`` (a traitlets ``Config``) is merged on top: grading passes its own
    (``grading/nbgrader_setup.py``).
    """
    ensure_tools_on_path()
    import warnings

    from sqlalchemy.exc import SAWarning

    # nbgrader 0.9.6's gradebook triggers SQLAlchemy autoflush warnings on every submission: noise.
    warnings.filterwarnings("ignore", category=SAWarning)
    import nbgrader.api
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    nbgrader.api.get_alembic_version = _alembic_head
    from traitlets.config import Config, PyFileConfigLoader

    merged = PyFileConfigLoader(CONFIG_FILE.name, path=str(ROOT)).load_config()
    over = Config()
    for trait, path in [("release_directory", release), ("submitted_directory", submitted),
                        ("autograded_directory", autograded), ("feedback_directory", feedback)]:
        if path is not None:
            over.CourseDirectory[trait] = str(Path(path).resolve())
    if db is not None:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        over.CourseDirectory.db_url = f"sqlite:///{Path(db).resolve()}"
    merged.merge(over)
    if config is not None:
        merged.merge(config)
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    api = NbGraderAPI(coursedir=CourseDirectory(config=merged), config=merged)
    api.log.setLevel(logging.ERROR)
    return api
