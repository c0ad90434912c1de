"""Tests of slkd.data.datasets (with its cache and transforms) and slkd.data.sampler: pairing,
errors, augmentation, determinism, channels, cache, DataLoader workers, and the resumable distributed
sampler."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from slkd.data import read_image, write_image
from slkd.data.cache import ImageCache, probe_image
from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.transforms import dihedral, dihedral_box, to_channels
from slkd.data.degrade import GaussianNoise, build_degradation
from slkd.data.folders import add_test_noise
from slkd.data.sampler import TrainSampler, sample_seed
from slkd.errors import DatasetError, SlkdError

DATA = Path(os.environ.get("SLKD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def identity(clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return clean.clone()


def random_image(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    levels = np.random.default_rng(seed).integers(0, 256, size=(c, h, w))
    return torch.from_numpy(levels.astype(np.float32) / 255.0)


def make_folder(folder: Path, specs: dict[str, tuple[int, int, int]], seed: int = 0,
                ext: str = ".png") -> dict[str, torch.Tensor]:
    """Write images {stem: (c, h, w)}; return the tensors as read back."""
    out = {}
    for k, (stem, (c, h, w)) in enumerate(specs.items()):
        path = write_image(folder / f"{stem}{ext}", random_image(c, h, w, seed + k))
        out[stem] = read_image(path).tensor
    return out


@pytest.fixture
def paired_same(tmp_path: Path) -> Path:
    """input/ and target/ with identical images (lq == gt)."""
    specs = {"a": (3, 24, 30), "b": (3, 28, 28), "c": (3, 32, 26)}
    make_folder(tmp_path / "input", specs)
    make_folder(tmp_path / "target", specs)
    return tmp_path


@pytest.fixture
def clean_folder(tmp_path: Path) -> Path:
    make_folder(tmp_path / "clean", {"x1": (3, 20, 24), "x2": (3, 26, 22), "x3": (3, 24, 24),
                                     "x4": (3, 30, 20)})
    return tmp_path / "clean"


# --------------------------------------------------------------------------------------------
# Paired folders
# --------------------------------------------------------------------------------------------


def test_pairs_are_matched_by_name_not_position(tmp_path: Path) -> None:
    # degraded names sort differently from their targets: position pairing would be wrong
    deg = make_folder(tmp_path / "noisy", {"img_b": (3, 10, 12), "img_a": (3, 11, 9)}, seed=5)
    cln = make_folder(tmp_path / "mean", {"img_a": (3, 11, 9), "img_b": (3, 10, 12)}, seed=9)
    ds = PairedImageDataset(tmp_path)  # layout noisy/mean auto-detected
    assert ds.degraded_dir.name == "noisy" and len(ds) == 2
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["lq"], deg[item["name"]])
        assert torch.equal(item["gt"], cln[item["name"]])


def test_prefix_pairing_and_explicit_dirs(tmp_path: Path) -> None:
    make_folder(tmp_path / "rainy", {"1400_1": (3, 12, 12), "1400_2": (3, 12, 12)})
    make_folder(tmp_path / "gt_dir", {"1400": (3, 12, 12)})
    ds = PairedImageDataset(tmp_path, degraded_dir="rainy", clean_dir="gt_dir")
    assert ds.names == ["1400_1", "1400_2"]
    assert len(ds.image_cache) == 3  # the shared clean image is decoded once
    assert torch.equal(ds[0]["gt"], ds[1]["gt"])
    with pytest.raises(DatasetError, match="both"):
        PairedImageDataset(tmp_path, degraded_dir="rainy")
    with pytest.raises(DatasetError, match="no paired layout"):
        PairedImageDataset(tmp_path)


def test_unmatched_degraded_file_is_an_error(paired_same: Path) -> None:
    write_image(paired_same / "input" / "orphan.png", random_image(3, 24, 30, 1))
    with pytest.raises(DatasetError, match="orphan.png"):
        PairedImageDataset(paired_same)


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_size_mismatch_names_both_files_and_sizes(tmp_path: Path, cache: str) -> None:
    make_folder(tmp_path / "input", {"a": (3, 20, 30), "b": (3, 16, 16)})
    make_folder(tmp_path / "target", {"a": (3, 20, 31), "b": (3, 16, 16)})
    with pytest.raises(DatasetError) as info:
        PairedImageDataset(tmp_path, cache=cache)
    msg = str(info.value)
    assert "a.png is 30×20" in msg and "a.png is 31×20" in msg and "b.png" not in msg


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_images_smaller_than_the_patch_are_listed(tmp_path: Path, cache: str) -> None:
    make_folder(tmp_path / "clean", {"big": (3, 40, 40), "short": (3, 20, 48), "narrow": (1, 48, 12)})
    with pytest.raises(DatasetError) as info:
        DegradedImageDataset(tmp_path / "clean", identity, patch_size=32, cache=cache)
    msg = str(info.value)
    assert "2 image(s)" in msg and "short.png (48×20)" in msg and "narrow.png (12×48)" in msg
    assert "big.png" not in msg
    make_folder(tmp_path / "input", {"s": (3, 20, 20)})
    make_folder(tmp_path / "target", {"s": (3, 20, 20)})
    with pytest.raises(DatasetError, match="s.png"):
        PairedImageDataset(tmp_path, patch_size=24, cache=cache)


def test_augmentation_is_identical_for_lq_and_gt(paired_same: Path) -> None:
    ds = PairedImageDataset(paired_same, patch_size=16, augment=True)
    for index, seed in itertools.product(range(len(ds)), range(40)):
        item = ds[(index, seed)]
        assert item["lq"].shape == (3, 16, 16) and item["lq"].dtype == torch.float32
        assert torch.equal(item["lq"], item["gt"])
        assert item["lq"].is_contiguous()


def test_augmentation_uses_all_eight_flips_and_rotations(tmp_path: Path) -> None:
    make_folder(tmp_path / "input", {"q": (1, 8, 8)})
    make_folder(tmp_path / "target", {"q": (1, 8, 8)})
    img = read_image(tmp_path / "target" / "q.png").tensor
    ds = PairedImageDataset(tmp_path, patch_size=8, augment=True, channels=1)  # crop = whole
    seen = {ds[(0, s)]["gt"].numpy().tobytes() for s in range(200)}
    expected = set()
    for flip in (False, True):
        for k in range(4):
            x = img.flip(-1) if flip else img
            expected.add(torch.rot90(x, k, (-2, -1)).numpy().tobytes())
    assert seen == expected and len(expected) == 8
    plain = PairedImageDataset(tmp_path, patch_size=8, augment=False, channels=1)
    assert all(torch.equal(plain[(0, s)]["gt"], img) for s in range(10))


def test_box_follows_the_flip_or_rotation() -> None:
    window = torch.arange(2 * 7 * 10, dtype=torch.float32).reshape(2, 7, 10)
    t, l, h, w = 1, 2, 4, 5
    for code in range(8):
        moved = dihedral(window, code)
        t2, l2, h2, w2 = dihedral_box((t, l, h, w), (7, 10), code)
        cut = moved[:, t2:t2 + h2, l2:l2 + w2]
        assert torch.equal(cut, dihedral(window[:, t:t + h, l:l + w], code))


def test_synthetic_degradation_is_applied_after_the_rotation(clean_folder: Path) -> None:
    def row_ramp(clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # like falling rain
        return clean + torch.arange(clean.shape[-2], dtype=clean.dtype)[:, None] * 0.01

    class Ramp:
        margin = 2

        def __call__(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            return row_ramp(clean, gen)

    ds = DegradedImageDataset(clean_folder, Ramp(), patch_size=10, augment=True)
    for seed in range(24):
        item = ds[(2, seed)]
        diff = item["lq"] - item["gt"]
        steps = diff[:, 1:] - diff[:, :-1]
        torch.testing.assert_close(steps, torch.full_like(steps, 0.01), atol=1e-5, rtol=0)


def test_non_square_whole_images_keep_their_shape(paired_same: Path) -> None:
    ds = PairedImageDataset(paired_same, augment=True)  # no patch: whole 24×30 images
    shapes = {tuple(ds[(0, s)]["lq"].shape) for s in range(30)}
    assert shapes == {(3, 24, 30)}


def test_samples_are_pure_functions_of_index_and_seed(clean_folder: Path) -> None:
    noise = GaussianNoise(sigma=(5, 50))
    a = DegradedImageDataset(clean_folder, noise, patch_size=16, augment=True)
    b = DegradedImageDataset(clean_folder, noise, patch_size=16, augment=True, cache="none")
    for index, seed in [(0, 1), (3, 2**62 + 17), (2, 5)]:
        x, y = a[(index, seed)], b[(index, seed)]
        assert torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"])
        assert x["name"] == y["name"] == f"x{index + 1}"
    _ = a[(1, 99)]  # order of requests does not matter
    assert torch.equal(a[(0, 1)]["lq"], b[(0, 1)]["lq"])
    assert not torch.equal(a[(0, 1)]["lq"], a[(0, 2)]["lq"])
    assert not torch.equal(a[(0, 1)]["gt"] - a[(0, 1)]["lq"], a[(0, 3)]["gt"] - a[(0, 3)]["lq"])


def test_identity_degradation_and_patch_crops_come_from_the_image(clean_folder: Path) -> None:
    ds = DegradedImageDataset(clean_folder, identity, patch_size=12, augment=False)
    full = read_image(clean_folder / "x4.png").tensor
    windows = full.unfold(1, 12, 1).unfold(2, 12, 1)  # every 12×12 crop
    for seed in range(10):
        item = ds[(3, seed)]
        assert torch.equal(item["lq"], item["gt"])
        match = (windows == item["gt"][:, None, None]).all(0).all(-1).all(-1)
        assert match.any()


def test_degradation_sees_context_around_the_patch(clean_folder: Path) -> None:
    class Recorder:
        margin = 3

        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def __call__(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            self.shapes.append(tuple(clean.shape))
            return clean + 1.0

    rec = Recorder()
    ds = DegradedImageDataset(clean_folder, rec, patch_size=8, names=["x3"])  # 24×24
    for seed in range(20):
        item = ds[(0, seed)]
        assert item["lq"].shape == (3, 8, 8)
        torch.testing.assert_close(item["lq"], item["gt"] + 1.0)
    assert all(9 <= h <= 14 and 9 <= w <= 14 for _, h, w in rec.shapes)
    assert (3, 14, 14) in rec.shapes  # interior patches get the full margin


def test_gaussian_evaluation_items_equal_slkd_eval(clean_folder: Path) -> None:
    ds = DegradedImageDataset(clean_folder, build_degradation("gaussian_noise", sigma=25))
    for i, name in enumerate(ds.names):
        clean = read_image(clean_folder / f"{name}.png").tensor
        item = ds[i]
        assert torch.equal(item["gt"], clean)
        assert torch.equal(item["lq"], add_test_noise(clean, 25, seed=0))
    ds7 = DegradedImageDataset(clean_folder, GaussianNoise(15), eval_seed=7, patch_size=16)
    clean = read_image(clean_folder / "x1.png").tensor[:, 2:18, 4:20]  # centre crop of 20×24
    assert torch.equal(ds7[0]["gt"], clean)
    assert torch.equal(ds7[0]["lq"], add_test_noise(clean, 15, seed=7))


def test_evaluation_of_other_degradations_is_fixed_but_per_image(clean_folder: Path) -> None:
    blur = build_degradation("motion_blur", kernel_size=(3, 9))
    ds = DegradedImageDataset(clean_folder, blur)
    assert torch.equal(ds[1]["lq"], ds[1]["lq"])
    plain = DegradedImageDataset(clean_folder, lambda c, g: c + torch.rand((), generator=g))
    offsets = [float((plain[i]["lq"] - plain[i]["gt"]).mean()) for i in range(len(plain))]
    assert len(set(round(o, 6) for o in offsets)) == len(plain)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(TypeError):
        ds["x1"]


# --------------------------------------------------------------------------------------------
# Subsets, folders, channels, cache
# --------------------------------------------------------------------------------------------


def test_names_and_exclude_select_subsets(clean_folder: Path, tmp_path: Path) -> None:
    ds = DegradedImageDataset(clean_folder, identity, names=["x3", "x1"])
    assert ds.names == ["x1", "x3"]
    assert DegradedImageDataset(clean_folder, identity, exclude=["x2"]).names == ["x1", "x3", "x4"]
    make_folder(tmp_path / "test68", {"x1": (3, 8, 8), "x4": (3, 8, 8)})
    assert DegradedImageDataset(clean_folder, identity, exclude=tmp_path / "test68").names == ["x2", "x3"]
    assert DegradedImageDataset(clean_folder, identity, limit=2).names == ["x1", "x2"]
    with pytest.raises(DatasetError, match="x9"):
        DegradedImageDataset(clean_folder, identity, names=["x1", "x9"])
    with pytest.raises(DatasetError, match="not a folder"):
        DegradedImageDataset(clean_folder, identity, exclude=str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="no images left"):
        DegradedImageDataset(clean_folder, identity, exclude=["x1", "x2", "x3", "x4"])


def test_several_roots_and_recursive_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "bsds" / "train", {"t2": (3, 8, 8), "t1": (3, 8, 8)})
    make_folder(tmp_path / "bsds" / "val", {"v1": (3, 8, 8)})
    make_folder(tmp_path / "extra", {"e1": (1, 8, 8)})
    with pytest.raises(DatasetError, match="recursive"):
        DegradedImageDataset(tmp_path / "bsds", identity)
    ds = DegradedImageDataset([tmp_path / "bsds", tmp_path / "extra"], identity, recursive=True)
    assert ds.names == ["t1", "t2", "v1", "e1"]
    with pytest.raises(DatasetError, match="missing"):
        DegradedImageDataset([tmp_path / "missing"], identity)


def test_grey_and_rgb_are_made_consistent(tmp_path: Path) -> None:
    imgs = make_folder(tmp_path / "mixed", {"g": (1, 10, 10), "c": (3, 10, 10)})
    rgb = DegradedImageDataset(tmp_path / "mixed", identity)  # channels=3 by default
    by_name = {rgb[i]["name"]: rgb[i]["gt"] for i in range(2)}
    assert by_name["g"].shape == (3, 10, 10)
    assert all(torch.equal(by_name["g"][k], imgs["g"][0]) for k in range(3))
    assert torch.equal(by_name["c"], imgs["c"])
    grey = DegradedImageDataset(tmp_path / "mixed", identity, channels=1, patch_size=6, augment=True)
    by_name = {grey[i]["name"]: grey[i]["gt"] for i in range(2)}
    c = imgs["c"]
    expected = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    torch.testing.assert_close(by_name["c"][0], expected[2:8, 2:8], atol=1e-6, rtol=0)
    assert torch.equal(by_name["g"], imgs["g"][:, 2:8, 2:8])
    assert all(grey[(i, s)]["lq"].shape == (1, 6, 6) for i in range(2) for s in range(5))
    assert to_channels(torch.ones(1, 2, 2), 1).shape == (1, 2, 2)
    with pytest.raises(DatasetError, match="channels"):
        DegradedImageDataset(tmp_path / "mixed", identity, channels=2)


def test_cache_stores_integers_and_equals_decoding(tmp_path: Path) -> None:
    make_folder(tmp_path / "f", {"a": (3, 9, 11), "g": (1, 7, 5)})
    deep = torch.from_numpy(np.random.default_rng(3).integers(0, 65536, (3, 6, 4)) / 65535.0).float()
    write_image(tmp_path / "f" / "d.png", deep, bit_depth=16)
    paths = sorted((tmp_path / "f").iterdir())
    mem = ImageCache(paths, "memory")
    none = ImageCache(paths, "none")
    assert mem.mode == "memory" and none.mode == "none" and none.nbytes == 0
    assert [a.dtype for a in mem._arrays] == [np.uint8, np.uint16, np.uint8]
    assert mem.nbytes == 3 * 9 * 11 + 2 * 3 * 6 * 4 + 7 * 5
    assert none.estimated_bytes == mem.nbytes and none.shapes == mem.shapes
    for i, p in enumerate(paths):
        ref = read_image(p).tensor
        assert torch.equal(mem.read(i), ref) and torch.equal(none.read(i), ref)
        assert torch.equal(mem.read(i, (1, 2, 3, 2)), ref[:, 1:4, 2:4])
    assert ImageCache(paths, "auto").mode == "memory"
    assert ImageCache(paths, "auto", limit_bytes=100).mode == "none"
    assert probe_image(paths[1]) == (3, 6, 4, 16)
    with pytest.raises(SlkdError, match="cache"):
        ImageCache(paths, "disk")


@pytest.mark.parametrize("kind", ["paired", "degraded"])
def test_cache_modes_give_identical_samples(paired_same: Path, kind: str) -> None:
    def build(cache: str):
        if kind == "paired":
            return PairedImageDataset(paired_same, patch_size=16, augment=True, cache=cache)
        return DegradedImageDataset(paired_same / "target", GaussianNoise((0, 50)), patch_size=16,
                                    augment=True, cache=cache)

    mem, none = build("memory"), build("none")
    assert mem.image_cache.mode == "memory" and none.image_cache.mode == "none"
    for key in [(0, 3), (1, 4), (2, 5), 0, 2]:
        a, b = mem[key], none[key]
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])


# --------------------------------------------------------------------------------------------
# DataLoader and sampler
# --------------------------------------------------------------------------------------------


def test_dataloader_workers_do_not_change_the_batches(clean_folder: Path) -> None:
    ds = DegradedImageDataset(clean_folder, GaussianNoise((0, 50)), patch_size=16, augment=True)

    def batches(workers: int, start: int, count: int) -> list[dict]:
        sampler = TrainSampler(len(ds), batch_size=3, seed=11, start_step=start)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers)
        return list(itertools.islice(iter(loader), count))

    serial = batches(0, 0, 6)
    parallel = batches(2, 0, 6)
    resumed = batches(0, 4, 2)
    for a, b in zip(serial, parallel):
        assert a["name"] == b["name"]
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    assert serial[0]["lq"].shape == (3, 3, 16, 16)
    for a, b in zip(serial[4:], resumed):
        assert torch.equal(a["lq"], b["lq"])


def test_ranks_partition_the_global_batch() -> None:
    single = TrainSampler(23, batch_size=8, seed=5)
    ranks = [TrainSampler(23, batch_size=4, seed=5, rank=r, world_size=2) for r in range(2)]
    for step in range(12):
        glob = single.batch(step)
        assert ranks[0].batch(step) + ranks[1].batch(step) == glob
        assert len({s for _, s in glob}) == 8  # distinct sample seeds
    stream = list(itertools.islice(iter(ranks[1]), 12))
    assert stream == ranks[1].batch(0) + ranks[1].batch(1) + ranks[1].batch(2)


def test_resume_continues_the_uninterrupted_stream() -> None:
    full = list(itertools.islice(iter(TrainSampler(17, 5, seed=3)), 5 * 30))
    for k in (1, 7, 13):
        resumed = list(itertools.islice(iter(TrainSampler(17, 5, seed=3, start_step=k)), 5 * (30 - k)))
        assert resumed == full[5 * k:]
    for r in range(3):
        a = TrainSampler(17, 2, seed=3, rank=r, world_size=3)
        b = TrainSampler(17, 2, seed=3, rank=r, world_size=3, start_step=9)
        assert list(itertools.islice(iter(a), 40))[18:] == list(itertools.islice(iter(b), 22))


def test_each_epoch_visits_every_index_once() -> None:
    n = 13
    sampler = TrainSampler(n, batch_size=3, seed=0, world_size=2, rank=1)
    glob = TrainSampler(n, batch_size=6, seed=0)
    positions = [pair for step in range(40) for pair in glob.batch(step)]
    for epoch in range(len(positions) // n):
        assert sorted(i for i, _ in positions[epoch * n:(epoch + 1) * n]) == list(range(n))
    orders = {tuple(sampler.permutation(e)) for e in range(5)}
    assert len(orders) == 5  # a fresh order every epoch
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1) and 0 <= sample_seed(9, 9, 9) < 2**63
    assert TrainSampler(n, 3, seed=1).batch(0) != TrainSampler(n, 3, seed=2).batch(0)


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        TrainSampler(10, 2, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        TrainSampler(10, 0, 0)
    with pytest.raises(ValueError, match="dataset_len"):
        TrainSampler(0, 2, 0)


# --------------------------------------------------------------------------------------------
# The real benchmark folders
# --------------------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "BSDS500").is_dir() or not (DATA / "CBSD68").is_dir(),
                    reason=f"benchmark data not found at {DATA} (set SLKD_DATA)")
def test_bsds500_minus_cbsd68_is_cbsd432() -> None:
    ds = DegradedImageDataset(DATA / "BSDS500", GaussianNoise(25), recursive=True,
                              exclude=DATA / "CBSD68", cache="none", patch_size=64)
    assert len(ds) == 432 and len(set(ds.names)) == 432
    cbsd68 = {p.stem for p in (DATA / "CBSD68").iterdir()}
    assert not cbsd68.intersection(ds.names)
    item = ds[(0, 1)]
    assert item["lq"].shape == (3, 64, 64)
