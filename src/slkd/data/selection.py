"""Which files (or pairs) belong to a dataset: folders, ``names``, ``exclude``, a held-out
validation split and ``limit``, each a pure function of the file names (and a seed)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from slkd.data.image_io import IMAGE_EXTENSIONS, list_images, unread_files
from slkd.errors import DatasetError

__all__ = ["collect_images", "exclude_stems", "holdout_split", "names_list", "select_items", "unread_warnings"]


def exclude_stems(exclude: str | os.PathLike[str] | Iterable[str] | None) -> set[str]:
    """The file stems to leave out: a list of stems, or a folder whose image stems are meant
    (``exclude=<data>/CBSD68`` turns BSDS500 into CBSD432). A string is always a folder."""
    if exclude is None:
        return set()
    if isinstance(exclude, (str, os.PathLike)):
        folder = Path(exclude)
        if not folder.is_dir():
            raise DatasetError(
                f"exclude: {folder} is not a folder (give a folder whose image names are left "
                "out, or a list of names)"
            )
        return {p.stem for p in list_images(folder)}
    return {str(s) for s in exclude}


def collect_images(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   recursive: bool = False, unread: list[str] | None = None) -> list[Path]:
    """Image files of one or several folders, in a fixed order: roots in the given order, and
    inside each root its own files (by name), then each sub-folder's (by name, depth first)
    when ``recursive``. Hidden files and folders are skipped. ``unread``, when given, receives
    a warning per folder naming its files whose extension slkd does not read."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        folders = [root]
        found.extend(list_images(root))  # raises DatasetError when missing
        if recursive:
            for dirpath, dirnames, _ in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if Path(dirpath) != root:
                    found.extend(list_images(dirpath))
                    folders.append(Path(dirpath))
        if unread is not None:
            for folder in folders:
                unread.extend(unread_warnings(folder))
    return found


def names_list(items: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` names, and how many there are in all when there are more."""
    return ", ".join(items[:limit]) + (f" … ({len(items)} in all)" if len(items) > limit else "")


def unread_warnings(folder: str | os.PathLike[str]) -> list[str]:
    """A warning naming the files of ``folder`` that are not read (their extension is not an
    image type slkd reads: ``.jfif``, ``.gif``, ``.txt`` …), or none."""
    skipped = [p.name for p in unread_files(folder)]
    if not skipped:
        return []
    return [f"{len(skipped)} file(s) in {folder} are not read (slkd reads "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}): {names_list(skipped)}"]


def holdout_split(groups: Sequence[str], count: int, seed: int = 0) -> set[str]:
    """The ``count`` groups (file stems; for pairs, the clean image's stem) held out for
    validation: a seeded sample of the sorted distinct groups, so the split is a function of the
    file names and the seed alone — the same on every machine, whatever the listing order, and
    the same for a degraded set and its clean images. Pairs that share a clean image (SOTS
    ``1400_1`` … ``1400_10``) always fall on the same side."""
    distinct = sorted(set(groups))
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < len(distinct):
        raise DatasetError(f"holdout.count: must be between 1 and {len(distinct) - 1} "
                           f"(there are {len(distinct)} distinct images), got {count!r}")
    return set(random.Random(int(seed)).sample(distinct, count))


def select_items(keys: list[tuple[str, ...]], names: Iterable[str] | None, exclude: Any,
            limit: int | None, where: str, holdout: tuple[int, int, str] | None = None) -> list[int]:
    """Indices of the items kept by ``names`` / ``exclude`` / ``holdout`` / ``limit``.
    ``keys[i]`` holds the stems by which item i may be named, its clean image's stem last.
    ``holdout = (count, seed, take)`` carves a validation split out of what names/exclude kept
    (:func:`holdout_split`): ``take="held"`` keeps the held-out items, ``"rest"`` the others."""
    keep = list(range(len(keys)))
    if names is not None:
        if isinstance(names, (str, os.PathLike)):
            raise DatasetError("names: expected a list of file names (stems), got a single string")
        wanted = [str(n) for n in names]
        present = {s for k in keys for s in k}
        missing = [n for n in wanted if n not in present]
        if missing:
            raise DatasetError(f"names: not found in {where}: {names_list(missing)}")
        wanted_set = set(wanted)
        keep = [i for i in keep if wanted_set.intersection(keys[i])]
    drop = exclude_stems(exclude)
    if drop:
        keep = [i for i in keep if not drop.intersection(keys[i])]
    if holdout is not None:
        count, seed, take = holdout
        if take not in ("held", "rest"):
            raise DatasetError(f"holdout.take: 'held' or 'rest', got {take!r}")
        held = holdout_split([keys[i][-1] for i in keep], count, seed)
        keep = [i for i in keep if (keys[i][-1] in held) == (take == "held")]
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DatasetError(f"limit: must be a positive integer, got {limit!r}")
        keep = keep[:limit]
    if not keep:
        raise DatasetError(f"no images left in {where} after applying names/exclude")
    return keep
