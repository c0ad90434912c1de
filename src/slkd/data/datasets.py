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

Cache
-----
Each file is decoded once into an integer array (uint8, or uint16 for 16-bit files: 4× less
memory than float32) when ``cache="memory"``; ``cache="none"`` decodes on every access (for data
sets too large for RAM, or DataLoader workers started with ``spawn``, which would each receive a
copy of the cache). ``cache="auto"`` (the default) picks memory when the estimate from the image
headers is below :data:`DEFAULT_CACHE_LIMIT` (4 GiB). With the default ``fork`` start method on
Linux, worker processes share the parent's cache pages without copying them. Either way every
file is decoded once at construction, so a corrupt, truncated or empty file is refused before
training starts, with the names of all such files in one :class:`~slkd.errors.DatasetError`.

Grey and colour
---------------
``channels`` (1 or 3, default 3) makes every image consistent: RGB → grey with the BT.601 luma
weights (0.299, 0.587, 0.114), grey → RGB by replication. Conversion happens in float after
decoding, before the degradation.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from slkd.data.degrade import build_degradation, derive_seed
from slkd.data.folders import PAIRED_LAYOUTS, match_pairs
from slkd.data.image_io import list_images, read_image
from slkd.errors import DatasetError, ImageReadError, SlkdError

__all__ = [
    "CACHE_MODES",
    "DEFAULT_CACHE_LIMIT",
    "DegradedImageDataset",
    "ImageCache",
    "PairedImageDataset",
    "collect_images",
    "exclude_stems",
    "holdout_split",
    "probe_image",
    "to_channels",
]

#: the ``cache`` option's values
CACHE_MODES = ("auto", "memory", "none")
#: ``cache="auto"`` keeps decoded images in memory below this estimated size (bytes)
DEFAULT_CACHE_LIMIT = 4 * 2**30

_GREY_PIL_MODES = {"1", "L", "I", "F"}
_Box = tuple[int, int, int, int]  # top, left, height, width


# --------------------------------------------------------------------------------------------
# Decoding and the cache
# --------------------------------------------------------------------------------------------


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    """``(channels, height, width, bit_depth)`` of an image file, from its header if possible.

    Uses Pillow's lazy header parsing (no pixel decoding), applying the EXIF rotation of JPEG
    files exactly as :func:`~slkd.data.image_io.read_image` does, so height and width match
    what decoding gives. Channels and bit depth are an estimate (for the cache size); anything
    Pillow cannot parse is decoded with ``read_image`` instead.
    """
    path = Path(path)
    try:
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
            mode, fmt = im.mode, im.format
            orientation = int(im.getexif().get(0x0112, 1)) if fmt == "JPEG" else 1
            # Pillow reports 16-bit RGB as "RGB"; the raw mode of the tile ("RGB;16B") tells
            raw = im.tile[0][3] if im.tile else ""
            raw = raw[0] if isinstance(raw, tuple) and raw else raw
    except Exception:  # noqa: BLE001 - unknown to Pillow: decode for real (raises a clear error)
        img = read_image(path, warn_alpha=False)
        c, h, w = img.tensor.shape
        return int(c), int(h), int(w), img.bit_depth
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    grey = mode in _GREY_PIL_MODES or mode.startswith("I;16")
    depth = 16 if mode == "I" or mode.startswith("I;16") or ";16" in str(raw) else 8
    return (1 if grey else 3), height, width, depth


def _decode(path: Path) -> np.ndarray:
    """Decode to a C×H×W uint8/uint16 array holding exactly the file's sample values (alpha,
    meaningless for training, is dropped without a warning per file)."""
    img = read_image(path, warn_alpha=False)
    scale, dtype = (65535.0, np.uint16) if img.bit_depth == 16 else (255.0, np.uint8)
    # read_image stored v / scale in float32; v is recovered exactly by rounding
    return np.rint(img.tensor.numpy().astype(np.float64) * scale).astype(dtype)


def _decoded_shape(path: Path) -> tuple[int, int, int]:
    """``(channels, height, width)`` of a file, by decoding it (the check of ``verify``)."""
    return tuple(int(n) for n in read_image(path, warn_alpha=False).tensor.shape)


def _to_float(arr: np.ndarray) -> torch.Tensor:
    """Integer samples -> float32 in [0, 1], bit-identical to ``read_image``'s conversion."""
    scale = np.float32(65535.0 if arr.dtype == np.uint16 else 255.0)
    return torch.from_numpy(arr.astype(np.float32) / scale)


class ImageCache:
    """Decoded images of a list of files, each decoded at most once.

    Args:
        paths: the image files.
        mode: "memory" (decode all now, keep integer arrays), "none" (decode on each access;
            now each file is decoded once to check it, unless ``verify`` is False) or "auto"
            (memory when :attr:`estimated_bytes` is below ``limit_bytes``).
        limit_bytes: the threshold of "auto".
        threads: decoding threads when filling the cache (default: up to 8, one per CPU).
        verify: in "none" mode, decode every file once at construction (and forget it) so that
            a corrupt or truncated file is refused now, not hours into training. False: read
            only the headers (a broken file then fails when first drawn).

    Every unreadable file (missing, empty, truncated, corrupt, unsupported sample type) is
    found at construction and reported together in one :class:`DatasetError`, by path.

    Attributes:
        mode: "memory" or "none" (after resolving "auto").
        shapes: ``(channels, height, width)`` of each file (exact when decoded, from the
            header when ``verify`` is False).
        estimated_bytes: estimated size of all images as integer arrays.
        nbytes: bytes actually held (0 in "none" mode).
        build_seconds: time spent reading headers and decoding at construction.
    """

    def __init__(self, paths: Sequence[Path], mode: str = "auto",
                 limit_bytes: int = DEFAULT_CACHE_LIMIT, threads: int | None = None,
                 verify: bool = True) -> None:
        if mode not in CACHE_MODES:
            raise SlkdError(f"cache: must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        start = time.perf_counter()
        self.paths = [Path(p) for p in paths]
        self._arrays: list[np.ndarray] | None = None
        if threads is None:
            threads = min(8, os.cpu_count() or 1)
        errors: dict[int, str] = {}
        if mode == "memory":
            self._fill(threads, errors)
            self.estimated_bytes = self.nbytes
        else:
            probes = self._map(probe_image, threads, errors)
            self.estimated_bytes = sum(c * h * w * (2 if d == 16 else 1)
                                       for c, h, w, d in (p for p in probes if p is not None))
            if mode == "auto" and not errors and self.estimated_bytes < limit_bytes:
                self._fill(threads, errors)
            else:
                self.shapes = [None if p is None else p[:3] for p in probes]
                if verify:  # decode the files whose header was fine, to find broken bodies
                    self.shapes = self._map(_decoded_shape, threads, errors, skip=errors)
        if errors:
            messages = [errors[i] for i in sorted(errors)]
            names = [self.paths[i].name for i in sorted(errors)]
            rest = f"; … and {_names_list(names[5:], 50)}" if len(names) > 5 else ""
            raise DatasetError(f"{len(errors)} unreadable image file(s): " + "; ".join(messages[:5]) + rest)
        self.mode = "memory" if self._arrays is not None else "none"
        self.build_seconds = time.perf_counter() - start

    def _map(self, fn: Callable[[Path], Any], threads: int, errors: dict[int, str],
             skip: Iterable[int] = ()) -> list[Any]:
        """``fn`` over the paths (None for the indices in ``skip``); the message of each file it
        cannot read goes into ``errors`` by index, and its result is None."""
        skip = set(skip)

        def attempt(i: int) -> Any:
            if i in skip:
                return None
            try:
                return fn(self.paths[i])
            except ImageReadError as exc:
                errors[i] = str(exc)
                return None

        indices = range(len(self.paths))
        if threads <= 1 or len(self.paths) < 2:
            return [attempt(i) for i in indices]
        with ThreadPoolExecutor(max_workers=threads) as pool:  # cv2/PIL release the GIL
            return list(pool.map(attempt, indices))

    def _fill(self, threads: int, errors: dict[int, str]) -> None:
        arrays = self._map(_decode, threads, errors)
        if errors:
            return
        self._arrays = arrays
        self.shapes = [tuple(int(s) for s in a.shape) for a in self._arrays]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays) if self._arrays is not None else 0

    def read(self, i: int, box: _Box | None = None) -> torch.Tensor:
        """Image ``i`` (or the ``(top, left, height, width)`` box of it) as float32 C×h×w."""
        if self._arrays is not None:
            arr = self._arrays[i]
            if box is not None:
                t, l, h, w = box
                arr = arr[:, t:t + h, l:l + w]
            return _to_float(arr)
        img = read_image(self.paths[i], warn_alpha=False).tensor
        if tuple(img.shape) != self.shapes[i]:
            if tuple(img.shape[1:]) != self.shapes[i][1:]:
                raise ImageReadError(
                    f"{self.paths[i]} decodes to {img.shape[2]}×{img.shape[1]} but its header says "
                    f"{self.shapes[i][2]}×{self.shapes[i][1]}"
                )
            self.shapes[i] = tuple(int(s) for s in img.shape)
        if box is not None:
            t, l, h, w = box
            img = img[:, t:t + h, l:l + w].contiguous()
        return img


# --------------------------------------------------------------------------------------------
# Helpers shared by both datasets
# --------------------------------------------------------------------------------------------


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Make a C×H×W image have ``channels`` (1 or 3) channels.

    RGB → grey uses the BT.601 luma weights Y = 0.299 R + 0.587 G + 0.114 B (no offset,
    full range); grey → RGB replicates the plane.
    """
    c = image.shape[0]
    if c == channels:
        return image
    if c == 3 and channels == 1:
        return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    if c == 1 and channels == 3:
        return image.repeat(3, 1, 1)
    raise ValueError(f"cannot convert a {c}-channel image to {channels} channels")


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
                   recursive: bool = False) -> list[Path]:
    """Image files of one or several folders, in a fixed order: roots in the given order, and
    inside each root its own files (by name), then each sub-folder's (by name, depth first)
    when ``recursive``. Hidden files and folders are skipped."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        found.extend(list_images(root))  # raises DatasetError when missing
        if recursive:
            for dirpath, dirnames, _ in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if Path(dirpath) != root:
                    found.extend(list_images(dirpath))
    return found


def _names_list(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" … ({len(items)} in all)" if len(items) > limit else "")


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


def _select(keys: list[tuple[str, ...]], names: Iterable[str] | None, exclude: Any,
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
            raise DatasetError(f"names: not found in {where}: {_names_list(missing)}")
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


def _check_options(patch_size: Any, channels: Any, cache: Any) -> None:
    if patch_size is not None and (isinstance(patch_size, bool) or not isinstance(patch_size, int)
                                   or patch_size < 1):
        raise DatasetError(f"patch_size: must be a positive integer or None, got {patch_size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DatasetError(f"channels: must be 1 or 3, got {channels!r}")
    if cache not in CACHE_MODES:
        raise DatasetError(f"cache: must be one of {', '.join(CACHE_MODES)}, got {cache!r}")


def _dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/rotations: optional horizontal flip, then ``code % 4`` quarter turns."""
    if code >= 4:
        x = x.flip(-1)
    k = code % 4
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _dihedral_box(box: _Box, shape: tuple[int, int], code: int) -> _Box:
    """Where the box ``(top, left, height, width)`` of an H×W image lands after
    :func:`_dihedral` with ``code``."""
    t, l, h, w = box
    rows, cols = shape
    if code >= 4:  # horizontal flip
        l = cols - l - w
    for _ in range(code % 4):  # rot90 (counter-clockwise): new[i, j] = old[j, cols - 1 - i]
        t, l, h, w = cols - l - w, t, w, h
        rows, cols = cols, rows
    return t, l, h, w


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

    def __len__(self) -> int:
        return len(self.names)

    def image_sizes(self) -> list[tuple[Path, tuple[int, int]]]:
        """(file, (height, width)) of every item's full image, without decoding anything; the
        file is the degraded one of a pair (the one error messages name)."""
        return list(zip(self._files, self._sizes))

    # subclasses: the degraded (None when synthesised) and clean crops of item i for ``box``
    def _read(self, i: int, box: _Box) -> tuple[torch.Tensor | None, torch.Tensor]:
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
                f"{len(small)} image(s) smaller than the {p}×{p} patch: {_names_list(small, 10)}"
            )

    def _window(self, i: int, top: int, left: int, ph: int, pw: int, margin: int) -> tuple[_Box, _Box]:
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
            box = _dihedral_box(box, tuple(gt.shape[-2:]), code)
            gt = _dihedral(gt, code)
            lq = None if lq is None else _dihedral(lq, code)
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

    Raises:
        DatasetError: no known layout, a degraded image without a clean one, a pair whose sizes
            differ, or images smaller than ``patch_size`` (all found at construction).
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
        degraded = list_images(self.degraded_dir)
        clean = list_images(self.clean_dir)
        if not degraded:
            raise DatasetError(f"no images in {self.degraded_dir}")
        try:
            pairs = match_pairs(degraded, clean)
        except DatasetError as exc:
            raise DatasetError(f"{self.degraded_dir} ↔ {self.clean_dir}: {exc}") from None

        keys = [(d.stem, c.stem) for d, c in pairs]
        keep = _select(keys, names, exclude, limit, str(root), holdout)
        pairs = [pairs[i] for i in keep]

        files = sorted({p for pair in pairs for p in pair})
        self.image_cache = ImageCache(files, cache, cache_limit)
        where = {p: k for k, p in enumerate(files)}
        self._index = [(where[d], where[c]) for d, c in pairs]
        self.pairs = pairs
        self.names = [d.stem for d, _ in pairs]
        self._files = [d for d, _ in pairs]

        shapes = self.image_cache.shapes
        bad = []
        for (d, c), (di, ci) in zip(pairs, self._index):
            (_, dh, dw), (_, ch, cw) = shapes[di], shapes[ci]
            if (dh, dw) != (ch, cw):
                bad.append(f"{d.name} is {dw}×{dh} but its clean image {c.name} is {cw}×{ch}")
        if bad:
            raise DatasetError(
                f"{len(bad)} pair(s) in {root} differ in size: " + "; ".join(bad[:5])
                + (f"; … ({len(bad)} in all)" if len(bad) > 5 else "")
            )
        self._sizes = [shapes[di][1:] for di, _ in self._index]
        self._check_patch()

    def _read(self, i: int, box: _Box) -> tuple[torch.Tensor | None, torch.Tensor]:
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
        files = collect_images(self.roots, recursive)
        where = ", ".join(str(r) for r in self.roots)
        if not files:
            raise DatasetError(
                f"no images in {where}" + ("" if recursive else " (recursive=True to include sub-folders)")
            )
        keep = _select([(p.stem,) for p in files], names, exclude, limit, where, holdout)
        files = [files[i] for i in keep]

        self.image_cache = ImageCache(files, cache, cache_limit)
        self.paths = files
        self._files = files
        self.names = [p.stem for p in files]
        self._sizes = [s[1:] for s in self.image_cache.shapes]
        self._check_patch()

    def _margin(self) -> int:
        return max(0, int(getattr(self.degradation, "margin", 0)))

    def _read(self, i: int, box: _Box) -> tuple[torch.Tensor | None, torch.Tensor]:
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
