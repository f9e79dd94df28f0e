"""nbgrader configuration for *Glow from scratch*.

nbgrader finds this file when it is run from the repository root (``nbgrader ...`` or
``python -m autograder ...``). It maps nbgrader's steps onto this repository::

    source    -> solutions/<assignment>/<notebook>.ipynb      (the only place notebooks are edited)
    release   -> course/<assignment>/<notebook>.ipynb         (generated, committed, opened in Colab)
    submitted / autograded / feedback -> autograder/<step>/<student>/<assignment>/
    gradebook -> autograder/gradebook.db                      (absolute path, see below)

``python -m autograder grade`` points the three grading steps and the gradebook at its own
``--out`` folder instead, so a grading run never touches this instructor gradebook.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STATE = ROOT / "autograder"
if str(ROOT) not in sys.path:  # plain `nbgrader` from the repo root: the autograder package is here
    sys.path.append(str(ROOT))
from autograder.grading.limits import Limits  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.course_id = "glow-from-scratch"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "course"
c.CourseDirectory.submitted_directory = "autograder/submitted"
c.CourseDirectory.autograded_directory = "autograder/autograded"
c.CourseDirectory.feedback_directory = "autograder/feedback"
# A relative sqlite path would resolve against the current directory, and sqlite cannot
# create the folder: make the path absolute and the folder present.
os.makedirs(STATE, exist_ok=True)
c.CourseDirectory.db_url = f"sqlite:///{STATE / 'gradebook.db'}"

# Release only what students need: the notebooks. (Data reach students through the
# glowcourse package; add a glob here for any other file meant for them.)
c.CourseDirectory.include = ["*.ipynb"]
# nbgrader copies folders whatever `include` says: ignore what running a solution writes beside
# it (chapter 6's training checkpoints), or `execute` followed by `release` would ship it.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.bak", "glow_checkpoints"]

# Per-cell limit while grading, the default of `python -m autograder grade` (autograder/grading/limits.py).
# Heavy cells are skipped under NBGRADER_EXECUTION, so a graded notebook runs in seconds.
c.Execute.timeout = Limits().cell_timeout

# The "Open in Colab" badge and the setup cell read the repository from pyproject.toml
# ([project.urls] Repository): the one place a fork changes it.


# Quiet kernels: ipykernel logs a warning about TCP transport for every notebook it runs,
# which buries the grading progress. (The history file in memory is nbgrader's default.)
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"]
