"""The documentation site builds with warnings as errors (`mkdocs build --strict`), as in CI."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


@pytest.mark.skipif(shutil.which("mkdocs") is None and not os.environ.get("CI"), reason="mkdocs not installed")
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "recipes" / "flashdepth_temporal" / "index.html").is_file()
    # Links to repository files outside docs/ would lead nowhere on the site: the hook made them text.
    for page in (tmp_path / "site").rglob("*.html"):
        targets = re.findall(r'href="([^"]+)"', page.read_text())
        dead = [t for t in targets if t.startswith("/configs/") or t.endswith((".yaml", ".yml", ".py"))]
        assert not dead, (page, dead)


def test_repository_links_become_text_or_repository_urls():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        from mkdocs_hooks import repository_links
    finally:
        sys.path.pop(0)
    page = "See [`configs/dav2.yaml`](/configs/dav2.yaml), [the page](other.md) and [gone](/configs/none.yaml)."
    assert repository_links(page) == "See `configs/dav2.yaml`, [the page](other.md) and [gone](/configs/none.yaml)."
    linked = repository_links(page, "https://example.org/vdf")
    assert "[`configs/dav2.yaml`](https://example.org/vdf/blob/main/configs/dav2.yaml)" in linked


def test_every_page_is_in_the_nav():
    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        config = yaml.safe_load(f)
    in_nav = set(_nav_pages(config["nav"]))
    docs = os.path.join(ROOT, "docs")
    pages = {
        os.path.relpath(os.path.join(d, f), docs).replace(os.sep, "/")
        for d, _, files in os.walk(docs)
        for f in files
        if f.endswith(".md")
    }
    assert in_nav - pages == set(), f"nav entries without a page: {sorted(in_nav - pages)}"
    # Committed pages must be reachable from the nav (pages being written may wait for theirs).
    listed = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0:
        tracked = {p[len("docs/") :] for p in listed.stdout.split() if p.endswith(".md")}
        missing = sorted(tracked - in_nav)
        assert not missing, f"committed pages missing from mkdocs.yml nav: {missing}"
