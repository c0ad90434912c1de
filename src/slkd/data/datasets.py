"""Training and validation datasets for image restoration: deterministic, resumable, cached.

Two datasets share one item protocol:

* :class:`PairedImageDataset` — degraded/clean folders (``input/``+``target/``, ``noisy/``+
  ``mean/`` …), pairs matched **by file name** with :func:`slkd.data.folders.match_pairs`;
* :class:`DegradedImageDataset` — clean images only (one or several folders, optionally with
  their sub-folders), degraded on the fly by a callable from :mod:`slkd.data.degrade`.

Item access
-----------
``dataset[(index, seed)]`` is a **training sample**: a dict ``{"lq", "gt", "name"}`` with C×P×P
float32 tensors. All of its randomness — crop position, flips and 90° rotations (identical for
``lq`` and ``gt``; for non-square whole images only the shape-keeping ones), degradation, drawn
in that order — comes from ``torch.Generator().manual_seed(seed)``, so the sample is a pure function of
``(index, seed)``: nothing depends on the worker process, the order of requests or any global
random state. Together with :class:`slkd.data.sampler.TrainSampler`, which hands out
``(index, seed)`` pairs as a function of the training step, this makes a resumed run see exactly
the batches of an uninterrupted one, for any number of DataLoader workers.

``dataset[index]`` (a plain integer) is the **evaluation item**: the whole image (or its centre
``patch_size`` crop), degraded deterministically with ``eval_seed``. For Gaussian noise this is
:func:`~slkd.data.folders.add_test_noise` with that seed, so validation PSNR equals what
``slkd eval`` reports on the same folder.

``channels`` (1 or 3) makes every image consistent (:func:`~slkd.data.transforms.to_channels`),
after decoding and before the degradation.

Decoding and caching (:mod:`slkd.data.cache`), file selection (:mod:`slkd.data.selection`) and
the pixel transforms (:mod:`slkd.data.transforms`) live in their own modules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from slkd.data.cache import CACHE_MODES, DEFAULT_CACHE_LIMIT, ImageCache, probe_image
from slkd.data.degrade import build_degradation, derive_seed
from slkd.data.folders import PAIRED_LAYOUTS, channels_word, pair_folders
from slkd.data.selection import collect_images, exclude_stems, holdout_split, names_list, select_items
from slkd.data.transforms import Box, dihedral, dihedral_box, to_channels
from slkd.errors import DatasetError

__all__ = [
    "DegradedImageDataset",
    "PairedImageDataset",
    # re-exported from the modules they moved to
    "CACHE_MODES",
    "DEFAULT_CACHE_LIMIT",
    "ImageCache",
    "collect_images",
    "exclude_stems",
    "holdout_split",
    "probe_image",
    "to_channels",
]


def _check_options(patch_size: Any, channels: Any, cache: Any) -> None:
    if patch_size is not None and (isinstance(patch_size, bool) or not isinstance(patch_size, int)
                                   or patch_size < 1):
        raise DatasetError(f"patch_size: must be a positive integer or None, got {patch_size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DatasetError(f"channels: must be 1 or 3, got {channels!r}")
    if cache not in CACHE_MODES:
        raise DatasetError(f"cache: must be one of {', '.join(CACHE_MODES)}, got {cache!r}")



class _RestorationDataset(Dataset):
    """The item protocol shared by both datasets; subclasses provide :meth:`_read` (and
    :meth:`_degrade` when the degraded image is synthesised)."""

    def __init__(self, patch_size: int | None, augment: bool, channels: int) -> None:
        self.patch_size = patch_size
        self.augment = bool(augment)
        self.channels = channels
        self.names: list[str] = []
        self._sizes: list[tuple[int, int]] = []  # (height, width) per item
        self._files: list[Path] = []  # the file named in errors (the degraded one when paired)
        #: what the folders held that is not used, by name (files not read, targets without a
        #: degraded image); the commands print them
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def item_files(self) -> list[tuple[Path, ...]]:
        """The files each item is read from (degraded and clean of a pair; the clean image of
        an on-the-fly item)."""
        raise NotImplementedError

    def image_sizes(self) -> list[tuple[Path, tuple[int, int]]]:
        """(file, (height, width)) of every item's full image, without decoding anything; the
        file is the degraded one of a pair (the one error messages name)."""
        return list(zip(self._files, self._sizes))

    # subclasses: the degraded (None when synthesised) and clean crops of item i for ``box``
    def _read(self, i: int, box: Box) -> tuple[torch.Tensor | None, torch.Tensor]:
        raise NotImplementedError

    # on-the-fly datasets: degrade the (augmented) clean window; gen None = evaluation
    def _degrade(self, i: int, clean: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _margin(self) -> int:
        return 0

    def _check_patch(self) -> None:
        p = self.patch_size
        if p is None:
            return
        small = [f"{self._files[i].name} ({w}×{h})" for i, (h, w) in enumerate(self._sizes)
                 if h < p or w < p]
        if small:
            raise DatasetError(
                f"{len(small)} image(s) smaller than the {p}×{p} patch: {names_list(small, 10)}"
            )

    def _window(self, i: int, top: int, left: int, ph: int, pw: int, margin: int) -> tuple[Box, Box]:
        """The read window (patch plus up to ``margin`` px of context per side) and the patch's
        box inside it."""
        h, w = self._sizes[i]
        t0, l0 = max(0, top - margin), max(0, left - margin)
        t1, l1 = min(h, top + ph + margin), min(w, left + pw + margin)
        return (t0, l0, t1 - t0, l1 - l0), (top - t0, left - l0, ph, pw)

    def _item(self, i: int, seed: int | None) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        i %= n
        h, w = self._sizes[i]
        p = self.patch_size
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        # 1. the patch position (random for training, centred for evaluation)
        if p is None:
            top, left, ph, pw = 0, 0, h, w
        elif gen is None:
            top, left, ph, pw = (h - p) // 2, (w - p) // 2, p, p
        else:
            top = int(torch.randint(h - p + 1, (), generator=gen))
            left = int(torch.randint(w - p + 1, (), generator=gen))
            ph = pw = p
        margin = self._margin() if p is not None else 0
        window, box = self._window(i, top, left, ph, pw, margin)
        lq, gt = self._read(i, window)
        # 2. flips/rotations of the window, before any synthetic degradation, so that rain
        #    keeps falling down and blur kernels keep their own random orientation
        if gen is not None and self.augment:
            if ph == pw:
                code = int(torch.randint(8, (), generator=gen))
            else:  # only the shape-keeping ones: identity, rot180, h-flip, v-flip
                code = 2 * int(torch.randint(4, (), generator=gen))
            box = dihedral_box(box, tuple(gt.shape[-2:]), code)
            gt = dihedral(gt, code)
            lq = None if lq is None else dihedral(lq, code)
        # 3. the degradation (on-the-fly datasets), then the patch is cut out of the window
        if lq is None:
            lq = self._degrade(i, gt, gen)
        t, l, hh, ww = box
        lq, gt = lq[:, t:t + hh, l:l + ww], gt[:, t:t + hh, l:l + ww]
        return {"lq": lq.contiguous(), "gt": gt.contiguous(), "name": self.names[i]}

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """``dataset[(index, seed)]``: training sample; ``dataset[index]``: evaluation item."""
        if isinstance(key, (tuple, list)):
            if len(key) != 2:
                raise TypeError(f"expected (index, seed), got {key!r}")
            return self._item(int(key[0]), int(key[1]))
        if isinstance(key, torch.Tensor) and key.ndim == 1 and key.numel() == 2:
            return self._item(int(key[0]), int(key[1]))
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise TypeError(f"dataset index must be an int or an (index, seed) pair, got {key!r}") from None
        return self._item(index, None)


# --------------------------------------------------------------------------------------------
# Paired folders
# --------------------------------------------------------------------------------------------


class PairedImageDataset(_RestorationDataset):
    """Degraded/clean image pairs matched by file name.

    Args:
        root: the data set folder.
        degraded_dir, clean_dir: sub-folders (relative to ``root``, or absolute) holding the
            degraded and clean images; both None: the first layout of
            :data:`~slkd.data.folders.PAIRED_LAYOUTS` found in ``root`` (``input``/``target``,
            ``noisy``/``mean``, ``hazy``/``clear``, ``blurred``/``gt``, ``lq``/``gt``).
        patch_size: training crops of P×P (every image must be at least that large); None:
            whole images.
        augment: random flips and 90° rotations (training samples only), the same for both.
        names: keep only pairs whose degraded or clean file has one of these stems.
        exclude: stems (list), or a folder whose image stems, are left out.
        cache: "auto", "memory" or "none" (see the module doc).
        channels: 1 or 3.
        limit: keep only the first N pairs (after names/exclude/holdout).
        cache_limit: byte threshold of ``cache="auto"``.
        holdout: ``(count, seed, take)``: a validation split carved out by :func:`holdout_split`
            over the clean images' stems; ``take`` "held" keeps it, "rest" keeps the others.

    Each item is named after its degraded file's stem. A clean file may serve several degraded
    ones (SOTS ``1400_1`` … ``1400_10`` → ``1400``); it is decoded once.

    The folders are paired by :func:`~slkd.data.folders.pair_folders` (the pairing of every
    command); what it leaves out (files not read, targets without a degraded image) is named in
    :attr:`warnings`.

    Raises:
        DatasetError: no known layout, a degraded image without a clean one, two files of one
            folder whose names differ only in extension or letter case, a pair whose sizes
            differ, a grey image paired with an RGB one (``channels=3``), or images smaller than
            ``patch_size`` (all found at construction).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        degraded_dir: str | os.PathLike[str] | None = None,
        clean_dir: str | os.PathLike[str] | None = None,
        patch_size: int | None = None,
        augment: bool = False,
        names: Iterable[str] | None = None,
        exclude: Any = None,
        cache: str = "auto",
        channels: int = 3,
        limit: int | None = None,
        cache_limit: int = DEFAULT_CACHE_LIMIT,
        holdout: tuple[int, int, str] | None = None,
    ) -> None:
        _check_options(patch_size, channels, cache)
        super().__init__(patch_size, augment, channels)
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"data folder not found: {root}")
        if (degraded_dir is None) != (clean_dir is None):
            raise DatasetError("give both degraded_dir and clean_dir, or neither (auto-detect)")
        if degraded_dir is None:
            for deg_name, clean_name in PAIRED_LAYOUTS:
                if (root / deg_name).is_dir() and (root / clean_name).is_dir():
                    degraded_dir, clean_dir = deg_name, clean_name
                    break
            else:
                raise DatasetError(
                    f"no paired layout in {root}; expected one of "
                    + ", ".join(f"{a}/+{b}/" for a, b in PAIRED_LAYOUTS)
                    + " (or give degraded_dir and clean_dir)"
                )
        self.degraded_dir, self.clean_dir = root / degraded_dir, root / clean_dir
        try:
            pairing = pair_folders(self.degraded_dir, self.clean_dir)
        except DatasetError as exc:
            raise DatasetError(f"{self.degraded_dir} ↔ {self.clean_dir}: {exc}") from None
        pairs, self.warnings = pairing.pairs, list(pairing.warnings)

        keys = [(d.stem, c.stem) for d, c in pairs]
        keep = select_items(keys, names, exclude, limit, str(root), holdout)
        pairs = [pairs[i] for i in keep]

        files = sorted({p for pair in pairs for p in pair})
        self.image_cache = ImageCache(files, cache, cache_limit)
        where = {p: k for k, p in enumerate(files)}
        self._index = [(where[d], where[c]) for d, c in pairs]
        self.pairs = pairs
        self.names = [d.stem for d, _ in pairs]
        self._files = [d for d, _ in pairs]

        shapes = self.image_cache.shapes
        bad, colours = [], []
        for (d, c), (di, ci) in zip(pairs, self._index):
            (dc, dh, dw), (cc, ch, cw) = shapes[di], shapes[ci]
            if (dh, dw) != (ch, cw):
                bad.append(f"{d.name} is {dw}×{dh} but its clean image {c.name} is {cw}×{ch}")
            elif dc != cc and channels == 3:  # a grey input would be replicated: no colour to learn
                colours.append(f"{d.name} is {channels_word(dc)} but its clean image {c.name} is "
                               f"{channels_word(cc)}")
        if bad:
            raise DatasetError(
                f"{len(bad)} pair(s) in {root} differ in size: " + "; ".join(bad[:5])
                + (f"; … ({len(bad)} in all)" if len(bad) > 5 else "")
            )
        if colours:
            raise DatasetError(
                f"{len(colours)} pair(s) in {root} differ in colour type: " + "; ".join(colours[:5])
                + (f"; … ({len(colours)} in all)" if len(colours) > 5 else "")
                + " (a pair must have one colour type)"
            )
        self._sizes = [shapes[di][1:] for di, _ in self._index]
        self._check_patch()

    def item_files(self) -> list[tuple[Path, ...]]:
        return [tuple(pair) for pair in self.pairs]

    def _read(self, i: int, box: Box) -> tuple[torch.Tensor | None, torch.Tensor]:
        di, ci = self._index[i]
        lq = to_channels(self.image_cache.read(di, box), self.channels)
        gt = to_channels(self.image_cache.read(ci, box), self.channels)
        return lq, gt

    def __repr__(self) -> str:
        return (f"PairedImageDataset({len(self)} pairs, {self.degraded_dir} ↔ {self.clean_dir}, "
                f"patch={self.patch_size}, cache={self.image_cache.mode})")


# --------------------------------------------------------------------------------------------
# Clean images degraded on the fly
# --------------------------------------------------------------------------------------------


class DegradedImageDataset(_RestorationDataset):
    """Clean images degraded on the fly.

    Args:
        roots: a folder or a list of folders of clean images.
        degradation: a callable ``(clean, gen) -> degraded`` (e.g. from
            :func:`~slkd.data.degrade.build_degradation`), or a registered degradation's name
            (built with its default parameters). It may define ``margin`` (context pixels it
            needs around a patch) and ``evaluate(clean, seed, index)`` (its validation form);
            plain callables are evaluated with a generator seeded from (``eval_seed``, index).
        patch_size, augment, names, exclude, cache, channels, limit, cache_limit, holdout: as for
            :class:`PairedImageDataset` (names/exclude match the file stem).
        recursive: also take the images of all sub-folders (BSDS500's ``train/``, ``val/``,
            ``test/``).
        eval_seed: seed of the evaluation items' degradation; None means 0, the literature's
            ``np.random.seed(0)`` for Gaussian test noise and the default of ``slkd eval``.

    A training sample takes the crop plus up to ``degradation.margin`` pixels of real image
    around it, flips/rotates it (``augment``), degrades it, and cuts the patch out: a blurred
    patch has no artificial border, and synthetic rain keeps falling downwards whatever the
    rotation of the background.
    """

    def __init__(
        self,
        roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        degradation: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | str,
        patch_size: int | None = None,
        augment: bool = False,
        names: Iterable[str] | None = None,
        exclude: Any = None,
        recursive: bool = False,
        cache: str = "auto",
        eval_seed: int | None = None,
        channels: int = 3,
        limit: int | None = None,
        cache_limit: int = DEFAULT_CACHE_LIMIT,
        holdout: tuple[int, int, str] | None = None,
    ) -> None:
        _check_options(patch_size, channels, cache)
        super().__init__(patch_size, augment, channels)
        if isinstance(degradation, str):
            degradation = build_degradation(degradation)
        if not callable(degradation):
            raise DatasetError(f"degradation: expected a callable or a name, got {degradation!r}")
        self.degradation = degradation
        self.eval_seed = 0 if eval_seed is None else int(eval_seed)
        self.roots = [Path(roots)] if isinstance(roots, (str, os.PathLike)) else [Path(r) for r in roots]
        if not self.roots:
            raise DatasetError("roots: at least one folder is needed")
        files = collect_images(self.roots, recursive, unread=self.warnings)
        where = ", ".join(str(r) for r in self.roots)
        if not files:
            raise DatasetError(
                f"no images in {where}" + ("" if recursive else " (recursive=True to include sub-folders)")
            )
        keep = select_items([(p.stem,) for p in files], names, exclude, limit, where, holdout)
        files = [files[i] for i in keep]

        self.image_cache = ImageCache(files, cache, cache_limit)
        self.paths = files
        self._files = files
        self.names = [p.stem for p in files]
        self._sizes = [s[1:] for s in self.image_cache.shapes]
        self._check_patch()

    def _margin(self) -> int:
        return max(0, int(getattr(self.degradation, "margin", 0)))

    def item_files(self) -> list[tuple[Path, ...]]:
        return [(p,) for p in self.paths]

    def _read(self, i: int, box: Box) -> tuple[torch.Tensor | None, torch.Tensor]:
        return None, to_channels(self.image_cache.read(i, box), self.channels)

    def _degrade(self, i: int, clean: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if gen is not None:
            lq = self.degradation(clean, gen)
        elif hasattr(self.degradation, "evaluate"):
            lq = self.degradation.evaluate(clean, seed=self.eval_seed, index=i)
        else:
            lq = self.degradation(clean, torch.Generator().manual_seed(derive_seed(self.eval_seed, i)))
        if tuple(lq.shape) != tuple(clean.shape):
            raise DatasetError(
                f"degradation {self.degradation!r} changed the shape of {self.paths[i].name} "
                f"from {tuple(clean.shape)} to {tuple(lq.shape)}"
            )
        return lq.to(torch.float32)

    def __repr__(self) -> str:
        return (f"DegradedImageDataset({len(self)} images from {', '.join(map(str, self.roots))}, "
                f"{self.degradation!r}, patch={self.patch_size}, cache={self.image_cache.mode})")
