"""What the test suite changes in the checkout it runs from (it must change nothing).

`changed_paths` lists every path git reports as modified, untracked or ignored, one file at a
time; the conftest takes it before and after the session and fails the run on any difference.
Python's own byte-code caches and pytest's cache are left out: the interpreter and pytest write
them wherever they run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

#: Paths written by Python and pytest themselves, not by vdf's tests.
TOOL_CACHES = ("__pycache__/", ".pytest_cache/", ".egg-info/")


def changed_paths(root: str | Path) -> set[str] | None:
    """Modified, untracked and ignored files under ``root`` (a git work tree); None outside git."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "-z"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    paths = {entry[3:] for entry in out.stdout.split("\0") if len(entry) > 3}
    return {p for p in paths if not any(cache in f"/{p}" for cache in TOOL_CACHES)}
