"""Decoded training images, each file decoded once: :class:`ImageCache`.

Each file is decoded once into an integer array (uint8, or uint16 for 16-bit files: 4× less
memory than float32) when ``cache="memory"``; ``cache="none"`` decodes on every access (for data
sets too large for RAM, or DataLoader workers started with ``spawn``, which would each receive a
copy of the cache). ``cache="auto"`` (the default) picks memory when the estimate from the image
headers is below :data:`DEFAULT_CACHE_LIMIT` (4 GiB). With the default ``fork`` start method on
Linux, worker processes share the parent's cache pages without copying them. Either way every
file is decoded once at construction, so a corrupt, truncated or empty file is refused before
training starts, with the names of all such files in one :class:`~slkd.errors.DatasetError`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from slkd.data.image_io import read_image
from slkd.data.selection import names_list
from slkd.data.transforms import Box
from slkd.errors import DatasetError, ImageReadError, SlkdError

__all__ = ["CACHE_MODES", "DEFAULT_CACHE_LIMIT", "ImageCache", "probe_image"]

#: the ``cache`` option's values
CACHE_MODES = ("auto", "memory", "none")
#: ``cache="auto"`` keeps decoded images in memory below this estimated size (bytes)
DEFAULT_CACHE_LIMIT = 4 * 2**30

_GREY_PIL_MODES = {"1", "L", "I", "F"}

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
            rest = f"; … and {names_list(names[5:], 50)}" if len(names) > 5 else ""
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

    def read(self, i: int, box: Box | None = None) -> torch.Tensor:
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
