"""The self-learners' site: builds offline, every chapter present with its figures, and reads
offline: every script and style a page loads is part of the build."""
import re
from html.parser import HTMLParser

import nbformat
import pytest
import yaml

from autograder import course
from autograder.authoring import book

EXTERNAL = re.compile(r"^(https?:)?//", re.I)


class Assets(HTMLParser):
    """The scripts (``<script src>``), images (``<img src>``) and linked resources (``<link href>``:
    styles, fonts, icons) a page loads; anchors (``<a href>``) are links, not loaded, and are not
    collected."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img") and attrs.get("src"):
            self.found.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.found.append(attrs["href"])


def assets(page):
    parser = Assets()
    parser.feed(page.read_text())
    return parser.found


def test_the_config_loads_mathjax_from_the_build_and_no_cdn_extension(tmp_path):
    """Cheap: the staged _config.yml points MathJax at _static/ and leaves out sphinx_thebe, and
    the installed MathJax holds the file and fonts that path names."""
    config = yaml.safe_load((book.stage(tmp_path) / "_config.yml").read_text())["sphinx"]["config"]
    assert not EXTERNAL.match(config["mathjax_path"]), config["mathjax_path"]
    assert "sphinx_thebe" not in config["extensions"] and "myst_nb" in config["extensions"]
    source = book.mathjax_source()
    assert (source / book.MATHJAX_ENTRY).is_file()
    assert any((source / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    return book.build(tmp_path_factory.mktemp("book"))


@pytest.mark.slow
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


@pytest.mark.slow
def test_intro_results_and_guides(html):
    for name in ("index.html", "intro.html", "results.html", "guides.html"):
        assert (html / name).exists(), name
    intro = (html / "intro.html").read_text()
    assert all(f"{nb.assignment}/{nb.name}.html" in intro for nb in course.notebooks())  # the table of contents


@pytest.mark.slow
def test_every_page_loads_its_scripts_and_styles_from_the_build(html):
    pages = sorted(p for p in html.rglob("*.html") if p.relative_to(html).parts[0] != "_static")  # not theme templates
    assert len(pages) >= len(course.notebooks()) + 3
    for page in pages:
        for ref in assets(page):
            assert not EXTERNAL.match(ref), (page.relative_to(html), ref)
            if not ref.startswith(("data:", "#")):
                target = (page.parent / ref.split("?")[0].split("#")[0]).resolve()
                assert target.is_file(), (page.relative_to(html), ref)
    for css in (html / "_static").rglob("*.css"):  # no stylesheet pulls in fonts or styles from outside
        assert not re.search(r"(@import|url\()\s*['\"]?(https?:)?//", css.read_text(errors="replace")), css
    chapter = html / course.notebooks()[0].assignment / f"{course.notebooks()[0].name}.html"
    mathjax = [ref for ref in assets(chapter) if ref.split("?")[0].endswith(book.MATHJAX_PATH)]
    assert mathjax, assets(chapter)
    assert (chapter.parent / mathjax[0].split("?")[0]).resolve() == (html / "_static" / book.MATHJAX_PATH).resolve()
    assert any((html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
