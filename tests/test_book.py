"""The self-learners' site: builds offline, every chapter present with its figures."""
import re

import nbformat
import pytest

from autograder import course
from autograder.authoring import book

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    return book.build(tmp_path_factory.mktemp("book"))


def test_every_chapter_page_exists_with_its_figures(html):
    for nb in course.notebooks():
        page = html / nb.assignment / f"{nb.name}.html"
        assert page.exists(), page
        text = page.read_text()
        figures = sum("image/png" in o.get("data", {}) for c in nbformat.read(nb.source, 4).cells for o in c.get("outputs", []))
        images = re.findall(r'<img [^>]*src="(\.\./_images/[^"]+\.png)"', text)
        assert len(images) >= figures > 0, (nb.name, len(images), figures)
        for src in images:
            assert (page.parent / src).resolve().exists(), src
        assert course.repository_url().split("github.com/")[1] in text  # the Colab badge of the student version
        assert "mathjax" in text.lower()  # the maths is rendered


def test_intro_results_and_guides(html):
    for name in ("index.html", "intro.html", "results.html", "guides.html"):
        assert (html / name).exists(), name
    intro = (html / "intro.html").read_text()
    assert all(f"{nb.assignment}/{nb.name}.html" in intro for nb in course.notebooks())  # the table of contents
