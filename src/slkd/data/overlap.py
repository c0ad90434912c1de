"""Validation images that are also training images.

A score on images the network was trained on measures how well it fits its training data, not
how well it restores images it has not seen. :func:`check_held_out` is the one rule every
command applies (``slkd compress``, ``slkd demo`` through it, and the runs of ``slkd train`` /
``slkd distill``): a validation set **all** of whose images are training images is refused; a
set with some is a warning naming how many, and the caller marks its scores as not held out.

An image counts as a training image when one of its files (the degraded or the clean file of a
pair) is the same file as a training file — the same resolved path, links followed, which also
catches a ``--val`` inside a training folder read with its sub-folders — or holds the same
bytes (a copy). Only files of a size some validation file has are hashed, so the check costs a
``stat`` per training file and a hash of the few of the same size. A copy re-encoded (another
format or quality) is not found.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from slkd.data.selection import names_list
from slkd.errors import DatasetError

__all__ = ["check_held_out", "held_out_warning", "training_copies"]


def _digest(path: Path) -> bytes | None:
    try:
        h = hashlib.blake2b(digest_size=32)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.digest()
    except OSError:  # unreadable files are named by the data sets' own checks
        return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def training_copies(train_files: Iterable[Path], items: Sequence[Sequence[Path]]) -> list[int]:
    """The indices of the ``items`` (each a sequence of files) of which a file is also a
    training file: the same resolved path or the same bytes."""
    train = list(dict.fromkeys(Path(p) for p in train_files))
    resolved = {p.resolve() for p in train}
    found: set[int] = set()
    by_size: dict[int, list[tuple[int, Path]]] = {}
    for i, files in enumerate(items):
        for f in files:
            if Path(f).resolve() in resolved:
                found.add(i)
                break
        else:
            for f in files:
                size = _size(Path(f))
                if size is not None:
                    by_size.setdefault(size, []).append((i, Path(f)))
    if by_size:
        wanted: dict[bytes, set[int]] = {}
        hashed_sizes: set[int] = set()
        for t in train:
            size = _size(t)
            if size not in by_size:
                continue
            if size not in hashed_sizes:  # hash the validation files of this size once
                hashed_sizes.add(size)
                for i, f in by_size[size]:
                    digest = _digest(f)
                    if digest is not None:
                        wanted.setdefault(digest, set()).add(i)
            digest = _digest(t)
            if digest in wanted:
                found.update(wanted[digest])
    return sorted(found)


def check_held_out(train_files: Iterable[Path], sets: Mapping[str, Sequence[tuple[str, Sequence[Path]]]],
                   *, train: str, limits: Mapping[str, int | None] | None = None) -> dict[str, dict]:
    """Refuse a validation set whose every image is a training image; return, for each set with
    some, ``{"count": k, "of": n, "names": [...]}`` (the caller warns and marks the scores).

    ``sets`` maps a set's name to its items as ``(name, files)``; ``train`` names the training
    data in messages (``--train DIR``, ``data.train``). ``limits``: sets that are also scored on
    their first N items only (validation while training): that part must not be all training
    images either.
    """
    train_files = list(train_files)
    found: dict[str, dict] = {}
    for name, items in sets.items():
        if not items:
            continue
        shared = training_copies(train_files, [files for _, files in items])
        if not shared:
            continue
        limit = (limits or {}).get(name)
        first = len(items) if not limit else min(limit, len(items))
        if len(shared) == len(items) or sum(1 for i in shared if i < first) == first:
            what = (f"all {len(items)} image(s)" if len(shared) == len(items)
                    else f"the first {first} image(s) (those scored while training)")
            raise DatasetError(
                f"validation set {name}: {what} are also training images "
                f"(the same files, or files with the same content, as in {train}), so its scores "
                "would not measure images the network has not seen; give validation images that "
                "are not in the training data"
            )
        names = [items[i][0] for i in shared]
        found[name] = {"count": len(shared), "of": len(items), "names": names}
    return found


def held_out_warning(name: str, overlap: Mapping) -> str:
    """The warning of :func:`check_held_out`'s finding for one set."""
    return (f"{overlap['count']} of the {overlap['of']} image(s) of validation set {name} are also "
            f"training images ({names_list(list(overlap['names']))}): its scores are not those of "
            "held-out images")
