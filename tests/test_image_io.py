"""Tests of slkd.data.image_io: exact round trips, channel order, alpha, EXIF, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from slkd.data import IMAGE_EXTENSIONS, LoadedImage, list_images, read_image, write_image
from slkd.errors import DatasetError, ImageReadError, SlkdError


def _levels(tensor: torch.Tensor, maxval: int) -> np.ndarray:
    return np.round(tensor.numpy() * maxval).astype(np.int64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_rgb_8bit_png_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    levels = rng.integers(0, 256, size=(3, 17, 23), dtype=np.uint8)
    tensor = torch.from_numpy(levels.astype(np.float32) / 255.0)
    path = write_image(tmp_path / "rgb.png", tensor)
    img = read_image(path)
    assert isinstance(img, LoadedImage)
    assert img.bit_depth == 8 and img.alpha is None and img.path == path
    assert img.tensor.dtype == torch.float32 and img.tensor.shape == (3, 17, 23)
    np.testing.assert_array_equal(_levels(img.tensor, 255), levels)


def test_grey_8bit_png_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    levels = rng.integers(0, 256, size=(1, 9, 14), dtype=np.uint8)
    write_image(tmp_path / "grey.png", torch.from_numpy(levels / 255.0).float())
    img = read_image(tmp_path / "grey.png")
    assert img.tensor.shape == (1, 9, 14)
    np.testing.assert_array_equal(_levels(img.tensor, 255), levels)
    # The file really is single-channel.
    assert cv2.imread(str(tmp_path / "grey.png"), cv2.IMREAD_UNCHANGED).ndim == 2


def test_16bit_png_keeps_precision_beyond_8_bits(tmp_path: Path, rng: np.random.Generator) -> None:
    levels = rng.integers(0, 65536, size=(3, 8, 10), dtype=np.uint16)
    levels[0, 0, 0] = 1000  # 1000 / 65535 is not on the 8-bit grid (1000 % 257 != 0)
    write_image(tmp_path / "deep.png", torch.from_numpy(levels / 65535.0).float(), bit_depth=16)
    img = read_image(tmp_path / "deep.png")
    assert img.bit_depth == 16
    np.testing.assert_array_equal(_levels(img.tensor, 65535), levels)
    off_grid = levels % 257 != 0
    assert off_grid.any()  # the test would prove nothing if all levels were 8-bit values


def test_bgr_on_disk_becomes_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[:, :, 2] = 255  # pure red in OpenCV's BGR order
    assert cv2.imwrite(str(tmp_path / "red.png"), bgr)
    t = read_image(tmp_path / "red.png").tensor
    assert torch.all(t[0] == 1.0) and torch.all(t[1:] == 0.0)
    # And writing goes the other way.
    write_image(tmp_path / "red2.png", t)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "red2.png")), bgr)


def test_three_equal_channels_stay_three(tmp_path: Path) -> None:
    grey_rgb = np.full((4, 4, 3), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "flat.png"), grey_rgb)
    assert read_image(tmp_path / "flat.png").tensor.shape == (3, 4, 4)


def test_rgba_warns_and_alpha_is_reattached(tmp_path: Path, rng: np.random.Generator) -> None:
    bgra = rng.integers(0, 256, size=(6, 7, 4), dtype=np.uint8)
    src = tmp_path / "rgba.png"
    cv2.imwrite(str(src), bgra)
    with pytest.warns(UserWarning, match="alpha channel dropped, re-attached on save") as rec:
        img = read_image(src)
    assert str(src) in str(rec[0].message)
    assert img.tensor.shape == (3, 6, 7)
    assert img.alpha is not None and img.alpha.dtype == np.uint8
    np.testing.assert_array_equal(img.alpha, bgra[:, :, 3])
    np.testing.assert_array_equal(_levels(img.tensor, 255), bgra[:, :, 2::-1].transpose(2, 0, 1))

    out = tmp_path / "out.png"
    write_image(out, img.tensor, alpha=img.alpha)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), bgra)


def test_8bit_alpha_is_scaled_for_16bit_output(tmp_path: Path) -> None:
    alpha = np.array([[0, 1, 128, 255]], np.uint8)
    out = tmp_path / "a16.tif"
    write_image(out, torch.full((3, 1, 4), 0.5), bit_depth=16, alpha=alpha)
    raw = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (1, 4, 4)
    np.testing.assert_array_equal(raw[:, :, 3], alpha.astype(np.uint16) * 257)


def test_non_ascii_file_name(tmp_path: Path, rng: np.random.Generator) -> None:
    levels = rng.integers(0, 256, size=(3, 5, 6), dtype=np.uint8)
    path = tmp_path / "ñandú_雨" / "ñandú_雨.png"
    write_image(path, torch.from_numpy(levels / 255.0).float())
    assert path.is_file()
    np.testing.assert_array_equal(_levels(read_image(path).tensor, 255), levels)


def _jpeg_with_orientation(path: Path, array: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, "JPEG", quality=100, exif=exif.tobytes())


def test_exif_orientation_6_transposes_shape(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)  # landscape as stored
    arr[:, :20] = 255  # left half white
    path = tmp_path / "rotated.jpg"
    _jpeg_with_orientation(path, arr, 6)
    t = read_image(path).tensor
    assert t.shape == (3, 40, 20)  # displayed as portrait
    # Orientation 6 = turn 90° clockwise: the stored left half becomes the top half.
    assert t[:, :18].mean() > 0.9 and t[:, 22:].mean() < 0.1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pillow(tmp_path: Path, orientation: int) -> None:
    arr = np.zeros((16, 24, 3), np.uint8)
    arr[:8, :8] = (255, 0, 0)  # a red block in one corner and a green one in another makes
    arr[8:, 16:] = (0, 255, 0)  # every one of the 8 orientations distinguishable
    path = tmp_path / f"o{orientation}.jpg"
    _jpeg_with_orientation(path, arr, orientation)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = _levels(read_image(path).tensor, 255).transpose(1, 2, 0)
    assert got.shape == expected.shape
    assert np.abs(got - expected.astype(np.int64)).max() <= 8  # same pixels up to JPEG decoders


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty"),
        ("garbage.png", b"this is not an image at all" * 10, "not a supported image"),
    ],
)
def test_bad_files_raise_image_read_error(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as exc:
        read_image(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises(tmp_path: Path, rng: np.random.Generator, ext: str) -> None:
    ok, buf = cv2.imencode(ext, rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
    data = buf.tobytes()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as exc:
        read_image(path)
    assert str(path) in str(exc.value)


def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageReadError, match="does not exist") as exc:
        read_image(missing)
    assert str(missing) in str(exc.value)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageReadError, match="directory") as exc:
        read_image(folder)
    assert str(folder) in str(exc.value)


def test_float_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    ok, buf = cv2.imencode(".tif", np.full((4, 4, 3), 0.5, np.float32))
    assert ok
    path.write_bytes(buf.tobytes())
    with pytest.raises(ImageReadError, match="float32") as exc:
        read_image(path)
    assert str(path) in str(exc.value)


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "out" / "img.png"
    write_image(target, torch.rand(3, 8, 8))
    write_image(target, torch.rand(3, 8, 8))  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["img.png"]


def test_interrupted_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slkd.data.image_io as image_io

    target = tmp_path / "img.png"
    write_image(target, torch.zeros(3, 4, 4))
    before = target.read_bytes()

    def crash(src: object, dst: object) -> None:  # simulates dying just before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_io.os, "replace", crash)
    with pytest.raises(SlkdError, match="No space left") as exc:
        write_image(target, torch.ones(3, 4, 4))
    assert str(target) in str(exc.value)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


def test_write_clamps_and_handles_batch_dim(tmp_path: Path) -> None:
    t = torch.tensor([[[-0.5, 0.2, 1.7]]]).expand(3, 1, 3).unsqueeze(0)
    write_image(tmp_path / "c.png", t)
    got = _levels(read_image(tmp_path / "c.png").tensor, 255)
    np.testing.assert_array_equal(got[:, 0], [[0, 51, 255]] * 3)


def test_jpeg_written_as_8bit(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="8-bit"):
        write_image(tmp_path / "x.JPG", torch.full((3, 8, 8), 0.5), bit_depth=16)
    img = read_image(tmp_path / "x.JPG")
    assert img.bit_depth == 8
    assert torch.allclose(img.tensor, torch.full((3, 8, 8), 0.5), atol=2 / 255)


def test_unknown_extension_is_slkd_error(tmp_path: Path) -> None:
    with pytest.raises(SlkdError, match="unknown extension"):
        write_image(tmp_path / "x.gif", torch.zeros(3, 2, 2))
    assert not any(tmp_path.iterdir())


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", "c.tiff", ".hidden.png", "notes.txt", "d.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff", "d.webp"]
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == set(IMAGE_EXTENSIONS)
    with pytest.raises(DatasetError):
        list_images(tmp_path / "missing")


def test_no_warning_for_plain_rgb(tmp_path: Path) -> None:
    write_image(tmp_path / "p.png", torch.rand(3, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "p.png")


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".TIFF", ".webp"])
def test_lossless_formats_round_trip(tmp_path: Path, rng: np.random.Generator, ext: str) -> None:
    levels = rng.integers(0, 256, size=(3, 9, 11), dtype=np.uint8)
    path = write_image(tmp_path / f"img{ext}", torch.from_numpy(levels / 255.0).float())
    np.testing.assert_array_equal(_levels(read_image(path).tensor, 255), levels)


def test_16bit_grey_tiff_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    levels = rng.integers(0, 65536, size=(1, 5, 7), dtype=np.uint16)
    path = write_image(tmp_path / "g.tif", torch.from_numpy(levels / 65535.0).float(), bit_depth=16)
    img = read_image(path)
    assert img.bit_depth == 16 and img.tensor.shape == (1, 5, 7)
    np.testing.assert_array_equal(_levels(img.tensor, 65535), levels)
