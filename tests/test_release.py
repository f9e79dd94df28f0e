"""The student release: in sync with solutions/, Colab-ready, and free of answers."""
import json
import subprocess
import sys

import nbformat
import pytest

from autograder import cells, course
from autograder.authoring.release import SETUP_TAG, colab_url, release_diff

NOTEBOOKS = course.notebooks()


@pytest.mark.slow
def test_release_is_in_sync_with_solutions():
    stale = release_diff()
    assert stale == [], f"course/ is stale, run `python -m autograder release`: {stale}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_release_has_badge_and_setup_cell_and_no_answers(nb):
    released = nbformat.read(nb.release, 4)
    badge, setup = released.cells[:2]
    assert SETUP_TAG in badge.metadata["tags"] and SETUP_TAG in setup.metadata["tags"]
    assert colab_url(nb) in badge.source and "colab.research.google.com/github/" in colab_url(nb)
    assert course.repository_url() in setup.source and setup.cell_type == "code"
    text = nbformat.writes(released)
    for secret in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "seed=11"):
        assert secret not in text
    # Every exercise of the source is there, blanked, with its nbgrader metadata for grading.
    source_ids = [cells.grade_id(c) for c in nbformat.read(nb.source, 4).cells if cells.meta(c)]
    release_ids = [cells.grade_id(c) for c in released.cells if cells.meta(c)]
    assert source_ids == release_ids
    assert all(not c.get("outputs") for c in released.cells if c.cell_type == "code")
    assert set(released.metadata) <= {"kernelspec", "language_info"}


def test_only_notebooks_are_released():
    files = [p for p in course.COURSE.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".ipynb" for p in files), files


@pytest.mark.parametrize("nb", NOTEBOOKS[:1], ids=lambda nb: nb.name)
def test_setup_cell_does_nothing_where_glowcourse_is_installed(nb, tmp_path):
    setup = nbformat.read(nb.release, 4).cells[1].source
    # If it tried to pip install, check_call would raise here.
    guard = "import subprocess\ndef _no(*a, **k): raise SystemExit('setup cell tried to install')\nsubprocess.check_call = _no\n"
    proc = subprocess.run([sys.executable, "-c", guard + setup], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ready" in proc.stdout


def test_setup_cell_installs_from_the_repository_when_missing(tmp_path):
    setup = nbformat.read(NOTEBOOKS[0].release, 4).cells[1].source
    # Hide glowcourse and record the pip command instead of running it.
    code = (
        "import importlib.util, json, subprocess, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'glowcourse' else real(name, *a)\n"
        "calls = []\n"
        "subprocess.check_call = lambda cmd, **k: calls.append(cmd)\n"
        "try:\n" + "".join("    " + line + "\n" for line in setup.splitlines()) +
        "finally:\n    print(json.dumps(calls))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    calls = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"]
    assert calls[0][-1] == f"glowcourse @ git+{course.repository_url()}.git@main"
