"""The memory estimate of restoration, and `slkd restore` refusing what would not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import slkd.cli.restore as restore_cli
from slkd.data.image_io import write_image
from slkd.engine.memory import (
    ACTIVATION_OVERHEAD,
    FIXED_OVERHEAD,
    _forward_peak,
    available_memory,
    estimate_memory,
)
from slkd.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

CALIBRATION = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "memory_model.json"
CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def tiny():
    return build_model("res-sl-tiny").eval()


def test_estimate_grows_linearly_with_the_pixels(tiny):
    sizes = [(64, 64), (128, 128), (256, 192), (512, 384)]
    ests = [estimate_memory(tiny, h, w) for h, w in sizes]
    pixels = [h * w for h, w in sizes]
    slopes = [(b.forward - a.forward) / (q - p) for a, b, p, q in zip(ests, ests[1:], pixels, pixels[1:])]
    assert all(s == pytest.approx(slopes[0], rel=1e-6) for s in slopes)
    assert slopes[0] > 100  # hundreds of bytes per pixel for a Restormer-style network
    totals = [e.total for e in ests]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    # 4× the pixels: the size-dependent part grows 4×
    a, b = estimate_memory(tiny, 400, 400), estimate_memory(tiny, 800, 800)
    assert b.total - FIXED_OVERHEAD["cpu"] == pytest.approx(4 * (a.total - FIXED_OVERHEAD["cpu"]), rel=0.01)


def test_traced_peak_equals_the_live_tensors_of_a_real_forward(tiny):
    """The meta-device trace is exact: a real forward pass on the CPU has the same peak."""
    est = estimate_memory(tiny, 40, 56)  # padded to 40×56
    real = _forward_peak(tiny, (1, 3, 40, 56), torch.float32, torch.device("cpu"))
    assert est.model_input == (40, 56)
    assert est.forward == pytest.approx(real + 3 * 40 * 56 * 4, rel=1e-6, abs=64)
    assert est.activations == pytest.approx(est.forward * ACTIVATION_OVERHEAD["cpu"] + FIXED_OVERHEAD["cpu"], abs=2)


def test_wider_models_need_more_and_channels_are_accounted(tiny):
    teacher = build_model("restormer-tiny").eval()
    assert estimate_memory(teacher, 256, 256).forward > 1.8 * estimate_memory(tiny, 256, 256).forward
    grey = build_model("res-sl-tiny", inp_channels=1, out_channels=1).eval()
    one = estimate_memory(grey, 128, 128, channels=1).forward
    three = estimate_memory(grey, 128, 128, channels=3).forward  # RGB on a grey model: 3 planes
    assert three == pytest.approx(3 * one, rel=0.05)
    assert estimate_memory(tiny, 128, 128, batch=2).forward == pytest.approx(
        2 * estimate_memory(tiny, 128, 128).forward, rel=0.05)


def test_tiling_bounds_the_network_memory(tiny):
    whole = estimate_memory(tiny, 3000, 4000)
    tiled = estimate_memory(tiny, 3000, 4000, tile=256)
    assert tiled.model_input == (256, 256) and whole.model_input == (3000, 4000)
    assert tiled.activations == estimate_memory(tiny, 256, 256).activations
    assert tiled.total < whole.total / 10
    # what still grows with the image are the full-size buffers (input, output, canvases)
    assert estimate_memory(tiny, 6000, 8000, tile=256).activations == tiled.activations


def test_cuda_estimates_split_device_and_host(tiny):
    est = estimate_memory(tiny, 512, 512, device="cuda")  # traced on meta: no GPU needed
    assert est.device_bytes == est.activations and est.host_bytes == est.buffers
    cpu = estimate_memory(tiny, 512, 512)
    assert cpu.device_bytes == cpu.host_bytes == cpu.total


@pytest.mark.skipif(not CALIBRATION.is_file(), reason="no calibration results")
def test_estimate_is_not_below_any_calibration_measurement():
    """benchmarks/memory_model.py measured the peak RSS growth of untiled `slkd restore`; the
    estimate (with the calibrated factors) must cover every measured case."""
    rows = json.loads(CALIBRATION.read_text())["results"]
    models = {}
    for row in rows:
        w, h = (int(v) for v in row["image"].split("×"))
        model = models.setdefault(row["model"], build_model(row["model"]).eval())
        est = estimate_memory(model, h, w)
        assert est.total >= row["measured_mib"] * 2**20, row


def test_available_memory_on_this_machine():
    free = available_memory("cpu")
    if free is None:
        pytest.skip("no memory information on this platform")
    assert 0 < free < 2**50
    assert available_memory("meta") is None


# --------------------------------------------------------------------------------------------
# slkd restore
# --------------------------------------------------------------------------------------------


@pytest.fixture
def big_image(tmp_path):
    return write_image(tmp_path / "in" / "big.png", torch.rand(3, 256, 192, generator=torch.Generator().manual_seed(0)))


def _fake_available(monkeypatch, tiny, tile_that_fits=128):
    """Make 'available' memory fall between the untiled and the tiled estimate of big.png."""
    whole = estimate_memory(tiny, 256, 192).total
    tiled = estimate_memory(tiny, 256, 192, tile=tile_that_fits).total
    assert tiled < whole
    fake = (whole + tiled) // 2
    monkeypatch.setattr(restore_cli, "available_memory", lambda device="cpu": fake)
    return fake


def test_restore_refuses_an_image_too_large_for_the_memory(cli, tmp_path, tiny_weights, big_image,
                                                           monkeypatch, tiny):
    _fake_available(monkeypatch, tiny)
    out = tmp_path / "out.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, big_image, out)
    assert r.code == 1 and "Traceback" not in r.err
    assert "skipped big.png: restoring this 192×256 image in one piece needs about" in r.err
    assert "MiB is available; use --tile 128 (about" in r.err and "--force" in r.err
    assert not out.exists()
    # the suggested tiling fits and runs
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, "--tile", 128,
            big_image, out)
    assert r.code == 0, r.err
    assert out.is_file()


def test_restore_force_overrides_the_memory_check(cli, tmp_path, tiny_weights, big_image, monkeypatch, tiny):
    _fake_available(monkeypatch, tiny)
    out = tmp_path / "forced.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, "--force", big_image, out)
    assert r.code == 0, r.err
    assert out.is_file()


def test_too_large_image_in_a_folder_is_skipped_and_the_rest_restored(cli, tmp_path, tiny_weights, big_image,
                                                                      monkeypatch, tiny):
    write_image(big_image.parent / "small.png", torch.rand(3, 24, 24))
    _fake_available(monkeypatch, tiny)
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, big_image.parent, tmp_path / "out")
    assert r.code == 1
    assert "1 of 2 image(s) could not be restored: big.png" in r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.png"]


def test_when_even_small_tiles_do_not_fit_the_message_says_so(cli, tmp_path, tiny_weights, big_image, monkeypatch):
    monkeypatch.setattr(restore_cli, "available_memory", lambda device="cpu": 2**20)
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, "--tile", 64,
            big_image, tmp_path / "o.png")
    assert r.code == 1
    assert "in 64×64 tiles needs about" in r.err and "1 MiB is available" in r.err
    assert "tiling cannot make it smaller" in r.err or "even --tile" in r.err


def test_forward_memory_is_traced_without_allocating_and_grows_with_the_batch(tiny):
    """The bound of a training batch (compress --batch, data.batch_size): traced on the meta
    device, so a batch of 100000 is estimated without allocating it."""
    from slkd.engine.memory import forward_memory

    one = forward_memory(tiny, 16, 16, batch=1)
    many = forward_memory(tiny, 16, 16, batch=100000)
    fixed = FIXED_OVERHEAD["cpu"]
    assert (many - fixed) == pytest.approx(100000 * (one - fixed), rel=0.05)
    assert estimate_memory(tiny, 16, 16).forward * ACTIVATION_OVERHEAD["cpu"] + fixed == pytest.approx(one, abs=1)


def test_train_refuses_a_batch_that_cannot_fit_before_step_1(tmp_path, cli, monkeypatch):
    """data.batch_size 100000 died in an allocation traceback at the first step (as compress
    --batch 100000 did); the same check (check_batch_fits) now refuses it before step 1."""
    import yaml

    import slkd.engine.memory as memory

    for i in range(2):
        write_image(tmp_path / "data" / f"img{i}.png", torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(i)))
    config = {"name": "big", "output_dir": str(tmp_path / "runs"), "model": {"name": "res-sl-tiny"},
              "data": {"root": str(tmp_path), "batch_size": 100000,
                       "train": {"type": "degraded", "roots": ["data"], "patch_size": 16,
                                 "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}},
              "train": {"iters": 2}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 4 * 2**30)
    result = cli("train", "--config", tmp_path / "c.yaml", *CPU)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.err
    assert "data.batch_size 100000 of 16×16 patches does not fit" in lines[0]
    assert "only 4.0 GiB is available" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written
