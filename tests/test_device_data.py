"""The device-resident training data (slkd.data.device): on the CPU its batches are the
DataLoader's, bit for bit, for every kind of data it takes (crops, flips/rotations, grey and
16-bit files, σ, noise); what it does not take stays with the DataLoader, saying why; and with
a generator of its own for the noise (another device's stream) the distribution is the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slkd.data import write_image
from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.degrade import GaussianNoise, build_degradation
from slkd.data.device import DeviceBatches, device_batches, device_data_reason
from slkd.data.sampler import TrainSampler


def _image(c, h, w, seed):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (c, h, w)).astype(np.float32) / 255)


@pytest.fixture
def paired(tmp_path: Path) -> Path:
    specs = {"a": (3, 24, 30), "b": (3, 28, 28), "c": (1, 32, 26)}  # a grey pair among colour ones
    for k, (stem, (c, h, w)) in enumerate(specs.items()):
        write_image(tmp_path / "input" / f"{stem}.png", _image(c, h, w, k))
        write_image(tmp_path / "target" / f"{stem}.png", _image(c, h, w, 10 + k))
    return tmp_path


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    for k, (c, h, w) in enumerate([(3, 20, 24), (3, 26, 22), (1, 24, 24), (3, 30, 20)]):
        write_image(tmp_path / "clean" / f"x{k}.png", _image(c, h, w, 20 + k), bit_depth=16 if k == 3 else 8)
    return tmp_path / "clean"


def _loader_batch(dataset, batch_size, seed, step, rank=0, world=1):
    sampler = TrainSampler(len(dataset), batch_size, seed, rank=rank, world_size=world)
    items = [dataset[pair] for pair in sampler.batch(step)]
    return {k: torch.stack([it[k] for it in items]) for k in ("lq", "gt")}


def test_paired_batches_are_the_dataloaders_bit_for_bit(paired):
    ds = PairedImageDataset(paired, patch_size=16, augment=True)
    batches = DeviceBatches(ds, 4, seed=3, device="cpu")
    for step in (0, 1, 7):
        got, want = batches.batch(step), _loader_batch(ds, 4, 3, step)
        assert torch.equal(got["lq"], want["lq"]) and torch.equal(got["gt"], want["gt"])


@pytest.mark.parametrize("sigma", [25.0, (5.0, 50.0)])
def test_noisy_batches_are_the_dataloaders_bit_for_bit(clean, sigma):
    """Clean images (8- and 16-bit, grey made colour) with Gaussian noise of a fixed σ or a σ
    range: crop, flip/rotation, σ and noise all equal, and a rank's share of a global batch."""
    ds = DegradedImageDataset(clean, GaussianNoise(sigma), patch_size=16, augment=True)
    for rank in (0, 1):
        batches = DeviceBatches(ds, 3, seed=11, device="cpu", rank=rank, world_size=2, start_step=5)
        it = iter(batches)
        for step in (5, 6):
            got, want = next(it), _loader_batch(ds, 3, 11, step, rank, 2)
            assert torch.equal(got["gt"], want["gt"]) and torch.equal(got["lq"], want["lq"])


def test_without_augmentation_no_flip_is_drawn(paired):
    ds = PairedImageDataset(paired, patch_size=8, augment=False)
    got, want = DeviceBatches(ds, 2, seed=0, device="cpu").batch(3), _loader_batch(ds, 2, 0, 3)
    assert torch.equal(got["lq"], want["lq"]) and torch.equal(got["gt"], want["gt"])


def test_a_noise_stream_of_its_own_has_the_same_distribution(clean):
    """A GPU draws each sample's noise from a generator of its own seeded with the sample's seed
    (``fresh_noise``, run here on the CPU): the same crops, other noise, the same N(0, σ²)."""
    ds = DegradedImageDataset(clean, GaussianNoise(25.0), patch_size=16, augment=True)
    exact, own = DeviceBatches(ds, 8, seed=1, device="cpu"), DeviceBatches(ds, 8, seed=1, device="cpu")
    own.fresh_noise = True
    noise = {"exact": [], "own": []}
    for step in range(20):
        a, b = exact.batch(step), own.batch(step)
        assert torch.equal(a["gt"], b["gt"])
        noise["exact"].append((a["lq"] - a["gt"]).flatten())
        noise["own"].append((b["lq"] - b["gt"]).flatten())
    ref, mine = torch.cat(noise["exact"]), torch.cat(noise["own"])
    assert not torch.equal(ref, mine)
    assert torch.equal(own.batch(3)["lq"], own.batch(3)["lq"])  # deterministic: a function of the step
    for x in (ref, mine):
        assert abs(x.mean().item()) < 3e-3 and x.std().item() == pytest.approx(25 / 255, rel=0.01)
        assert ((x / (25 / 255)).abs() > 2).float().mean().item() == pytest.approx(0.0455, abs=0.004)


def test_what_the_device_path_does_not_take_stays_with_the_loader(clean, paired):
    blur = DegradedImageDataset(clean, build_degradation("motion_blur"), patch_size=16)
    assert "made on the host" in device_data_reason(blur)
    grey = DegradedImageDataset(clean, GaussianNoise(25.0), patch_size=16, channels=1)
    assert "grey" in device_data_reason(grey)
    whole = PairedImageDataset(paired)
    assert "whole images" in device_data_reason(whole)
    batches, line = device_batches(blur, 2, 0, torch.device("cpu"))
    assert batches is None and line.startswith("training data: DataLoader (") and "made on the host" in line
    with pytest.raises(ValueError, match="data.device_data: true, but .*made on the host"):
        device_batches(blur, 2, 0, torch.device("cpu"), mode=True)
    ok = PairedImageDataset(paired, patch_size=8)
    batches, line = device_batches(ok, 2, 0, torch.device("cpu"))
    assert batches is not None and "3 images" in line and "on cpu" in line
    assert device_batches(ok, 2, 0, torch.device("cpu"), mode=False)[0] is None


def test_data_larger_than_its_share_of_free_memory_stays_with_the_loader(paired, monkeypatch):
    import slkd.data.device as device

    monkeypatch.setattr(device, "free_memory", lambda dev: 1000)
    batches, line = device_batches(PairedImageDataset(paired, patch_size=8), 2, 0, torch.device("cpu"))
    assert batches is None and "exceed 25% of the 0 MiB free on cpu" in line
