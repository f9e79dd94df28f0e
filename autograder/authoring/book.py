"""``book``: the self-learners' site, built with Jupyter Book 1.x from ``solutions/`` (offline).

Stages ``book/*.md`` and the solution notebooks (outputs as committed, never re-executed) into
``build/book/src``, adds an "Open in Colab" badge for the student version at the top of each
chapter, writes the table of contents in course order, and runs ``jupyter-book build``.
The HTML lands in ``build/book/html``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .. import course
from .release import colab_url

BOOK = course.ROOT / "book"
OUT = course.ROOT / "build" / "book"

CONFIG = """\
title: Glow from scratch
author: the Glow from scratch course
only_build_toc_files: true
execute:
  execute_notebooks: "off"
html:
  use_repository_button: true
repository:
  url: {repo}
  branch: main
sphinx:
  config:
    html_show_copyright: false
"""


def stage(out: Path = OUT) -> Path:
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for page in BOOK.glob("*.md"):
        shutil.copyfile(page, src / page.name)
    chapters = []
    for nb in course.notebooks():
        notebook = nbformat.read(nb.source, 4)
        badge = nbformat.v4.new_markdown_cell(
            f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(nb)}) "
            "the student version, with the exercises blank.", id="book-badge")
        notebook.cells.insert(1, badge)  # after the title cell
        dest = src / nb.assignment / f"{nb.name}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, dest)
        chapters.append(f"{nb.assignment}/{nb.name}")
    (src / "_config.yml").write_text(CONFIG.format(repo=course.repository_url()))
    toc = ["format: jb-book", "root: intro", "chapters:"]
    toc += [f"- file: {c}" for c in chapters] + ["- file: results", "- file: guides"]
    (src / "_toc.yml").write_text("\n".join(toc) + "\n")
    return src


def build(out: Path = OUT) -> Path:
    """Build the site; return the folder holding index.html."""
    src = stage(out)
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--path-output", str(out / "_work"),
                           "--warningiserror", "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.copytree(out / "_work" / "_build" / "html", html)
    return html
