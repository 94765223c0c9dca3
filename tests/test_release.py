"""What a release needs: one version source, a changelog, every docs page in the site's nav."""

from __future__ import annotations

import re
from pathlib import Path

import spatialrec

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"(?m)^version\s*=", pyproject)
    assert 'path = "src/spatialrec/__init__.py"' in pyproject
    init = (ROOT / "src" / "spatialrec" / "__init__.py").read_text()
    assert len(re.findall(r"(?m)^__version__ = ", init)) == 1
    # PEP 440, e.g. 0.2.0 or 0.2.0.dev0
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", spatialrec.__version__)


def test_changelog_covers_the_releases():
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"(?m)^## \[([^\]]+)\]", text)
    assert headings[0] == "Unreleased" and "0.1.0" in headings
    unreleased = text.split("## [0.1.0]")[0]
    for section in ("### Added", "### Changed", "### Removed"):
        assert section in unreleased
    for breaking in ("bilinear=", "trilinear=", '"num_cases"', '"per_case"'):
        assert breaking in unreleased, breaking
    released = spatialrec.__version__.split(".dev")[0]
    # A released version has its own heading; a .dev version is the Unreleased section.
    assert ".dev" in spatialrec.__version__ or f"## [{released}]" in text


def test_every_docs_page_is_in_the_site_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    docs = ROOT / "docs"
    pages = [p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if not p.relative_to(docs).as_posix().startswith("_")]
    missing = [p for p in pages if not re.search(rf"(?m)^\s*-\s*(?:[^:\n]+:\s*)?{re.escape(p)}\s*$", nav)]
    assert not missing, f"docs pages not in mkdocs.yml nav: {missing}"
