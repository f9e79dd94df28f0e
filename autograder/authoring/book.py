"""``book``: the self-learners' site, built with Jupyter Book 1.x from ``solutions/`` (offline).

Stages ``book/*.md`` and the solution notebooks (outputs as committed, never re-executed) into
``build/book/src``, adds an "Open in Colab" badge for the student version at the top of each
chapter, writes the table of contents in course order, and runs ``jupyter-book build``.
The HTML lands in ``build/book/html``.

The site reads offline: every script and style a page loads is served from the build. MathJax 3
(the version Sphinx would otherwise load from a CDN) comes from the ``django-static-mathjax``
package, a plain copy of the MathJax distribution, and is copied into ``_static/mathjax``;
``sphinx_thebe``, whose only use is live code cells started from a CDN, is left out; the Colab
badge is an image of its own. Links (the Colab badges, the repository button) still point outwards.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .. import course
from .release import colab_url

BOOK = course.ROOT / "book"
OUT = course.ROOT / "build" / "book"
MATHJAX_DIST = "django-static-mathjax"  # the pip package holding the MathJax 3 distribution
MATHJAX_ENTRY = "tex-mml-chtml.js"  # the combined component Sphinx loads by default
MATHJAX_PATH = f"mathjax/{MATHJAX_ENTRY}"  # Sphinx's mathjax_path: relative to the site's _static/
OFFLINE_DROPPED_EXTENSIONS = ("sphinx_thebe",)  # extensions that load scripts from a CDN

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
    mathjax_path: {mathjax_path}
    extensions: {extensions}
"""


def extensions() -> list[str]:
    """Jupyter Book's default Sphinx extensions less those that load scripts from a CDN."""
    from jupyter_book.config import get_default_sphinx_config

    return [e for e in get_default_sphinx_config()["extensions"] if e not in OFFLINE_DROPPED_EXTENSIONS]


# The "Open in Colab" badge, drawn here so that the book loads no image from outside (the
# student notebooks, read online, use Colab's own).
BADGE = "open-in-colab.svg"
BADGE_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">
<rect width="117" height="20" rx="3" fill="#555"/><rect x="38" width="79" height="20" rx="3" fill="#f9ab00"/>
<rect x="38" width="6" height="20" fill="#f9ab00"/>
<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle">
<text x="19" y="14">Open</text><text x="77" y="14" fill="#222">in Colab</text></g>
</svg>
"""


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax distribution (what the CDN serves as ``mathjax@3/es5``)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{MATHJAX_DIST} is not installed: run scripts/setup (requirements.txt)") from None
    entry = next((f for f in dist.files or [] if f.as_posix().endswith(f"/es5/{MATHJAX_ENTRY}")), None)
    if entry is None:
        raise SystemExit(f"{MATHJAX_DIST} has no es5/{MATHJAX_ENTRY}")
    return Path(dist.locate_file(entry)).parent


def copy_mathjax(static: Path) -> Path:
    """Copy MathJax into ``static/mathjax``: the entry script and every component it loads on demand
    (fonts, TeX extensions, menu, accessibility), not the other combined bundles; return the entry."""
    src = mathjax_source()
    dest = static / "mathjax"
    shutil.rmtree(dest, ignore_errors=True)
    top_level_bundles = {p.name for p in src.glob("*.js")} - {MATHJAX_ENTRY}
    shutil.copytree(src, dest, ignore=lambda folder, names: top_level_bundles if Path(folder) == src else [])
    licence = src.parent / "LICENSE"
    if licence.exists():
        shutil.copyfile(licence, dest / "LICENSE")
    return dest / MATHJAX_ENTRY


def stage(out: Path = OUT) -> Path:
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for page in BOOK.glob("*.md"):
        shutil.copyfile(page, src / page.name)
    (src / BADGE).write_text(BADGE_SVG)
    chapters = []
    for nb in course.notebooks():
        notebook = nbformat.read(nb.source, 4)
        badge = nbformat.v4.new_markdown_cell(
            f"[![Open In Colab](../{BADGE})]({colab_url(nb)}) "
            "the student version, with the exercises blank.", id="book-badge")
        notebook.cells.insert(1, badge)  # after the title cell
        dest = src / nb.assignment / f"{nb.name}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, dest)
        chapters.append(f"{nb.assignment}/{nb.name}")
    (src / "_config.yml").write_text(CONFIG.format(repo=course.repository_url(), mathjax_path=MATHJAX_PATH,
                                                   extensions=json.dumps(extensions())))
    toc = ["format: jb-book", "root: intro", "chapters:"]
    toc += [f"- file: {c}" for c in chapters] + ["- file: results", "- file: guides"]
    (src / "_toc.yml").write_text("\n".join(toc) + "\n")
    return src


def build(out: Path = OUT) -> Path:
    """Build the site; return the folder holding index.html."""
    mathjax_source()  # a missing MathJax stops here, not after the slow build
    src = stage(out)
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--path-output", str(out / "_work"),
                           "--warningiserror", "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.copytree(out / "_work" / "_build" / "html", html)
    copy_mathjax(html / "_static")
    return html
