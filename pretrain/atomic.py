"""Atomic writes: everything the toolkit writes (run directories, checkpoints, caches, exports) is made in a
temporary sibling and renamed into place, so a kill or a failure leaves the old version or the new one, never half,
and nothing that blocks the next attempt."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


def fsync_tree(path: Path):
    """Flush every file under path (or path itself) and the directories to disk."""
    path = Path(path)
    if path.is_file():
        _fsync(path)
        _fsync_dir(path.parent)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(Path(root) / name)
        _fsync_dir(Path(root))


def _fsync(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path):
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


def unwritable_reason(path: Path) -> str | None:
    """Why `path` could not be created and written (None when it could), found without creating anything."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def temporary_sibling(path: Path) -> Path:
    """A fresh name next to `path` (same filesystem, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def publish(tmp: Path, path: Path, if_exists: str = "replace"):
    """Flush tmp and rename it to path. An existing path is replaced only once tmp is complete ("replace"), or
    kept and tmp discarded ("keep": a concurrent writer made the same content-keyed file first)."""
    tmp, path = Path(tmp), Path(path)
    fsync_tree(tmp)
    if path.exists() and if_exists == "keep":
        _remove(tmp)
        return
    if tmp.is_file():  # a file replaces a file in one step
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return
    backup = None
    if path.exists():
        backup = temporary_sibling(path)
        os.rename(path, backup)
    try:
        os.rename(tmp, path)
    except OSError:
        if backup is not None:
            os.rename(backup, path)
        elif path.exists() and if_exists == "keep":
            _remove(tmp)
            return
        raise
    _fsync_dir(path.parent)
    if backup is not None:
        _remove(backup)


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


@contextmanager
def atomic_dir(path: Path, if_exists: str = "replace"):
    """Yield an empty temporary directory; when the block succeeds it becomes `path` (see publish), when it fails
    it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        publish(tmp, path, if_exists)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str):
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: Path, data: dict):
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))
