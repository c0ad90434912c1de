"""One writer per folder: the lock every command that writes a run folder or a job folder holds
(``slkd train``, ``slkd distill``, ``slkd compress``, ``slkd demo``).

The lock is an exclusive advisory ``flock`` on :data:`LOCK_FILE` inside the folder, taken before
the folder's contents are looked at and held until the command ends. A second process that wants
the same folder is refused in one line naming the folder and the PID that holds it (written into
the lock file). The operating system releases the lock when its process ends, however it ends
(``kill -9``, a crash, a power cut), so a lock file left behind never blocks a rerun: only a live
process holds the lock; the file by itself means nothing.

Within one process the lock is re-entrant (``slkd demo`` claims its folder before the pipeline
claims it again; a test may build two trainers on one folder). Under ``torchrun`` only rank 0
writes, so only rank 0 locks, and every rank learns whether it got the lock
(:func:`lock_on_rank0`), so that all of them stop together when it did not. Where ``fcntl`` is
missing (Windows) or the file system refuses locks, no lock is taken.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Callable

from slkd.errors import SlkdError
from slkd.fileio import file_in_the_way

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "FolderInUse", "FolderLock", "lock_on_rank0"]

#: the lock file inside a locked folder (hidden; no listing of a folder's contents counts it)
LOCK_FILE = ".slkd.lock"

_held: dict[Path, list] = {}  # resolved folder -> [file descriptor or None, holders in this process]
_guard = threading.Lock()


class FolderInUse(SlkdError):
    """Another live process holds the folder's lock."""


def _holder(fd: int) -> str:
    """What the lock file says about the process holding it."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "PID unknown"
    return f"PID {pid}" + (f": {command}" if command else "")


class FolderLock:
    """The exclusive lock of ``folder`` (created if missing), held from construction until
    :meth:`release` (or the end of a ``with`` block, or of the process). Raises
    :class:`FolderInUse` when another process holds it, and :class:`SlkdError` when the folder
    cannot be made. A command that then refuses the folder calls :meth:`abandon`, which also
    removes what the lock itself added (the lock file, the folder if it made it), so a refusal
    leaves the folder as it found it."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._released = False
        blocking = file_in_the_way(self.folder)
        if blocking is not None:
            raise SlkdError(f"cannot write the folder {self.folder}: {blocking} is a file, not a folder")
        made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            key = self.folder.resolve()
        except OSError as exc:
            raise SlkdError(f"cannot write the folder {self.folder}: {exc.strerror or exc}") from None
        self._key = key
        with _guard:
            entry = _held.get(key)
            if entry is not None:  # this process holds it already
                entry[1] += 1
                return
            try:
                fd, made_file = self._acquire()
            except SlkdError:
                _remove(made=made)
                raise
            _held[key] = [fd, 1, made, made_file]

    def _acquire(self) -> tuple[int | None, bool]:
        """The locked descriptor of the lock file, and whether this created the file."""
        if fcntl is None:
            return None, False
        path = self.folder / LOCK_FILE
        while True:
            made_file = not path.exists()
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise SlkdError(f"cannot write the folder {self.folder}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = _holder(fd)
                    os.close(fd)
                    raise FolderInUse(
                        f"{self.folder} is being written by another process ({holder}); one process "
                        "at a time may write into a folder: wait for it to end, or stop it (nothing "
                        "was written)") from None
                return fd, made_file  # a file system without locks (ENOLCK, EOPNOTSUPP): unlocked
            try:  # the file may have been removed by a holder that abandoned it: lock the new one
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:3]]) if sys.argv and sys.argv[0] else ""
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, the message lacks the PID
            pass
        return fd, made_file

    def release(self, *, abandon: bool = False) -> None:
        """Give the lock up (once; the folder's last holder in this process closes it)."""
        if self._released:
            return
        self._released = True
        with _guard:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                fd, _, made, made_file = entry
                if abandon and made_file:
                    _remove(self.folder / LOCK_FILE)  # before the lock goes: no one else has it
                if fd is not None:
                    os.close(fd)  # closing the descriptor releases the flock
                if abandon:
                    _remove(made=made)

    def abandon(self) -> None:
        """:meth:`release` after a refusal: also remove the lock file and the folders this lock
        created (if still empty), so that nothing was written."""
        self.release(abandon=True)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _remove(file: Path | None = None, made: list[Path] = ()) -> None:
    """Remove ``file``, then the folders of ``made`` (innermost first) that are empty."""
    try:
        if file is not None:
            file.unlink()
        for folder in made:
            folder.rmdir()
    except OSError:  # not empty (someone else writes there now), or gone already
        pass


def lock_on_rank0(folder: str | os.PathLike, dist, then: Callable[[], None] | None = None) -> FolderLock | None:
    """Lock ``folder`` on rank 0 (``dist``: :class:`slkd.engine.distributed.DistInfo`) and run
    ``then`` there while holding it (the checks that must see a folder no one else changes);
    every rank learns whether that succeeded and raises if it did not (rank 0 with the reason),
    so no rank waits for a rank 0 that stopped. Returns rank 0's lock (None elsewhere)."""
    import torch

    from slkd.engine.distributed import all_reduce_sum

    lock, error = None, None
    if dist.is_main:
        try:
            lock = FolderLock(folder)
            if then is not None:
                then()
        except Exception as exc:  # noqa: BLE001 - every rank must hear of any failure here
            error = exc
            if lock is not None:
                lock.abandon()
                lock = None
    if dist.enabled:
        flag = torch.tensor([0.0 if error is None else 1.0], device=dist.device)
        if all_reduce_sum(flag).item() > 0 and error is None:
            raise SlkdError(f"rank 0 could not start writing {folder}; its message says why")
    if error is not None:
        raise error
    return lock
