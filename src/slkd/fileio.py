"""Atomic file writing: a crash or a full disk never leaves a half-written file behind.

Everything slkd writes that a user may rely on later (weights, checkpoints, images, reports)
goes through :func:`atomic_write`: the data goes to a temporary file in the destination folder,
is flushed to disk, and only then replaces the destination with ``os.replace`` (atomic on POSIX
and Windows when both are on the same file system); on POSIX the folder is flushed too, so the
rename itself survives a power cut. A process killed mid-write (SIGKILL, OOM killer) cannot run
its clean-up and leaves the hidden temporary file behind: :func:`remove_stale_temps` deletes
those of a folder that no other process is writing to (``slkd train --resume`` does).
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is moved onto ``path``."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(dest.name), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give the result the usual permissions instead
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename) != tmp:
            raise
        # a full disk fails a write() that names no file, or names the hidden temporary: name
        # the file that was being written
        raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_prefix(name: str) -> str:
    """The name prefix of the temporary files :func:`atomic_path` creates for ``name``."""
    return f".{name}."


def remove_stale_temps(folder: str | os.PathLike, names: list[str] | tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes of ``names`` left in ``folder``.

    Only call this when no other process may be writing these files right now. Returns the
    paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if entry.suffix == ".tmp" and any(entry.name.startswith(temp_prefix(n)) for n in names):
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return removed


def broken_link(path: str | os.PathLike) -> str | None:
    """Why ``path``, a symbolic link, leads to no file, in words — its target does not exist (a
    dangling link), or links lead back to themselves (a symlink loop) — or None when ``path`` is
    not a broken link."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
        return None
    except OSError as exc:
        target = os.readlink(path)
        if exc.errno == errno.ELOOP:
            return f"it is a link to {target} in a loop of links that never reaches a file (a symlink loop)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"it is a link to {target}, which does not exist (a dangling link)"
        return f"it is a link to {target}, which cannot be reached ({exc.strerror or exc})"


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing parent of ``path`` if it is a file (nothing can be written under
    ``path`` then: ``--out weights.pth/sub``), else None. Commands check this before their first
    write, instead of failing at it."""
    existing = next((p for p in Path(path).parents if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
