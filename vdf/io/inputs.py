"""What ``vdf predict`` accepts as one input, how a folder tree is scanned for inputs, and how each is named.

A *video* here is either a container file (``.mp4 .mov .mkv .avi .webm``, case-insensitive) or a
folder of ``.png/.jpg/.jpeg`` frames in natural sort order (``frame2`` before ``frame10``).
`find_inputs` scans a folder tree for both kinds; `output_name` turns each into a unique,
filesystem-safe name for its outputs. Anything wrong with an input raises `VideoInputError`, whose
message names the file and says what is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from fnmatch import fnmatch
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoInputError",
    "find_inputs",
    "image_files",
    "natural_sort_key",
    "output_name",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")

# Longest output name before it is shortened (and made unique with a hash): leaves room for
# suffixes such as "_depth.mp4" under the usual 255-byte file-name limit, even in UTF-8.
_MAX_NAME_CHARS = 120


class VideoInputError(ValueError):
    """A video or image sequence that cannot be read; ``str(err) == f"{path}: {reason}"``.

    Attributes:
        path: the offending file or folder (for an image sequence, the image that failed).
        reason: what is wrong, in words a person can act on.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keeps the error picklable across DataLoader worker processes
        return type(self), (str(self.path), self.reason)


# --------------------------------------------------------------------------------------------
# Sorting and listing


def natural_sort_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``frame2 < frame10``; case-insensitive."""
    parts = re.split(r"(\d+)", text, flags=re.ASCII)
    # Text and numbers alternate from index 0 (text, possibly ""), so keys compare position by position.
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)) + (text,)


def _path_sort_key(rel: Path) -> tuple:
    return tuple(natural_sort_key(part) for part in rel.parts)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _has_ext(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions) and not _is_hidden(name)


def image_files(folder: Path) -> list[Path]:
    """The frames of an image-sequence folder (non-hidden .png/.jpg/.jpeg files), natural order."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and _has_ext(e.name, IMAGE_EXTENSIONS)]
    except OSError as err:
        raise VideoInputError(folder, f"cannot list the folder ({err.strerror or err})") from err
    return [folder / n for n in sorted(names, key=natural_sort_key)]


# --------------------------------------------------------------------------------------------
# Finding inputs and naming outputs


def _matches(rel: Path, pattern: str) -> bool:
    # A pattern without "/" is matched against the last path component only (like `find -name`);
    # otherwise against the whole relative path, where "*" also crosses "/" and a leading "**/"
    # may match no folder at all. Case-insensitive, like the extension checks.
    rel_s, pat = rel.as_posix().lower(), pattern.lower()
    if "/" not in pat:
        return fnmatch(rel.name.lower(), pat)
    return fnmatch(rel_s, pat) or (pat.startswith("**/") and fnmatch(rel_s, pat[3:]))


def find_inputs(root: str | Path, glob: str | None = None, recursive: bool = True) -> list[Path]:
    """Videos and image-sequence folders under ``root``, in natural sort order of their path.

    * a file with a video extension (``VIDEO_EXTENSIONS``, any case) is one input;
    * a folder holding images (``IMAGE_EXTENSIONS``) and *no* video file is one input (an image
      sequence); a folder holding videos contributes its videos and its images are ignored;
    * hidden files and folders (name starting with ``.``) are skipped; symlinked folders are not
      followed (no cycles), symlinked files are;
    * ``recursive=False`` looks only at ``root``'s own files and its direct sub-folders that are
      image sequences;
    * ``glob`` filters the results by their path relative to ``root`` (see `_matches`: ``"*.mp4"``
      matches names at any depth; ``"sub/*"`` matches the whole relative path; case-insensitive).

    ``root`` may itself be a file (returned as is, whatever its extension: it was named
    explicitly) or an image folder. Returns ``[]`` when nothing matches.
    """
    root = Path(root)
    if not root.exists():
        raise VideoInputError(root, "no such file or folder")
    if not root.is_dir():
        return [root]

    found: list[Path] = []

    def visit(folder: Path, depth: int) -> None:
        try:
            entries = [e for e in os.scandir(folder) if not _is_hidden(e.name)]
        except OSError as err:
            raise VideoInputError(folder, f"cannot list the folder ({err.strerror or err})") from err
        files = [e for e in entries if e.is_file()]
        videos = [Path(e.path) for e in files if _has_ext(e.name, VIDEO_EXTENSIONS)]
        has_images = any(_has_ext(e.name, IMAGE_EXTENSIONS) for e in files)
        if depth == 0 or recursive:
            found.extend(videos)
            if has_images and not videos:
                found.append(folder)
        elif has_images and not videos:  # non-recursive: a direct sub-folder of frames is one video
            found.append(folder)
        if recursive or depth == 0:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    visit(Path(e.path), depth + 1)

    visit(root, 0)

    def rel(p: Path) -> Path:
        return Path(p.name or p.resolve().name) if p == root else p.relative_to(root)

    if glob:
        found = [p for p in found if _matches(rel(p), glob)]
    return sorted(found, key=lambda p: _path_sort_key(rel(p)))


def _sanitize(part: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in part)
    # A leading "." hides the file, a leading "-" reads as a CLI flag, a trailing "." is dropped
    # by Windows.
    if safe[:1] in (".", "-"):
        safe = "_" + safe[1:]
    if safe.endswith("."):
        safe = safe[:-1] + "_"
    return safe or "_"


def _stem_key(name: str, is_dir: bool) -> str:
    if not is_dir and _has_ext(name, VIDEO_EXTENSIONS):
        name = name[: -len(Path(name).suffix)]
    return name.casefold()


@functools.lru_cache(maxsize=64)
def _sibling_keys(folder: Path, mtime_ns: int) -> dict[str, int]:
    """How many videos / folders in ``folder`` share each name key (cached per folder version:
    ``mtime_ns`` changes when entries are added or removed, so a stale listing is never used)."""
    counts: dict[str, int] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return counts
    for e in entries:
        if not _is_hidden(e.name) and (e.is_dir() or _has_ext(e.name, VIDEO_EXTENSIONS)):
            key = _stem_key(e.name, e.is_dir())
            counts[key] = counts.get(key, 0) + 1
    return counts


def _has_twin(path: Path) -> bool:
    """True if a sibling video or folder would get the same name (``clip.mp4`` + ``clip.mov`` or
    ``clip/``, or names differing only in case, which collide on macOS/Windows file systems)."""
    try:
        mtime_ns = path.parent.stat().st_mtime_ns
    except OSError:
        return False
    is_dir = path.is_dir()
    counted = is_dir or _has_ext(path.name, VIDEO_EXTENSIONS)  # is `path` itself in the counts?
    # Cached listing: naming every file of a 10k-file folder must not list the folder 10k times.
    return _sibling_keys(path.parent, mtime_ns).get(_stem_key(path.name, is_dir), 0) > int(counted)


def output_name(path: Path, root: Path) -> str:
    """A unique, filesystem-safe name for an input's outputs, from its path relative to ``root``.

    Folders are joined with ``"__"`` and the video extension is dropped:
    ``root/sub/clip.mp4 -> "sub__clip"``, image folder ``root/seq1 -> "seq1"``; ``path == root``
    gives the file's stem / folder's name. Characters other than letters, digits and ``-._`` become
    ``_``. Whenever that could make two inputs collide -- a character was replaced, a component
    already holds ``"__"``, a sibling video or folder has the same stem up to case
    (``clip.mp4`` + ``clip.mov``), or the name is longer than 120 characters (then shortened) --
    ``"-"`` and 8 hex digits of a hash of the relative path are appended, e.g. ``"my_clip-3f2a9c01"``.
    """
    path, root = Path(path), Path(root)
    if path == root:
        rel = Path(path.name or path.resolve().name)
    else:
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise ValueError(f"{path} is not inside {root}") from None
    parts = list(rel.parts)
    if not path.is_dir() and _has_ext(parts[-1], VIDEO_EXTENSIONS):
        parts[-1] = parts[-1][: -len(Path(parts[-1]).suffix)]
    safe = [_sanitize(p) for p in parts]
    name = "__".join(safe)
    ambiguous = safe != parts or any("__" in p for p in parts) or _has_twin(path)
    if len(name) > _MAX_NAME_CHARS:
        name, ambiguous = name[:_MAX_NAME_CHARS], True
    if ambiguous:
        name += "-" + hashlib.sha1(rel.as_posix().encode("utf-8")).hexdigest()[:8]
    return name
