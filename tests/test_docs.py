"""The documentation site builds, lists every page, and the README's links into it resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# [text](target): the README's links; images and autolinks are not used there
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav: list) -> set[str]:
    """Every page path named in an mkdocs ``nav`` (entries nest: ``{title: page}`` or ``{title: [...]}``)."""
    out: set[str] = set()
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for v in values:
            if isinstance(v, list):
                out |= nav_pages(v)
            elif isinstance(v, str) and not re.match(r"[a-z]+://", v):
                out.add(v)
    return out


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    # NOTE: mkdocs-material prints a banner about MkDocs 2.0 on every build; it is not a warning
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_docs_page_is_in_the_nav() -> None:
    # mkdocs reports a page missing from the nav as INFO unless validation says otherwise: check it here too
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - listed)}"
    assert listed - pages == set(), f"nav entries without a page: {sorted(listed - pages)}"


def test_readme_links_into_docs_results_and_changelog_resolve() -> None:
    targets = [t.split("#", 1)[0] for t in LINK.findall((ROOT / "README.md").read_text())]
    local = [t for t in targets if t.startswith("docs/") or t in ("benchmarks/RESULTS.md", "CHANGELOG.md")]
    assert any(t.startswith("docs/") for t in local), "the README links no docs page"
    missing = sorted({t for t in local if not (ROOT / t).is_file()})
    assert missing == [], f"README links to missing files: {missing}"
