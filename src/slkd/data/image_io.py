"""Reading and writing images in the package's canonical format.

Inside ``slkd`` an image is a float32 torch tensor of shape C×H×W with values in [0, 1], where
C is 1 (grey) or 3 (RGB). Everything that touches files goes through this module so that the
rest of the code never has to think about BGR order, bit depth, alpha, EXIF rotation or
non-ASCII paths.

Decoding uses OpenCV on bytes read by Python: ``cv2.imread`` cannot open non-ASCII paths on
every platform, while ``open()`` can. Any failure (missing file, directory, empty or corrupt
data) becomes an :class:`~slkd.errors.ImageReadError` naming the file and the reason, so the
command line can report it without a traceback.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from slkd.fileio import atomic_write_bytes, broken_link
from slkd.errors import DatasetError, ImageReadError, SlkdError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "list_images",
    "read_image",
    "unread_files",
    "write_image",
]

#: File extensions (lower case, with dot) recognised as images. Matching is case-insensitive.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)

# Formats that can store 16-bit samples and an alpha channel when written by OpenCV.
_HIGH_DEPTH_EXTENSIONS = frozenset({".png", ".tif", ".tiff"})
_JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})

_EXIF_ORIENTATION_TAG = 0x0112


@dataclass
class LoadedImage:
    """An image read from disk.

    ``tensor`` is the canonical C×H×W float32 image in [0, 1]; ``bit_depth`` (8 or 16) and
    ``alpha`` (H×W array in the file's dtype, or None) are kept so that :func:`write_image` can
    save the result the way the input was stored.
    """

    tensor: torch.Tensor
    bit_depth: int
    alpha: np.ndarray | None
    path: Path


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


#: lines the decoders print by themselves on a corrupt file (libpng, OpenCV's log)
_DECODER_CHATTER = re.compile(rb"^(libpng (error|warning)|\[ ?(WARN|ERROR|INFO):)")
_quiet_guard = threading.Lock()
_quiet = {"depth": 0, "saved": None, "capture": None}


@contextmanager
def _decoders_quiet():
    """While a decoder runs, the process's stderr (file descriptor 2) goes to a temporary file:
    libpng and OpenCV print their own complaints about a corrupt file there ("libpng error: IDAT:
    incorrect data check"), a stray line before the one-line error that names the file. Those
    lines are dropped; anything else printed meanwhile (by another thread) is passed on after.
    Re-entrant across the threads that decode in parallel."""
    with _quiet_guard:
        if _quiet["depth"] == 0:
            try:
                sys.stderr.flush()
                capture = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(capture.fileno(), 2)
            except (OSError, ValueError, AttributeError):  # no stderr to redirect
                capture = saved = None
            _quiet.update(saved=saved, capture=capture)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_guard:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0 and _quiet["saved"] is not None:
                saved, capture = _quiet["saved"], _quiet["capture"]
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = b"".join(line for line in capture.read().splitlines(keepends=True)
                                if not _DECODER_CHATTER.match(line))
                capture.close()
                if kept:
                    os.write(2, kept)
                _quiet.update(saved=None, capture=None)


def _read_bytes(path: Path) -> bytes:
    """Read the whole file, turning every OS-level problem into an ImageReadError."""
    if not path.exists():
        link = broken_link(path)  # a dangling link, or a loop of links
        raise ImageReadError(f"cannot read image {path}: {link or 'file does not exist'}")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a directory, not a file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:  # permission denied, I/O error, special file, ...
        reason = exc.strerror or exc.__class__.__name__
        raise ImageReadError(f"cannot read image {path}: {reason}") from exc
    if not data:
        raise ImageReadError(f"cannot read image {path}: the file is empty (0 bytes)")
    return data


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png_grey_alpha(data: bytes) -> bool:
    """A PNG whose IHDR says grey + alpha (colour type 4); OpenCV decodes those as BGRA."""
    return data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 25 and data[25] == 4


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation (1..8) of a JPEG held in memory; 1 when absent or unreadable.

    Pillow's ``Image.open`` is lazy: it parses the header (including EXIF) without decoding the
    pixels, so this costs almost nothing. A broken EXIF block must not make an otherwise
    decodable image unreadable, hence the broad fallback to "no rotation".
    """
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - any Pillow/EXIF problem means "unknown orientation"
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an H×W or H×W×C array (same result as PIL exif_transpose).

    OpenCV's IMREAD_UNCHANGED deliberately ignores the tag, so without this a portrait photo
    from a phone would be processed (and saved) lying on its side.
    """
    if orientation == 2:  # mirrored horizontally
        out = arr[:, ::-1]
    elif orientation == 3:  # rotated 180°
        out = arr[::-1, ::-1]
    elif orientation == 4:  # mirrored vertically
        out = arr[::-1, :]
    elif orientation == 5:  # transpose (mirror along the main diagonal)
        out = np.swapaxes(arr, 0, 1)
    elif orientation == 6:  # needs a 90° clockwise turn
        out = np.rot90(arr, k=-1)
    elif orientation == 7:  # transverse (mirror along the anti-diagonal)
        out = np.swapaxes(arr[::-1, ::-1], 0, 1)
    elif orientation == 8:  # needs a 90° counter-clockwise turn
        out = np.rot90(arr, k=1)
    else:
        out = arr
    return np.ascontiguousarray(out)


def read_image(path: str | os.PathLike[str], *, warn_alpha: bool = True) -> LoadedImage:
    """Read an image file into the canonical C×H×W float32 [0, 1] tensor.

    * 8-bit files are divided by 255, 16-bit files by 65535; other sample types (float TIFF,
      EXR, ...) are refused rather than silently rescaled.
    * Grey stays one channel; a three-channel file stays three channels even when all channels
      are equal (guessing would change the output format behind the user's back).
    * An alpha channel is removed (a warning says so unless ``warn_alpha`` is False, as for
      training data) and returned in ``alpha`` so that :func:`write_image` can put it back.
    * The EXIF orientation of JPEG files is applied.

    Raises:
        ImageReadError: the file is missing, a directory, empty, corrupt, or has an unsupported
            sample type. The message names the file and the reason.
    """
    path = Path(path)
    data = _read_bytes(path)
    if data[:4] == b"GIF8":  # OpenCV would return the first frame of an animation only
        raise ImageReadError(
            f"cannot read image {path}: GIF is not supported (an animated GIF would lose every "
            "frame but the first); convert it to PNG, one file per frame"
        )

    try:
        with _decoders_quiet():
            arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(
            f"cannot read image {path}: the data cannot be decoded ({str(exc).strip()})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - never let a decoder exception escape
        raise ImageReadError(f"cannot read image {path}: decoding failed ({exc})") from exc
    if arr is None or arr.size == 0:
        raise ImageReadError(
            f"cannot read image {path}: not a supported image, or the file is truncated or corrupt"
        )

    if arr.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif arr.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    else:
        raise ImageReadError(
            f"cannot read image {path}: unsupported sample type {arr.dtype} "
            "(only 8-bit and 16-bit integer images are supported)"
        )

    if _is_jpeg(data):
        arr = _apply_orientation(arr, _exif_orientation(data))

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]

    alpha: np.ndarray | None = None
    if arr.ndim == 2:
        pixels = arr[:, :, None]
    elif arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha (OpenCV usually expands this)
        pixels, alpha = arr[:, :, :1], arr[:, :, 1]
    elif arr.ndim == 3 and arr.shape[2] == 4 and _is_png_grey_alpha(data):
        pixels, alpha = arr[:, :, :1], arr[:, :, 3]  # expanded to BGRA by OpenCV: B = G = R
    elif arr.ndim == 3 and arr.shape[2] == 3:
        pixels = arr[:, :, ::-1]  # BGR -> RGB
    elif arr.ndim == 3 and arr.shape[2] == 4:
        pixels, alpha = arr[:, :, 2::-1], arr[:, :, 3]  # BGRA -> RGB + A
    else:
        raise ImageReadError(
            f"cannot read image {path}: unsupported layout with shape {tuple(arr.shape)}"
        )

    if alpha is not None:
        alpha = np.ascontiguousarray(alpha)
    if alpha is not None and warn_alpha:
        warnings.warn(
            f"{path}: alpha channel dropped, re-attached on save",
            UserWarning,
            stacklevel=2,
        )

    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(np.float32)
    chw /= np.float32(scale)
    return LoadedImage(tensor=torch.from_numpy(chw), bit_depth=bit_depth, alpha=alpha, path=path)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _to_hwc_array(tensor: torch.Tensor, bit_depth: int) -> np.ndarray:
    """C×H×W (or 1×C×H×W) float [0, 1] -> H×W×C integer array, rounded and clamped."""
    t = torch.as_tensor(tensor)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"write_image takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"write_image expects a C×H×W tensor with C = 1 or 3, got shape {tuple(t.shape)}"
        )
    maxval = 65535.0 if bit_depth == 16 else 255.0
    t = t.detach().to(device="cpu", dtype=torch.float32)
    t = torch.nan_to_num(t, nan=0.0).clamp(0.0, 1.0).mul(maxval).round()
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return t.permute(1, 2, 0).numpy().astype(dtype)


def _alpha_to_depth(alpha: np.ndarray, bit_depth: int, shape: tuple[int, int]) -> np.ndarray:
    """Convert a stored alpha plane to the output bit depth (255 <-> 65535 scale by 257)."""
    a = np.asarray(alpha)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.shape != shape:
        raise ValueError(f"alpha has shape {a.shape} but the image is {shape[0]}×{shape[1]}")
    if a.dtype == np.uint8:
        return a.astype(np.uint16) * 257 if bit_depth == 16 else a
    if a.dtype == np.uint16:
        if bit_depth == 16:
            return a
        return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):  # float alpha in [0, 1]
        maxval = 65535.0 if bit_depth == 16 else 255.0
        out = np.round(np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * maxval)
        return out.astype(np.uint16 if bit_depth == 16 else np.uint8)
    raise ValueError(f"unsupported alpha dtype {a.dtype}")


def write_image(
    path: str | os.PathLike[str],
    tensor: torch.Tensor,
    *,
    bit_depth: int = 8,
    alpha: np.ndarray | None = None,
) -> Path:
    """Save a C×H×W (or 1×C×H×W) float image in [0, 1]; return the path written.

    Values are clamped and rounded to 8 or 16 bits. 16-bit output and alpha are only possible
    for PNG and TIFF; for other formats the image is written as 8 bits (with a warning when 16
    was asked for) and alpha is dropped (with a warning). JPEG is written at quality 95. A grey
    image with alpha is written as a grey + alpha PNG (OpenCV cannot encode two channels, so
    this module does); as TIFF it is stored as RGBA, with a warning. Parent folders are created
    and the write is atomic, so an interrupted run never leaves a half-written image behind.

    Raises:
        SlkdError: unknown extension, or the image cannot be encoded or written.
        ValueError: bad tensor shape, bit depth, or alpha shape (programming errors).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        known = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise SlkdError(
            f"cannot write image {path}: unknown extension {path.suffix!r} (use one of {known})"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and ext not in _HIGH_DEPTH_EXTENSIONS:
        warnings.warn(
            f"{path}: {ext.lstrip('.').upper()} cannot store 16-bit samples, writing 8-bit",
            UserWarning,
            stacklevel=2,
        )
        bit_depth = 8
    if alpha is not None and ext not in _HIGH_DEPTH_EXTENSIONS:
        warnings.warn(
            f"{path}: {ext.lstrip('.').upper()} output does not keep the alpha channel, "
            "alpha dropped",
            UserWarning,
            stacklevel=2,
        )
        alpha = None

    arr = _to_hwc_array(tensor, bit_depth)
    if arr.shape[2] == 3:
        arr = arr[:, :, ::-1]  # RGB -> BGR
    encoded: bytes | None = None
    if alpha is not None:
        a = _alpha_to_depth(alpha, bit_depth, arr.shape[:2])
        if arr.shape[2] == 1 and ext == ".png":
            encoded = _encode_png_grey_alpha(arr[:, :, 0], a)
        else:
            if arr.shape[2] == 1:
                warnings.warn(f"{path}: TIFF output of a grey image with alpha is written as RGBA",
                              UserWarning, stacklevel=2)
                arr = np.repeat(arr, 3, axis=2)
            arr = np.concatenate([arr, a[:, :, None]], axis=2)
    elif arr.shape[2] == 1:
        arr = arr[:, :, 0]
    arr = np.ascontiguousarray(arr)

    if encoded is None:
        params: list[int] = []
        if ext in _JPEG_EXTENSIONS:
            params = [cv2.IMWRITE_JPEG_QUALITY, 95]
        try:
            ok, buf = cv2.imencode(ext, arr, params)
        except cv2.error as exc:
            raise SlkdError(f"cannot write image {path}: encoding failed ({str(exc).strip()})") from exc
        if not ok:
            raise SlkdError(f"cannot write image {path}: the {ext} encoder refused the image")
        encoded = buf.tobytes()

    try:
        atomic_write_bytes(path, encoded)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SlkdError(f"cannot write image {path}: {reason}") from exc
    return path


def _encode_png_grey_alpha(grey: np.ndarray, alpha: np.ndarray) -> bytes:
    """A grey + alpha PNG (colour type 4, 8 or 16 bits, no filtering) of two H×W planes of one
    dtype. OpenCV's encoders take 1, 3 or 4 channels only."""
    depth = 16 if grey.dtype == np.uint16 else 8
    h, w = grey.shape
    samples = np.stack([grey, alpha.astype(grey.dtype)], axis=-1).astype(">u2" if depth == 16 else "u1")
    rows = np.concatenate([np.zeros((h, 1), np.uint8),  # filter type 0 before each row
                           samples.reshape(h, -1).view(np.uint8)], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0)
    return (_PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by file name.

    Not recursive; hidden files (name starting with '.') are skipped, which also skips the
    temporary files of an interrupted :func:`write_image`. A link whose target is gone is
    listed, so that reading it names it instead of the folder losing an image without a word.

    Raises:
        DatasetError: ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise DatasetError(f"cannot list images in {folder}: it {what}")
    found = [
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        and (p.is_file() or (p.is_symlink() and not p.exists()))
    ]
    return sorted(found, key=lambda p: p.name)


def unread_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The files directly inside ``folder`` that :func:`list_images` leaves out because of their
    extension (``.jfif``, ``.gif``, ``.txt`` …), sorted by name, so that a caller can name them
    instead of losing them without a word. Hidden files and sub-folders are not counted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if not p.name.startswith(".") and p.suffix.lower() not in IMAGE_EXTENSIONS
             and (p.is_file() or p.is_symlink())]
    return sorted(found, key=lambda p: p.name)
