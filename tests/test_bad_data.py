"""Bad and unusual image files, one of each kind, in training and in inference.

Training refuses a data set with an unreadable file at construction — before any step — and
names every such file; unusual but valid files (grey among RGB, 16-bit, RGBA, EXIF-rotated
JPEG, non-ASCII names) are accepted and made consistent. `slkd restore` reports each bad file
by name, restores the others, and exits with 1. (Pair size mismatches and images smaller than
the patch are covered in test_datasets.py; random inputs in test_fuzz.py.)
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from slkd.cli.main import main
from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.degrade import GaussianNoise
from slkd.data.image_io import read_image, write_image
from slkd.errors import DatasetError

pytestmark = pytest.mark.usefixtures("one_thread")


def _png_bytes(h: int, w: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return cv2.imencode(".png", arr)[1].tobytes()


def _jpeg_rotated(h: int, w: int, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    arr = np.random.default_rng(1).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _bad_files(folder: Path) -> dict[str, bytes]:
    """One file of each unreadable kind, written into ``folder``; returns name -> bytes."""
    png = _png_bytes(24, 24)
    jpeg = cv2.imencode(".jpg", np.full((24, 24, 3), 128, np.uint8))[1].tobytes()
    float_tiff = cv2.imencode(".tif", np.full((24, 24, 3), 0.5, np.float32))[1].tobytes()
    files = {
        "zero_bytes.png": b"",
        "truncated.png": png[: len(png) * 2 // 3],  # valid header, pixel data cut off
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "header_only.png": png[:33],  # signature and IHDR, nothing else
        "not_an_image.jpg": b"<html>404 not found</html>" * 4,
        "float32.tif": float_tiff,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _odd_but_valid(folder: Path) -> None:
    """Grey, 16-bit, RGBA, EXIF-rotated JPEG and a non-ASCII name, all at least 24×24."""
    write_image(folder / "rgb.png", torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0)))
    write_image(folder / "grey.png", torch.rand(1, 28, 24, generator=torch.Generator().manual_seed(1)))
    write_image(folder / "deep16.png", torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(2)), bit_depth=16)
    write_image(folder / "rgba.png", torch.rand(3, 24, 26, generator=torch.Generator().manual_seed(3)),
                alpha=np.full((24, 26), 200, np.uint8))
    (folder / "rotated.jpg").write_bytes(_jpeg_rotated(24, 40))  # stored 40 wide, shown 24 wide
    write_image(folder / "pluie_雨_ñ.png", torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(4)))


# --------------------------------------------------------------------------------------------
# training data: refused up front, every bad file named
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_training_set_with_unreadable_files_is_refused_naming_each(tmp_path, cache):
    folder = tmp_path / "clean"
    _odd_but_valid(folder)
    bad = _bad_files(folder)
    with pytest.raises(DatasetError) as exc, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DegradedImageDataset(folder, GaussianNoise(25), patch_size=16, cache=cache)
    message = str(exc.value)
    assert f"{len(bad)} unreadable image file(s)" in message
    for name in bad:
        assert name in message, name
    # the first five with their reasons, the others by name
    assert "float32.tif: unsupported sample type float32" in message
    assert "truncated.png: not a supported image, or the file is truncated" in message


def test_paired_set_with_an_unreadable_target_is_refused(tmp_path):
    for sub in ("input", "target"):
        write_image(tmp_path / sub / "a.png", torch.rand(3, 20, 20))
    (tmp_path / "input" / "b.png").write_bytes(_png_bytes(20, 20))
    (tmp_path / "target" / "b.png").write_bytes(_png_bytes(20, 20)[:60])
    with pytest.raises(DatasetError, match=r"1 unreadable image file\(s\): cannot read image .*target.b\.png"):
        PairedImageDataset(tmp_path, patch_size=16, cache="none")


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_odd_but_valid_training_files_are_accepted_and_made_consistent(tmp_path, cache):
    folder = tmp_path / "clean"
    _odd_but_valid(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alpha dropped
        ds = DegradedImageDataset(folder, GaussianNoise(25), patch_size=16, augment=True, cache=cache)
    sizes = dict(zip(ds.names, ds._sizes))
    assert sizes["rotated"] == (40, 24)  # EXIF orientation 6 applied: displayed portrait
    assert sizes["grey"] == (28, 24) and "pluie_雨_ñ" in sizes
    for i in range(len(ds)):
        item = ds[(i, 7)]
        assert item["lq"].shape == item["gt"].shape == (3, 16, 16)  # grey made RGB, alpha gone
        assert torch.isfinite(item["lq"]).all() and 0 <= item["gt"].min() and item["gt"].max() <= 1


def test_cli_train_refuses_unreadable_data_before_the_first_step(tmp_path, capsys):
    folder = tmp_path / "data" / "train"
    _odd_but_valid(folder)
    (folder / "cut.png").write_bytes(_png_bytes(32, 32)[:100])
    cfg = {
        "name": "bad", "output_dir": str(tmp_path / "runs"), "model": {"name": "res-sl-tiny"},
        "data": {"root": str(tmp_path / "data"), "batch_size": 2, "val": [],
                 "train": {"type": "degraded", "roots": ["train"], "patch_size": 16,
                           "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}},
        "train": {"iters": 2},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "1 unreadable image file(s)" in err and "cut.png" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "bad" / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------------
# inference: each bad file reported by name, the folder continues, exit code 1
# --------------------------------------------------------------------------------------------


def test_restore_folder_reports_every_bad_file_and_restores_the_rest(cli, tmp_path, tiny_weights):
    inp, out = tmp_path / "in", tmp_path / "out"
    _odd_but_valid(inp)
    bad = _bad_files(inp)
    write_image(inp / "one_pixel.png", torch.rand(3, 1, 1))
    write_image(inp / "thin.png", torch.rand(1, 1, 37))
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, "--device", "cpu", inp, out)
    assert r.code == 1 and "Traceback" not in r.err
    for name in bad:
        assert f"skipped {name}: cannot read image" in r.err, name
    assert f"{len(bad)} of {len(bad) + 8} image(s) could not be restored" in r.err
    good = {"rgb.png", "grey.png", "deep16.png", "rgba.png", "rotated.jpg", "pluie_雨_ñ.png",
            "one_pixel.png", "thin.png"}
    assert {p.name for p in out.iterdir()} == good
    assert read_image(out / "rotated.jpg").tensor.shape == (3, 40, 24)  # upright, as displayed
    assert read_image(out / "grey.png").tensor.shape == (1, 28, 24)
    assert read_image(out / "deep16.png").bit_depth == 16
    assert read_image(out / "one_pixel.png").tensor.shape == (3, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_image(out / "rgba.png").alpha is not None


def test_restore_writer_warnings_become_notes_naming_the_file(cli, tmp_path, tiny_weights):
    """A 16-bit RGBA PNG restored into a JPEG: depth and alpha cannot be kept, and the user is
    told so as notes (no Python warning lines)."""
    src = write_image(tmp_path / "deep_rgba.png", torch.rand(3, 16, 16), bit_depth=16,
                      alpha=np.full((16, 16), 1000, np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the CLI would fail the test
        r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, "--device", "cpu",
                src, tmp_path / "out.jpg")
    assert r.code == 0, r.err
    assert "warning:" in r.err and "cannot store 16-bit samples" in r.err and "alpha dropped" in r.err
    assert "UserWarning" not in r.err


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_dangling_links_and_gifs_among_training_images_are_named(tmp_path, cache):
    """A link whose target was deleted used to vanish from the data set without a word, and a
    GIF renamed .png trained on its first frame (docs/reliability.md §8, item 10)."""
    folder = tmp_path / "train"
    write_image(folder / "good.png", torch.rand(3, 24, 24))
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    frames = [Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)) for i in range(2)]
    frames[0].save(folder / "anim.png", format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(DatasetError) as info:
        DegradedImageDataset(folder, GaussianNoise(25), patch_size=16, cache=cache)
    message = str(info.value)
    assert "2 unreadable" in message and "gone.png" in message and "deleted.png" in message
    assert "anim.png" in message and "GIF" in message
