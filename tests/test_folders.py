"""Tests of slkd.data.folders: layout detection, pairing by name, and the literature's test noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.folders import add_test_noise, match_pairs, scan_eval_folder, scan_eval_sets
from slkd.data.image_io import write_image
from slkd.errors import DatasetError


def _img(path: Path, channels: int = 3, h: int = 12, w: int = 16, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    return write_image(path, torch.rand(channels, h, w, generator=g))


def _make(root: Path, rel_names: list[str], channels: int = 3) -> list[Path]:
    return [_img(root / rel, channels=channels, seed=i) for i, rel in enumerate(rel_names)]


def _pairs_by_name(items) -> dict[str, tuple[str, str]]:
    return {it.name: (it.degraded.name, it.clean.name) for it in items}


# --------------------------------------------------------------------------------------------
# match_pairs
# --------------------------------------------------------------------------------------------


def test_match_pairs_exact_names_not_sorted_position(tmp_path):
    # "10" sorts before "2" by name: pairing by position in two differently-populated lists
    # would go wrong, pairing by name must not.
    degraded = [tmp_path / "d" / n for n in ("2.png", "10.png")]
    clean = [tmp_path / "c" / n for n in ("10.png", "2.png", "3.png")]
    pairs = match_pairs(degraded, clean)
    assert [(d.name, c.name) for d, c in pairs] == [("2.png", "2.png"), ("10.png", "10.png")]
    assert all(c.parent.name == "c" and d.parent.name == "d" for d, c in pairs)


def test_match_pairs_sots_and_levin_suffixes():
    clean = [Path("gt/im1.png"), Path("gt/im10.png"), Path("gt/1400.png")]
    degraded = [
        Path("x/1400_3.png"),
        Path("x/im1_kernel2_img.png"),
        Path("x/im10_kernel1_img.png"),
        Path("x/im1-k.png"),
    ]
    got = {d.name: c.name for d, c in match_pairs(degraded, clean)}
    assert got == {
        "1400_3.png": "1400.png",
        "im1_kernel2_img.png": "im1.png",
        "im10_kernel1_img.png": "im10.png",  # the longest matching stem, not im1
        "im1-k.png": "im1.png",
    }


def test_match_pairs_prefers_longest_stem_when_both_fit():
    # "scene_2_hazy" starts with "scene_" and with "scene_2_": the longer stem wins
    clean = [Path("scene.png"), Path("scene_2.png")]
    got = {d.name: c.name for d, c in match_pairs([Path("scene_2_hazy.png"), Path("scene_9.png")], clean)}
    assert got == {"scene_2_hazy.png": "scene_2.png", "scene_9.png": "scene.png"}


def test_match_pairs_prefix_needs_a_separator():
    # "im10" must not pair with "im1" just because it starts with it
    with pytest.raises(DatasetError, match="im10_kernel1_img.png"):
        match_pairs([Path("im10_kernel1_img.png")], [Path("im1.png")])
    with pytest.raises(DatasetError, match="14001.png"):
        match_pairs([Path("14001.png")], [Path("1400.png")])


def test_match_pairs_unmatched_names_the_file_and_count():
    with pytest.raises(DatasetError) as err:
        match_pairs([Path("a.png"), Path("orphan_1.png")], [Path("a.png")])
    msg = str(err.value)
    assert "orphan_1.png" in msg and msg.startswith("1 degraded")
    assert "a.png," not in msg  # the matched one is not listed


# --------------------------------------------------------------------------------------------
# scan_eval_folder
# --------------------------------------------------------------------------------------------


def test_scan_input_target_exact_names(tmp_path):
    _make(tmp_path, ["input/1.png", "input/2.png", "target/1.png", "target/2.png"])
    folder = scan_eval_folder(tmp_path)
    assert folder.layout == "paired:input/target" and folder.paired
    assert folder.root == tmp_path
    assert _pairs_by_name(folder.items) == {"1": ("1.png", "1.png"), "2": ("2.png", "2.png")}
    for item in folder.items:
        assert item.degraded.parent == tmp_path / "input"
        assert item.clean.parent == tmp_path / "target"


def test_scan_sots_style(tmp_path):
    _make(tmp_path, ["hazy/1400_3.png", "hazy/1401_10.png", "clear/1400.png", "clear/1401.png"])
    folder = scan_eval_folder(tmp_path)
    assert folder.layout == "paired:hazy/clear"
    assert _pairs_by_name(folder.items) == {
        "1400_3": ("1400_3.png", "1400.png"),
        "1401_10": ("1401_10.png", "1401.png"),
    }


def test_scan_levin_style_with_im10(tmp_path):
    _make(tmp_path, [
        "blurred/im1_kernel2_img.png", "blurred/im10_kernel1_img.png", "blurred/im1_kernel1_img.png",
        "gt/im1.png", "gt/im10.png",
    ], channels=1)
    # a kernels/ folder sits next to them in the real set and must be ignored
    _img(tmp_path / "kernels" / "kernel1.png", channels=1)
    folder = scan_eval_folder(tmp_path)
    assert folder.layout == "paired:blurred/gt"
    assert _pairs_by_name(folder.items) == {
        "im10_kernel1_img": ("im10_kernel1_img.png", "im10.png"),
        "im1_kernel1_img": ("im1_kernel1_img.png", "im1.png"),
        "im1_kernel2_img": ("im1_kernel2_img.png", "im1.png"),
    }


def test_scan_noisy_mean_uppercase_jpg(tmp_path):
    _make(tmp_path, ["noisy/Canon_1.JPG", "mean/Canon_1.JPG"])
    folder = scan_eval_folder(tmp_path)
    assert folder.layout == "paired:noisy/mean"
    assert _pairs_by_name(folder.items) == {"Canon_1": ("Canon_1.JPG", "Canon_1.JPG")}


def test_scan_unmatched_degraded_file_is_named(tmp_path):
    _make(tmp_path, ["input/1.png", "input/stray.png", "target/1.png"])
    with pytest.raises(DatasetError, match=r"stray\.png"):
        scan_eval_folder(tmp_path)


def test_scan_clean_only(tmp_path):
    _make(tmp_path, ["b.png", "a.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    folder = scan_eval_folder(tmp_path)
    assert folder.layout == "clean-only" and not folder.paired
    assert [(it.name, it.degraded, it.clean.name) for it in folder.items] == [
        ("a", None, "a.png"),
        ("b", None, "b.png"),
    ]


def test_scan_only_subfolders_suggests_them(tmp_path):
    _make(tmp_path, ["Set12/01.png", "Kodak24/kodim01.png"])
    with pytest.raises(DatasetError) as err:
        scan_eval_folder(tmp_path)
    msg = str(err.value)
    assert "Kodak24" in msg and "Set12" in msg and "point --data at one of them" in msg


def test_scan_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        scan_eval_folder(tmp_path)


def test_scan_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match="not found") as err:
        scan_eval_folder(missing)
    assert str(missing) in str(err.value)


def test_scan_degraded_only(tmp_path):
    _make(tmp_path, ["input/r1.png", "input/r2.png"])
    folder = scan_eval_folder(tmp_path)
    assert folder.layout == "degraded-only" and not folder.paired
    assert [(it.name, it.degraded.name, it.clean) for it in folder.items] == [
        ("r1", "r1.png", None),
        ("r2", "r2.png", None),
    ]


def test_scan_empty_degraded_folder_of_a_pair(tmp_path):
    (tmp_path / "input").mkdir()
    _make(tmp_path, ["target/1.png"])
    with pytest.raises(DatasetError, match="no images"):
        scan_eval_folder(tmp_path)


# --------------------------------------------------------------------------------------------
# add_test_noise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
def test_add_test_noise_golden_against_numpy(channels):
    h, w, sigma = 5, 7, 25.0  # H != W != C so a wrong draw order or transpose shows
    expected = np.random.RandomState(0).normal(0.0, sigma / 255.0, (h, w, channels))
    expected_chw = torch.from_numpy(expected.astype(np.float32)).permute(2, 0, 1)

    zeros = torch.zeros(channels, h, w)
    assert torch.equal(add_test_noise(zeros, sigma, seed=0), expected_chw)

    clean = torch.rand(channels, h, w, generator=torch.Generator().manual_seed(3))
    noisy = add_test_noise(clean, sigma, seed=0)
    assert noisy.shape == clean.shape and noisy.dtype == torch.float32
    torch.testing.assert_close(noisy, clean + expected_chw, rtol=0, atol=1e-7)


def test_add_test_noise_not_clipped():
    clean = torch.full((3, 32, 32), 0.02)
    clean[:, 16:] = 0.98
    noisy = add_test_noise(clean, 50.0, seed=0)
    assert noisy.min() < 0 and noisy.max() > 1


def test_add_test_noise_seeded():
    clean = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(1))
    a = add_test_noise(clean, 15.0, seed=7)
    assert torch.equal(a, add_test_noise(clean, 15.0, seed=7))
    assert not torch.equal(a, add_test_noise(clean, 15.0, seed=8))
    # the global NumPy generator is neither used nor disturbed
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    add_test_noise(clean, 15.0, seed=7)
    assert np.random.random() == before


def test_add_test_noise_sigma_zero_is_identity():
    clean = torch.rand(3, 6, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(add_test_noise(clean, 0.0), clean)


def test_add_test_noise_negative_sigma():
    with pytest.raises(ValueError, match="sigma"):
        add_test_noise(torch.zeros(3, 4, 4), -1.0)


# --------------------------------------------------------------------------------------------
# what pairing by name accepts: one function (pair_folders) for eval, compress, train, distill
# --------------------------------------------------------------------------------------------


def _paired_readers(root: Path) -> dict:
    """The pairing as each command meets it: `slkd eval` (scan_eval_folder), compress's
    validation sets (scan_eval_sets) and the training data sets of train, distill and compress
    (PairedImageDataset, built by build_dataset)."""
    return {"eval": lambda: scan_eval_folder(root),
            "validation sets": lambda: scan_eval_sets(root)[root.name],
            "training": lambda: PairedImageDataset(root)}


READERS = ["eval", "validation sets", "training"]


@pytest.mark.parametrize("reader", READERS)
def test_two_targets_of_one_name_are_refused_naming_both(tmp_path, reader):
    """x.png and x.jpg as targets: one of them was picked without a word."""
    _make(tmp_path, ["input/x.png", "input/y.png", "target/x.png", "target/x.jpg", "target/y.png"])
    with pytest.raises(DatasetError) as err:
        _paired_readers(tmp_path)[reader]()
    assert "x.jpg and x.png" in str(err.value) and "clean image" in str(err.value)


@pytest.mark.parametrize("reader", READERS)
def test_names_that_differ_only_in_letter_case_are_refused(tmp_path, reader):
    """norain-10.png and norain-10.PNG were both scored (against one target) and counted."""
    _make(tmp_path, ["input/norain-1.png", "input/norain-10.png", "input/norain-10.PNG",
                     "target/norain-1.png", "target/norain-10.png"])
    with pytest.raises(DatasetError) as err:
        _paired_readers(tmp_path)[reader]()
    message = str(err.value)
    assert "norain-10.PNG and norain-10.png" in message and "degraded image" in message


@pytest.mark.parametrize("reader", READERS)
def test_files_not_read_and_targets_left_out_are_named_with_counts(tmp_path, reader):
    """An input slkd does not read (.jfif) was skipped with its target, and targets without an
    input were dropped, without a word; the count is the count scored."""
    _make(tmp_path, ["input/a.png", "target/a.png", "target/b.png", "target/c.png"])
    (tmp_path / "input" / "b.jfif").write_bytes((tmp_path / "target" / "b.png").read_bytes())
    found = _paired_readers(tmp_path)[reader]()
    warnings = found.warnings
    assert len(found.items if hasattr(found, "items") else found) == 1
    assert any("1 file(s) in" in w and "input are not read" in w and "b.jfif" in w for w in warnings), warnings
    assert any("2 of the 3 clean image(s)" in w and "b.png, c.png" in w and "left out" in w
               for w in warnings), warnings


def test_eval_prints_what_pairing_left_out_and_counts_what_it_scores(tmp_path, cli):
    _make(tmp_path, ["input/a.png", "target/a.png", "target/b.png"])
    (tmp_path / "input" / "b.jfif").write_bytes(b"not read")
    result = cli("eval", "--model", "input", "--data", tmp_path, "--task", "denoise")
    assert result.code == 0, result.err
    assert "warning: 1 file(s) in" in result.err and "b.jfif" in result.err
    assert "warning: 1 of the 2 clean image(s)" in result.err and "b.png" in result.err
    assert "(1 images," in result.out


def test_train_and_distill_print_what_their_data_sets_left_out(tmp_path):
    """The runs of slkd train and slkd distill (and compress's stages) name each data set's
    warnings before step 1 (runner.check_data)."""
    from slkd.engine.runner import check_data

    _make(tmp_path / "train", ["input/a.png", "target/a.png", "target/orphan.png"])
    _img(tmp_path / "val" / "v.png", seed=9)
    (tmp_path / "val" / "notes.heic").write_bytes(b"a format slkd does not read")
    train = PairedImageDataset(tmp_path / "train")
    val = DegradedImageDataset(tmp_path / "val", "gaussian_noise")
    notes = []
    assert check_data(train, {"val": val}, notes.append) == {}
    assert any(n.startswith("warning: data.train:") and "orphan.png" in n for n in notes), notes
    assert any(n.startswith("warning: data.val (val):") and "notes.heic" in n for n in notes), notes


@pytest.mark.parametrize("scan", [scan_eval_folder, scan_eval_sets])
def test_a_folder_of_sets_with_a_stray_image_is_refused(tmp_path, scan):
    """vsets/{CBSD,Kodak}/ plus vsets/preview.png turned "CBSD (2), Kodak (1)" into "vsets (1
    image)" in compress and `slkd eval`: refused by one rule (scan_eval_folder) in both."""
    vsets = tmp_path / "vsets"
    _make(vsets, ["CBSD/a.png", "CBSD/b.png", "Kodak/c.png", "preview.png"])
    with pytest.raises(DatasetError) as err:
        scan(vsets)
    message = str(err.value)
    assert "1 image(s) of its own (preview.png)" in message and "(CBSD, Kodak)" in message
    (vsets / "preview.png").unlink()
    if scan is scan_eval_sets:
        assert {n: len(f.items) for n, f in scan(vsets).items()} == {"CBSD": 2, "Kodak": 1}


def test_eval_refuses_a_folder_of_sets_with_a_stray_image_in_one_line(tmp_path, cli):
    _make(tmp_path, ["CBSD/a.png", "Kodak/c.png", "preview.png"])
    result = cli("eval", "--model", "input", "--data", tmp_path, "--task", "denoise")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and "preview.png" in lines[0] and "CBSD" in lines[0]


def test_loose_images_beside_a_paired_layout_are_named(tmp_path):
    _make(tmp_path, ["input/1.png", "target/1.png", "preview.png"])
    folder = scan_eval_folder(tmp_path)
    assert len(folder.items) == 1
    assert any("preview.png" in w and "not scored" in w for w in folder.warnings), folder.warnings
