"""mkdocs hook: links to repository files outside ``docs/`` become plain text on the built site.

Pages link configs and experiment files repository-root absolute (``[`configs/dav2.yaml`](/configs/dav2.yaml)``),
which a repository browser resolves; the built site holds only ``docs/``, so there such a link
would lead nowhere. When ``mkdocs.yml`` sets ``repo_url``, the link goes to the file in the
repository instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_LINK = re.compile(r"\[([^\]]+)\]\((/[^)\s#]+)(#[^)\s]*)?\)")


def repository_links(markdown: str, repo_url: str | None = None, branch: str = "main") -> str:
    """``markdown`` with each ``[text](/path)`` to an existing repository file made plain ``text``
    (or a link into ``repo_url``)."""

    def replace(match: re.Match) -> str:
        text, path, anchor = match.group(1), match.group(2), match.group(3) or ""
        if not (ROOT / path.lstrip("/")).exists():
            return match.group(0)
        if repo_url:
            return f"[{text}]({repo_url.rstrip('/')}/blob/{branch}{path}{anchor})"
        return text

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files):
    return repository_links(markdown, config.get("repo_url"))
