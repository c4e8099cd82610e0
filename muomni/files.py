"""Atomic file writes: a temp file in the target's folder, renamed over the target when complete.

A kill or an error mid-write never leaves half a file behind, and whatever was at the path before is untouched.
Every writer of the package goes through :func:`atomic_path` (wavs, checkpoints, caches, JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, mkdir: bool = True) -> Iterator[Path]:
    """Yield a new, empty, uniquely named temp file beside ``path``; rename it over ``path`` when the block
    ends without error, remove it otherwise. Unique names: two processes writing the same file at once each
    write their own, and the last rename wins."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomic text write; the folder is created."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
