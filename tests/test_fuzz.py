"""Property-based tests: whatever bytes a file holds, slkd reports it by name or reads it.

Hypothesis throws random bytes, valid image signatures followed by garbage, real images of
random size, channel count and sample type in every supported container, and truncated or
bit-flipped versions of those at

* :func:`slkd.data.image_io.read_image`: it returns a valid canonical image or raises
  :class:`~slkd.errors.ImageReadError` naming the file — never any other exception;
* the training datasets' image cache: a file is accepted or refused at construction with a
  :class:`~slkd.errors.DatasetError` naming it;
* ``slkd restore`` on a folder of such files (through the CLI's ``main`` in-process): exit code
  0 or 1, never a traceback, every bad file named, every good one restored under its own name.

The number of examples is kept small (the whole file runs in seconds); the seed is fixed by
``derandomize`` so a failure reproduces.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from slkd.cli.main import main
from slkd.data.cache import ImageCache
from slkd.data.image_io import IMAGE_EXTENSIONS, LoadedImage, read_image
from slkd.errors import DatasetError, ImageReadError

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SIGNATURES = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff\xe0",
    "jpeg-exif": b"\xff\xd8\xff\xe1",
    "bmp": b"BM",
    "tiff-le": b"II*\x00",
    "tiff-be": b"MM\x00*",
    "webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "gif": b"GIF89a",
}
ENCODERS = (".png", ".jpg", ".bmp", ".tif", ".webp")
DTYPES = (np.uint8, np.uint16, np.int8, np.int16, np.int32, np.float32, np.float64)


@st.composite
def encoded_images(draw) -> bytes:
    """A real image of random size, channels and dtype, in a random container (when OpenCV can
    write that combination)."""
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    channels = draw(st.sampled_from([0, 1, 2, 3, 4, 5]))  # 0: a 2-D array
    dtype = draw(st.sampled_from(DTYPES))
    ext = draw(st.sampled_from(ENCODERS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    else:
        arr = rng.random(shape).astype(dtype)
    try:
        ok, buf = cv2.imencode(ext, arr)
    except cv2.error:
        ok = False
    assume(ok)
    return buf.tobytes()


@st.composite
def jpeg_with_orientation(draw) -> bytes:
    """A small JPEG (grey or RGB) carrying one of the 8 EXIF orientations (or a bogus one)."""
    from PIL import Image

    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    mode = draw(st.sampled_from(["L", "RGB"]))
    orientation = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 65535]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = rng.integers(0, 256, size=(h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(arr, mode).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@st.composite
def damaged(draw, source) -> bytes:
    """``source`` bytes cut short, with bytes overwritten, or with garbage appended."""
    data = bytearray(draw(source))
    how = draw(st.sampled_from(["truncate", "flip", "append", "intact"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif how == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "append":
        data += draw(st.binary(max_size=64))
    return bytes(data)


file_contents = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda sig, tail: SIGNATURES[sig] + tail, st.sampled_from(sorted(SIGNATURES)),
              st.binary(max_size=400)),
    damaged(encoded_images()),
    damaged(jpeg_with_orientation()),
)

# file names: any printable text (accents, CJK, spaces …), not hidden, any known extension in
# any letter case
stems = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00"),
                min_size=1, max_size=20).filter(lambda s: not s.startswith(".") and s.strip() == s
                                                 and len(s.encode()) < 200)
extensions = st.sampled_from(sorted(IMAGE_EXTENSIONS)).flatmap(
    lambda e: st.sampled_from([e, e.upper(), e[:2].upper() + e[2:]]))


def _check_image(img: LoadedImage, path: Path) -> None:
    t = img.tensor
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.ndim == 3
    assert t.shape[0] in (1, 3) and t.shape[1] >= 1 and t.shape[2] >= 1
    assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    assert img.bit_depth in (8, 16) and img.path == path
    if img.alpha is not None:
        assert img.alpha.shape == tuple(t.shape[1:])


@FUZZ
@given(data=file_contents, ext=extensions)
def test_read_image_returns_an_image_or_names_the_file(data, ext):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzzed{ext}"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # alpha notes, Pillow's EXIF complaints
                img = read_image(path)
        except ImageReadError as exc:
            assert str(path) in str(exc)
            event("refused")
            return
        _check_image(img, path)
        event(f"read {img.tensor.shape[0]} channel(s), {img.bit_depth} bits")


@FUZZ
@given(h=st.integers(1, 48), w=st.integers(1, 48), channels=st.sampled_from([0, 1, 3, 4]),
       dtype=st.sampled_from([np.uint8, np.uint16]), ext=st.sampled_from([".png", ".tif"]),
       seed=st.integers(0, 2**32 - 1))
def test_every_supported_layout_is_read_exactly(h, w, channels, dtype, ext, seed):
    """Grey, RGB and RGBA, 8 and 16 bits, any size: decoded to the stored values exactly."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    arr = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"img{ext}"
        path.write_bytes(buf.tobytes())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = read_image(path)
    _check_image(img, path)
    scale = np.iinfo(dtype).max
    levels = np.rint(img.tensor.numpy().astype(np.float64) * scale).astype(dtype)
    if channels in (0, 1):
        expected = arr.reshape(h, w)[None]
    else:
        expected = arr[:, :, 2::-1].transpose(2, 0, 1)  # BGR(A) on disk -> RGB
    np.testing.assert_array_equal(levels, expected)
    assert img.bit_depth == (16 if dtype == np.uint16 else 8)
    if channels == 4:
        np.testing.assert_array_equal(img.alpha, arr[:, :, 3])


@FUZZ
@given(files=st.lists(file_contents, min_size=1, max_size=3), cache=st.sampled_from(["memory", "none"]))
def test_training_cache_accepts_or_names_every_bad_file(files, cache):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(files):
            paths.append(Path(tmp) / f"f{i}.png")
            paths[-1].write_bytes(data)
        readable = []
        for p in paths:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    readable.append(tuple(read_image(p).tensor.shape))
            except ImageReadError:
                readable.append(None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built = ImageCache(paths, cache, threads=1)
        except DatasetError as exc:
            bad = [p for p, shape in zip(paths, readable) if shape is None]
            assert bad, f"refused although every file reads: {exc}"
            assert all(str(p) in str(exc) for p in bad)
            assert f"{len(bad)} unreadable image file(s)" in str(exc)
            event("refused")
            return
        assert None not in readable
        assert [tuple(s) for s in built.shapes] == readable
        event("accepted")


@FUZZ
@given(files=st.dictionaries(st.tuples(stems, extensions).map("".join), file_contents,
                             min_size=1, max_size=3,
                             dict_class=dict).filter(lambda d: len({k.lower() for k in d}) == len(d)))
def test_restore_folder_never_crashes_and_names_bad_files(files, tiny_weights):
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in", Path(tmp) / "out"
        inp.mkdir()
        for name, data in files.items():
            (inp / name).write_bytes(data)
        readable = {}
        for name in files:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    read_image(inp / name)
                readable[name] = True
            except ImageReadError:
                readable[name] = False
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("default")
            code = main(["restore", "--model", "res-sl-tiny", "--weights", str(tiny_weights),
                         "--device", "cpu", str(inp), str(out)])
        text = err.getvalue()
        assert "Traceback" not in text
        bad = sorted(n for n, ok in readable.items() if not ok)
        assert code == (1 if bad else 0), text
        event(f"{len(bad)} of {len(files)} file(s) refused")
        for name in bad:
            assert f"skipped {name}:" in text
        written = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert written == sorted(n for n, ok in readable.items() if ok)
        assert not [p for p in (out.iterdir() if out.exists() else []) if p.name.startswith(".")]
