"""Files that readers see whole or not at all, and made durable with ``fsync``.

Every partial file is a hidden sibling named by `tmp_name` (``.<final name>.tmp-<pid>``), so a
crashed run's leftovers are recognisable (`tmp_base`) and never mistaken for outputs; it is moved
into place with ``os.replace``, atomic within one filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "fsync_dir",
    "fsync_file",
    "remove_path",
    "tmp_base",
    "tmp_name",
    "to_jsonable",
    "write_bytes_synced",
    "write_json_atomic",
]

_TMP_SUFFIX = re.compile(r"\.tmp-\d+$")


def tmp_name(base: str, pid: int | None = None) -> str:
    """The temporary name ``.<base>.tmp-<pid>`` of a file or folder to be renamed to ``base``.

    ``pid`` defaults to this process's: two processes never share a temporary name.
    """
    return f".{base}.tmp-{os.getpid() if pid is None else pid}"


def tmp_base(name: str) -> str | None:
    """The final name a temporary name stands for (``.clip.npz.tmp-12 -> clip.npz``), else ``None``."""
    match = _TMP_SUFFIX.search(name)
    if not name.startswith(".") or match is None:
        return None
    return name[1 : match.start()]


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries to disk, best effort.

    Makes a rename itself durable; not every platform can open a folder, hence no error.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic: for files inside a temporary folder)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def remove_path(path: Path) -> bool:
    """Delete a file, a symlink or a folder tree; True if something was there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary sibling of ``path`` to write; on success move it onto ``path``.

    On any error the temporary file is deleted and ``path`` is left as it was, so ``path`` is never
    seen half-written. The caller fsyncs the file if it must survive a power cut.
    """
    path = Path(path)
    tmp = path.parent / tmp_name(path.name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy / torch scalars and arrays, paths, tuples, sets and dataclasses made JSON.

    Non-finite floats become ``None``: strict JSON has no NaN, and a manifest must stay readable by
    every JSON parser (``jq``, browsers), not only Python's.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_jsonable(obj.tolist())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # torch.Tensor, without importing torch here
        return to_jsonable(obj.tolist())
    return str(obj)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` so that readers see the old file or the new one.

    The text goes to the temporary sibling (`atomic_path`), is fsynced, and is renamed over
    ``path``; the folder (created if missing) is fsynced after. Values pass through
    ``to_jsonable``. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # Serialised first: an object that cannot be written leaves not even a temporary file.
        text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
        write_bytes_synced(tmp, text.encode("utf-8"))
    fsync_dir(path.parent)
    return path
