"""End-to-end tests of the ``slkd`` command line, run in-process through ``slkd.cli.main.main``
(plus one run of the installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from slkd.data.folders import add_test_noise
from slkd.data.image_io import read_image, write_image
from slkd.engine import restore
from slkd.metrics import brisque, piqe, psnr, ssim
from slkd.models import build_model, count_parameters, list_models, load_weights

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = ("--device", "cpu")
#: the library's own NCHW path, for outputs compared with restore() to the bit (the fastest path
#: on the CPU, channels-last, agrees to float rounding: its own tests)
EAGER = (*CPU, "--inference", "eager")


def _rand(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


def _smooth(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth random image (a natural-ish target, so PSNR/SSIM are far from their extremes)."""
    low = _rand(c, max(2, h // 8), max(2, w // 8), seed)[None]
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]


def _model(weights: Path, **overrides) -> torch.nn.Module:
    model = build_model("res-sl-tiny", **overrides)
    load_weights(model, weights)
    return model.eval()


def _levels(t: torch.Tensor) -> np.ndarray:
    """C×H×W float in [0, 1] -> H×W×C uint8 as written to an 8-bit file."""
    return t.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _read_rgb_levels(path: Path) -> np.ndarray:
    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(arr[:, :, ::-1]) if arr.ndim == 3 else arr[:, :, None]


def _unchanged(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


# --------------------------------------------------------------------------------------------
# models, console entry
# --------------------------------------------------------------------------------------------


def test_models_lists_presets(cli):
    r = cli("models")
    assert r.code == 0
    listed = [line.split()[0] for line in r.out.splitlines() if line.strip()]
    assert listed == list_models()
    assert "student of restormer-tiny" in next(l for l in r.out.splitlines() if l.startswith("res-sl-tiny "))


@pytest.mark.slow
def test_console_script_runs():
    """The installed ``slkd`` entry point (or ``python -m slkd.cli.main`` without one)."""
    script = shutil.which("slkd", path=str(Path(sys.executable).parent))
    cmd = [script] if script else [sys.executable, "-m", "slkd.cli.main"]
    done = subprocess.run(cmd + ["models"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # what the library registers in a fresh process (this one may hold presets that tests and
    # benchmarks registered from outside slkd)
    fresh = subprocess.run([sys.executable, "-c", "from slkd.models import list_models; print(*list_models())"],
                           capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert [l.split()[0] for l in done.stdout.splitlines() if l.strip()] == fresh
    assert "restormer" in fresh and "res-sl-tiny-deep" not in fresh


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------


def test_profile_one_model_json(cli):
    r = cli("profile", "--model", "res-sl-tiny", "--size", 32, 32, "--runs", 1, "--warmup", 0, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["input_size"] == [32, 32]
    m = report["models"]["res-sl-tiny"]
    assert m["params"] == count_parameters(build_model("res-sl-tiny"))
    assert m["macs"] > 0
    assert m["macs"] == m["macs_convolution"] + m["macs_attention_matmul"]
    assert m["latency_runs"] == 1 and m["latency_ms_median"] > 0
    assert "comparison" not in report


def test_profile_macs_scale_with_area(cli):
    small = json.loads(cli("profile", "--model", "res-sl-tiny", "--size", 32, 32, "--no-latency", "--json").out)
    big = json.loads(cli("profile", "--model", "res-sl-tiny", "--size", 64, 64, "--no-latency", "--json").out)
    s, b = small["models"]["res-sl-tiny"], big["models"]["res-sl-tiny"]
    assert b["macs_convolution"] == 4 * s["macs_convolution"]  # convolutions are linear in area
    assert b["macs"] > 4 * s["macs"] - 1  # attention matmuls grow at least as fast
    assert "latency_ms_median" not in s


def test_profile_compare_json(cli):
    r = cli("profile", "--compare", "restormer-tiny", "res-sl-tiny", "--size", 32, 32,
            "--runs", 1, "--warmup", 0, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    c = report["comparison"]
    assert (c["reference"], c["candidate"]) == ("restormer-tiny", "res-sl-tiny")
    assert c["params_reduction"] >= 0.8
    assert c["macs_reduction"] >= 0.8
    assert c["speedup"] > 0
    assert c["speedup_iqr"][0] <= c["speedup"] <= c["speedup_iqr"][1]  # the median of per-round ratios
    a, b = report["models"]["restormer-tiny"], report["models"]["res-sl-tiny"]
    assert c["params_reduction"] == pytest.approx(1 - b["params"] / a["params"])
    assert a["params"] == count_parameters(build_model("restormer-tiny"))


def test_profile_table_output(cli):
    r = cli("profile", "--compare", "restormer-tiny", "res-sl-tiny", "--size", 32, 32, "--no-latency")
    assert r.code == 0
    assert "res-sl-tiny vs restormer-tiny:" in r.out and "fewer params" in r.out


def test_profile_size_not_multiple_of_8(cli):
    r = cli("profile", "--model", "res-sl-tiny", "--size", 30, 32, "--runs", 1, "--warmup", 0)
    assert r.code == 2
    assert "multiples of 8" in r.err and "Traceback" not in r.err
    assert r.out == ""


def test_profile_refuses_a_size_that_cannot_fit_before_allocating(cli, monkeypatch):
    """--size 16 100000000 died in an allocation traceback: the memory of the timed forward pass
    is estimated first (traced on the meta device); counting alone still works."""
    import slkd.engine.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 8 * 2**30)
    r = cli("profile", "--model", "res-sl-tiny", "--size", 16, 100000000, "--runs", 1, "--warmup", 0)
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and "Traceback" not in r.err
    assert "timing res-sl-tiny at 16×100000000 needs about" in lines[0] and "8.0 GiB is available" in lines[0]
    r = cli("profile", "--model", "res-sl-tiny", "--size", 16, 100000000, "--no-latency", "--json")
    assert r.code == 0 and json.loads(r.out)["models"]["res-sl-tiny"]["macs"] > 0


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 5000000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_an_allocation_no_estimate_foresaw_is_one_line(cli, monkeypatch, failure):
    import slkd.cli.profile as profile_cli

    def allocate(*args, **kwargs):
        raise failure

    monkeypatch.setattr(profile_cli, "profile", allocate)
    r = cli("profile", "--model", "res-sl-tiny")
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1, r.err
    assert lines[0].startswith("slkd profile: error: out of memory")
    if isinstance(failure, RuntimeError):
        assert "(tried to allocate 4.7 GiB)" in lines[0]


def test_profile_unknown_model_lists_known(cli):
    r = cli("profile", "--model", "no-such-net", "--size", 32, 32, "--runs", 1)
    assert r.code == 2
    assert "no-such-net" in r.err
    for name in list_models():
        assert name in r.err


def test_profile_bad_threads_is_a_user_error(cli, capsys):
    with pytest.raises(SystemExit) as exc:  # refused while parsing (number() in cli/common.py)
        cli("profile", "--model", "res-sl-tiny", "--size", 32, 32, "--runs", 1, "--threads", 0)
    assert exc.value.code == 2 and "argument --threads: must be >= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------


def test_restore_single_odd_sized_file_matches_library(cli, tmp_path, tiny_weights):
    src = write_image(tmp_path / "odd.png", _rand(3, 29, 37, seed=1))  # 37 wide, 29 high
    dest = tmp_path / "out" / "restored.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *EAGER, src, dest)
    assert r.code == 0, r.err
    got = _read_rgb_levels(dest)
    assert got.shape == (29, 37, 3)

    image = read_image(src).tensor
    expected = _levels(restore(_model(tiny_weights), image[None])[0])
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, _levels(image))  # the model really ran


def test_restore_into_existing_folder_keeps_name(cli, tmp_path, tiny_weights):
    src = write_image(tmp_path / "a.png", _rand(3, 16, 16, seed=2))
    (tmp_path / "out").mkdir()
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, src, tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "a.png").is_file()


def test_restore_folder_mixed_formats_and_a_corrupt_file(cli, tmp_path, tiny_weights):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image(inp / "rgb.png", _rand(3, 20, 24, seed=3))
    write_image(inp / "grey.png", _rand(1, 18, 22, seed=4))
    write_image(inp / "deep.png", _smooth(3, 24, 16, seed=5), bit_depth=16)
    alpha = (np.arange(17 * 19, dtype=np.uint16).reshape(17, 19) % 256).astype(np.uint8)
    write_image(inp / "rgba.png", _rand(3, 17, 19, seed=6), alpha=alpha)
    write_image(inp / "été_写真.png", _rand(3, 16, 16, seed=7))
    (inp / "bad.png").write_bytes(b"definitely not a PNG file \x00\x01\x02" * 8)

    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp, out)
    assert r.code == 1
    assert "bad.png" in r.err and "Traceback" not in r.err
    assert "1 of 6 image(s) could not be restored: bad.png" in r.err
    assert "alpha channel dropped" in r.err  # the reader's warning is passed on as a note

    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["rgb.png", "grey.png", "deep.png", "rgba.png", "été_写真.png"]
    )
    rgb = _unchanged(out / "rgb.png")
    assert rgb.shape == (20, 24, 3) and rgb.dtype == np.uint8
    grey = _unchanged(out / "grey.png")
    assert grey.shape == (18, 22) and grey.dtype == np.uint8
    deep = _unchanged(out / "deep.png")
    assert deep.shape == (24, 16, 3) and deep.dtype == np.uint16
    assert np.any(deep % 257 != 0)  # real 16-bit values, not 8-bit ones scaled up
    rgba = _unchanged(out / "rgba.png")
    assert rgba.shape == (17, 19, 4)
    np.testing.assert_array_equal(rgba[:, :, 3], alpha)
    assert _unchanged(out / "été_写真.png").shape == (16, 16, 3)


def test_restore_tiled(cli, tmp_path, tiny_weights):
    src = write_image(tmp_path / "big.png", _rand(3, 40, 56, seed=8))
    dest = tmp_path / "big_out.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *EAGER,
            "--tile", 16, "--overlap", 4, src, dest)
    assert r.code == 0, r.err
    got = _read_rgb_levels(dest)
    assert got.shape == (40, 56, 3)
    expected = _levels(restore(_model(tiny_weights), read_image(src).tensor[None], tile=16, overlap=4)[0])
    np.testing.assert_array_equal(got, expected)


def test_restore_channels_last_gives_the_same_image(cli, tmp_path, tiny_weights):
    """--inference channels_last lays the weights out NHWC; the restored image is the library's
    NCHW result to float rounding (at most one 8-bit level here)."""
    from slkd.cli.common import load_model

    model = load_model("res-sl-tiny", tiny_weights, torch.device("cpu"), path="channels_last")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    src = write_image(tmp_path / "cl.png", _rand(3, 40, 56, seed=9))
    dest = tmp_path / "cl_out.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, "--inference", "channels_last",
            "--tile", 32, "--overlap", 8, src, dest)
    assert r.code == 0, r.err
    expected = _levels(restore(_model(tiny_weights), read_image(src).tensor[None], tile=32, overlap=8)[0])
    diff = np.abs(_read_rgb_levels(dest).astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.parametrize("tile, overlap", [(20, 4), (16, 16), (0, 0)])
def test_restore_bad_tile_is_a_user_error(cli, tmp_path, tiny_weights, capsys, tile, overlap):
    src = write_image(tmp_path / "a.png", _rand(3, 40, 40, seed=9))
    try:
        r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU,
                "--tile", tile, "--overlap", overlap, src, tmp_path / "o.png")
        code, err = r.code, r.err
    except SystemExit as exc:  # a tile below 8 is refused while parsing
        code, err = exc.code, capsys.readouterr().err
    assert code == 2
    assert "--tile" in err or "--overlap" in err
    assert not (tmp_path / "o.png").exists()


def test_restore_output_is_input_folder(cli, tmp_path, tiny_weights):
    inp = tmp_path / "in"
    write_image(inp / "a.png", _rand(3, 16, 16, seed=10))
    write_image(inp / "b.png", _rand(1, 16, 16, seed=11))
    before = {p.name: p.read_bytes() for p in inp.iterdir()}
    for out in (inp, inp / ".." / "in"):
        r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp, out)
        assert r.code == 2
        assert "overwrite the originals" in r.err
    assert {p.name: p.read_bytes() for p in inp.iterdir()} == before


def test_restore_output_is_input_file(cli, tmp_path, tiny_weights):
    src = write_image(tmp_path / "a.png", _rand(3, 16, 16, seed=12))
    before = src.read_bytes()
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, src, src)
    assert r.code == 2 and "overwritten" in r.err
    assert src.read_bytes() == before


def test_restore_missing_weights_file(cli, tmp_path):
    src = write_image(tmp_path / "a.png", _rand(3, 16, 16, seed=13))
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tmp_path / "nope.pth", *CPU, src, tmp_path / "o.png")
    assert r.code == 2
    assert "not found" in r.err and "nope.pth" in r.err
    assert not (tmp_path / "o.png").exists()


def test_restore_without_weights_option(cli, tmp_path):
    src = write_image(tmp_path / "a.png", _rand(3, 16, 16, seed=14))
    r = cli("restore", "--model", "res-sl-tiny", src, tmp_path / "o.png")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "--weights is required" in r.err and "--onnx" in r.err
    assert not (tmp_path / "o.png").exists()


def test_restore_weights_of_another_preset(cli, tmp_path, teacher_tiny_weights):
    src = write_image(tmp_path / "a.png", _rand(3, 16, 16, seed=15))
    r = cli("restore", "--model", "res-sl-tiny", "--weights", teacher_tiny_weights, *CPU, src, tmp_path / "o.png")
    assert r.code == 2
    assert "other shapes" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "o.png").exists()


def test_restore_biasfree_weights_are_adapted(cli, tmp_path, biasfree_tiny_weights):
    src = write_image(tmp_path / "a.png", _rand(3, 24, 24, seed=16))
    dest = tmp_path / "o.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", biasfree_tiny_weights, *EAGER, src, dest)
    assert r.code == 0, r.err
    assert "LayerNorm_type='BiasFree'" in r.err
    model = _model(biasfree_tiny_weights, LayerNorm_type="BiasFree")
    expected = _levels(restore(model, read_image(src).tensor[None])[0])
    np.testing.assert_array_equal(_read_rgb_levels(dest), expected)


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


@pytest.fixture
def derain_folder(tmp_path) -> Path:
    root = tmp_path / "rain"
    for i in range(3):
        target = _smooth(3, 24, 32, seed=20 + i)
        noisy = (target + 0.1 * (_rand(3, 24, 32, seed=30 + i) - 0.5)).clamp(0, 1)
        write_image(root / "target" / f"{i + 1}.png", target)
        write_image(root / "input" / f"{i + 1}.png", noisy)
    return root


def test_eval_input_baseline_derain_json(cli, derain_folder):
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--json", *CPU)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["count"] == 3 and result["layout"] == "paired:input/target"
    assert result["convention"]["y_channel"] is True and result["sigma"] is None

    psnrs, ssims = [], []
    for i in range(1, 4):
        x = read_image(derain_folder / "input" / f"{i}.png").tensor
        y = read_image(derain_folder / "target" / f"{i}.png").tensor
        psnrs.append(float(psnr(x, y, y_channel=True)))
        ssims.append(float(ssim(x, y, y_channel=True)))
    assert [row["name"] for row in result["images"]] == ["1", "2", "3"]
    assert [row["psnr"] for row in result["images"]] == pytest.approx(psnrs, abs=1e-9)
    assert result["mean"]["psnr"] == pytest.approx(sum(psnrs) / 3, abs=1e-9)
    assert result["mean"]["ssim"] == pytest.approx(sum(ssims) / 3, abs=1e-9)
    # the RGB convention gives another number: the Y switch is really applied
    rgb = [float(psnr(read_image(derain_folder / "input" / f"{i}.png").tensor,
                      read_image(derain_folder / "target" / f"{i}.png").tensor)) for i in range(1, 4)]
    assert abs(sum(rgb) / 3 - result["mean"]["psnr"]) > 0.01


def test_eval_rgb_flag_overrides_task(cli, derain_folder):
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--rgb", "--json", *CPU)
    result = json.loads(r.out)
    assert result["convention"]["y_channel"] is False
    x = read_image(derain_folder / "input" / "1.png").tensor
    y = read_image(derain_folder / "target" / "1.png").tensor
    assert result["images"][0]["psnr"] == pytest.approx(float(psnr(x, y)), abs=1e-9)


def test_eval_text_output(cli, derain_folder):
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", *CPU)
    assert r.code == 0
    assert len(r.out.splitlines()) == 1 and "PSNR" in r.out and "dB" in r.out
    assert "[3/3]" in r.err


def test_eval_denoise_clean_only_with_model(cli, tmp_path, tiny_weights, monkeypatch):
    root = tmp_path / "clean"
    for name, seed in (("a", 40), ("b", 41)):
        write_image(root / f"{name}.png", _smooth(3, 24, 32, seed=seed))
    save = tmp_path / "saved"
    r = cli("eval", "--model", "res-sl-tiny", "--weights", tiny_weights, "--data", root,
            "--task", "denoise", "--sigma", 25, "--save", save, "--json", "--inference", "eager", *CPU)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["count"] == 2 and result["layout"] == "clean-only"
    assert result["sigma"] == 25.0 and result["model"] == "res-sl-tiny"
    assert result["convention"]["y_channel"] is False
    assert "RGB" in result["convention"]["description"]
    assert [row["name"] for row in result["images"]] == ["a", "b"]
    assert sorted(p.name for p in save.iterdir()) == ["a.png", "b.png"]

    model = _model(tiny_weights)
    for row in result["images"]:
        clean = read_image(root / f"{row['name']}.png").tensor
        out = restore(model, add_test_noise(clean, 25.0, seed=0)[None])[0]
        assert row["psnr"] == pytest.approx(float(psnr(out, clean)), abs=1e-9)
        assert row["ssim"] == pytest.approx(float(ssim(out, clean)), abs=1e-9)
    # every other way to run the network (auto: the fastest on the device): the same scores to
    # float rounding; compiled traced by Dynamo alone (Inductor's code generation takes minutes)
    monkeypatch.setenv("SLKD_COMPILE_BACKEND", "eager")
    for path in ("auto", "channels_last", "compiled"):
        r = cli("eval", "--model", "res-sl-tiny", "--weights", tiny_weights, "--data", root,
                "--task", "denoise", "--sigma", 25, "--json", "--inference", path, *CPU)
        assert r.code == 0, r.err
        for row, other in zip(result["images"], json.loads(r.out)["images"]):
            assert other["psnr"] == pytest.approx(row["psnr"], abs=1e-3)


def test_eval_denoise_input_uses_seeded_noise(cli, tmp_path):
    root = tmp_path / "clean"
    write_image(root / "a.png", _smooth(3, 24, 32, seed=42))
    r = cli("eval", "--model", "input", "--data", root, "--task", "denoise", "--sigma", 15,
            "--noise-seed", 3, "--json", *CPU)
    row = json.loads(r.out)["images"][0]
    clean = read_image(root / "a.png").tensor
    expected = float(psnr(add_test_noise(clean, 15.0, seed=3).clamp(0, 1), clean))
    assert row["psnr"] == pytest.approx(expected, abs=1e-9)


def test_eval_deblur_on_clean_only_needs_pairs(cli, tmp_path):
    write_image(tmp_path / "a.png", _smooth(3, 24, 32, seed=43))
    r = cli("eval", "--model", "input", "--data", tmp_path, "--task", "deblur", *CPU)
    assert r.code == 2
    assert "needs degraded/clean pairs" in r.err and "--task denoise" in r.err
    assert r.out == ""


def test_eval_size_mismatch_names_files(cli, tmp_path):
    write_image(tmp_path / "input" / "x1.png", _rand(3, 24, 32, seed=44))
    write_image(tmp_path / "target" / "x1.png", _rand(3, 24, 30, seed=45))
    r = cli("eval", "--model", "input", "--data", tmp_path, "--task", "derain", *CPU)
    assert r.code == 2
    assert "x1.png is 32×24" in r.err and "x1.png is 30×24" in r.err


def test_eval_model_without_weights(cli, derain_folder):
    r = cli("eval", "--model", "res-sl-tiny", "--data", derain_folder, "--task", "derain", *CPU)
    assert r.code == 2
    assert "--weights is required" in r.err


def test_eval_degraded_only_folder(cli, tmp_path):
    write_image(tmp_path / "input" / "r.png", _rand(3, 24, 32, seed=46))
    r = cli("eval", "--model", "input", "--data", tmp_path, "--task", "derain", *CPU)
    assert r.code == 2 and "without ground truth" in r.err


def test_eval_real_without_ground_truth_scores_inputs_and_outputs(cli, tmp_path, tiny_weights):
    for i in range(2):
        write_image(tmp_path / "real" / f"r{i}.png", _smooth(3, 48, 64, seed=50 + i))
    r = cli("eval", "--model", "res-sl-tiny", "--weights", tiny_weights, "--data", tmp_path / "real",
            "--task", "real", "--json", "--save", tmp_path / "out", *CPU)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["layout"] == "no-reference" and result["metrics"] == ["brisque", "piqe"]
    first = result["images"][0]
    image = read_image(tmp_path / "real" / "r0.png").tensor
    assert first["input"]["brisque"] == pytest.approx(float(brisque(image)))
    assert first["input"]["piqe"] == pytest.approx(float(piqe(image)))
    restored = restore(_model(tiny_weights), image[None])
    assert first["output"]["piqe"] == pytest.approx(float(piqe(restored)), abs=1e-6)
    assert result["mean"]["output"]["brisque"] == pytest.approx(
        sum(row["output"]["brisque"] for row in result["images"]) / 2)
    assert (tmp_path / "out" / "r1.png").is_file()
    # the degraded-only layout (input/ alone) is scored the same way under --task real
    r = cli("eval", "--model", "input", "--data", tmp_path, "--task", "real", *CPU)
    assert r.code == 2  # tmp_path has no images of its own and no known layout
    write_image(tmp_path / "only" / "input" / "a.png", image)
    r = cli("eval", "--model", "input", "--data", tmp_path / "only", "--task", "real", "--json", *CPU)
    assert r.code == 0 and set(json.loads(r.out)["mean"]) == {"input"}


@pytest.mark.parametrize("limit", [0, -1])
def test_eval_bad_limit(cli, derain_folder, capsys, limit):
    with pytest.raises(SystemExit) as exc:  # refused while parsing
        cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--limit", limit, *CPU)
    assert exc.value.code == 2 and "argument --limit: must be >= 1" in capsys.readouterr().err


def test_eval_limit(cli, derain_folder):
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--limit", 2, "--json", *CPU)
    assert [row["name"] for row in json.loads(r.out)["images"]] == ["1", "2"]


# --------------------------------------------------------------------------------------------
# docs/reliability.md §8: numbers, devices, what eval and restore may write, odd inputs
# --------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _argparse_error(cli, capsys, *argv) -> str:
    """The one ``error:`` line of a refused command line (argparse exits with 2)."""
    with pytest.raises(SystemExit) as exc:
        cli(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


EVAL = ("eval", "--model", "input", "--data", "nowhere", "--task", "denoise")
RESTORE = ("restore", "--model", "res-sl-tiny", "--weights", "w.pth", "a.png", "b.png")
DEMO = ("demo", "--quick")
PROFILE = ("profile", "--model", "res-sl-tiny")


@pytest.mark.parametrize("argv, option, fragment", [
    (EVAL + ("--sigma", "nan"), "--sigma", "finite"),
    (EVAL + ("--sigma", "inf"), "--sigma", "finite"),
    (EVAL + ("--sigma", "-5"), "--sigma", ">= 0"),
    (EVAL + ("--sigma", "300"), "--sigma", "<= 255"),
    (EVAL + ("--sigma", "x"), "--sigma", "a number"),
    (EVAL + ("--noise-seed", "-1"), "--noise-seed", ">= 0"),
    (EVAL + ("--noise-seed", str(2**32)), "--noise-seed", "<= 4294967295"),
    (EVAL + ("--noise-seed", "1.5"), "--noise-seed", "an integer"),
    (EVAL + ("--crop-border", "-1"), "--crop-border", ">= 0"),
    (EVAL + ("--limit", "0"), "--limit", ">= 1"),
    (EVAL + ("--tile", "-8"), "--tile", ">= 8"),
    (RESTORE + ("--tile", "0"), "--tile", ">= 8"),
    (RESTORE + ("--overlap", "-1"), "--overlap", ">= 0"),
    (DEMO + ("--iters-scale", "nan"), "--iters-scale", "finite"),
    (DEMO + ("--iters-scale", "inf"), "--iters-scale", "finite"),
    (DEMO + ("--iters-scale", "0"), "--iters-scale", "> 0"),
    (DEMO + ("--eval-images", "0"), "--eval-images", ">= 1"),
    (DEMO + ("--seed", "-1"), "--seed", ">= 0"),
    (PROFILE + ("--runs", "0"), "--runs", ">= 1"),
    (PROFILE + ("--warmup", "-1"), "--warmup", ">= 0"),
    (PROFILE + ("--threads", "0"), "--threads", ">= 1"),
    (PROFILE + ("--threads", "100000"), "--threads", "<= "),  # 100000 OpenMP threads segfaulted
    (PROFILE + ("--runs", "100000000"), "--runs", "<= 10000"),
    (PROFILE + ("--size", "0", "32"), "--size", ">= 8"),
    (("export", "--model", "res-sl-tiny", "--onnx", "o.onnx", "--opset", "99"), "--opset", "<= 20"),
])
def test_numeric_options_refuse_non_finite_and_out_of_range_values(cli, capsys, monkeypatch, tmp_path,
                                                                   argv, option, fragment):
    """Every numeric option goes through one parser: finite, in range, or one clear line
    (docs/reliability.md §8, items 6 and 9: --sigma nan printed NaN dB, --sigma -5 and --noise-seed -1 and
    --iters-scale nan ended in tracebacks)."""
    monkeypatch.chdir(tmp_path)  # a command that ran anyway would write here, not in the checkout
    line = _argparse_error(cli, capsys, *argv)
    assert f"argument {option}" in line and fragment in line, line


@pytest.mark.parametrize("command", [RESTORE, EVAL, PROFILE, DEMO,
                                     ("train", "--config", "c.yaml"), ("distill", "--config", "c.yaml")])
@pytest.mark.parametrize("device", ["mps", "tpu", "cuda:x", "gpu"])
def test_unknown_devices_are_refused_in_one_line(cli, capsys, monkeypatch, tmp_path, command, device):
    """--device mps passed torch.device() and failed in the model's .to() with a traceback; under
    `slkd train` it quietly ran on the CPU (docs/reliability.md §8, item 9)."""
    monkeypatch.chdir(tmp_path)
    line = _argparse_error(cli, capsys, *command, "--device", device)
    assert "argument --device" in line and repr(device) in line and "cpu" in line


def test_eval_save_never_writes_into_the_benchmark(cli, derain_folder, tmp_path):
    """--save DIR used to overwrite the benchmark's own images when DIR was the data folder or
    one of its sub-folders (docs/reliability.md §8, item 1)."""
    before = _snapshot(derain_folder)
    for save in (derain_folder, derain_folder / "target", derain_folder / "input",
                 derain_folder / "input" / ".." / "target", derain_folder / "new"):
        r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--save", save, *CPU)
        assert r.code == 2, (save, r.err)
        assert "--save" in r.err and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    assert _snapshot(derain_folder) == before
    # through a link to the target folder too
    link = tmp_path / "link"
    link.symlink_to(derain_folder / "target")
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--save", link, *CPU)
    assert r.code == 2 and _snapshot(derain_folder) == before
    # elsewhere: written; a second run refuses to overwrite without --overwrite
    save = tmp_path / "saved"
    assert cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--save", save, *CPU).code == 0
    assert sorted(p.name for p in save.iterdir()) == ["1.png", "2.png", "3.png"]
    (save / "1.png").write_bytes(b"mine")
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--save", save, *CPU)
    assert r.code == 2 and "1.png" in r.err and "--overwrite" in r.err
    assert (save / "1.png").read_bytes() == b"mine"
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--save", save,
            "--overwrite", *CPU)
    assert r.code == 0 and (save / "1.png").read_bytes() != b"mine"


def test_eval_save_refuses_two_images_of_one_name(cli, tmp_path):
    """a.png and a.jpg would both be saved as a.png, the second replacing the first."""
    write_image(tmp_path / "clean" / "a.png", _smooth(3, 24, 32, seed=60))
    write_image(tmp_path / "clean" / "a.jpg", _smooth(3, 24, 32, seed=61))
    r = cli("eval", "--model", "input", "--data", tmp_path / "clean", "--task", "denoise",
            "--save", tmp_path / "out", *CPU)
    assert r.code == 2 and "a.jpg" in r.err and "a.png" in r.err
    assert not (tmp_path / "out").exists()


def test_eval_noise_options_on_paired_data_are_an_error(cli, derain_folder):
    """--sigma was ignored silently on a paired folder (docs/reliability.md §8, item 10)."""
    for option in (("--sigma", "50"), ("--noise-seed", "3")):
        r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", *option, *CPU)
        assert r.code == 2 and option[0] in r.err and "paired" in r.err and "Traceback" not in r.err
        assert r.out == ""
    assert cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", *CPU).code == 0


def test_restore_refuses_to_overwrite_existing_outputs(cli, tmp_path, tiny_weights):
    """Existing outputs were replaced silently (docs/reliability.md §8, item 10)."""
    src = write_image(tmp_path / "a.png", _rand(3, 16, 16, seed=70))
    dest = tmp_path / "o.png"
    dest.write_bytes(b"precious")
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, src, dest)
    assert r.code == 2 and "o.png" in r.err and "--overwrite" in r.err and "Traceback" not in r.err
    assert dest.read_bytes() == b"precious"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, "--overwrite", src, dest)
    assert r.code == 0 and read_image(dest).tensor.shape == (3, 16, 16)

    inp, out = tmp_path / "in", tmp_path / "out"
    for name, seed in (("x.png", 71), ("y.png", 72), ("z.png", 73)):
        write_image(inp / name, _rand(3, 16, 16, seed=seed))
    out.mkdir()
    (out / "y.png").write_bytes(b"precious")
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp, out)
    assert r.code == 2 and "y.png" in r.err and "1 of the 3" in r.err
    assert sorted(p.name for p in out.iterdir()) == ["y.png"]  # nothing written
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, "--overwrite", inp, out)
    assert r.code == 0 and sorted(p.name for p in out.iterdir()) == ["x.png", "y.png", "z.png"]
    assert (out / "y.png").read_bytes() != b"precious"


def _png_grey_alpha(path: Path, grey: np.ndarray, alpha: np.ndarray) -> None:
    """A grey+alpha PNG (colour type 4) written by hand, 8 or 16 bits per sample."""
    import struct
    import zlib

    depth = 16 if grey.dtype == np.uint16 else 8
    h, w = grey.shape
    pixels = np.stack([grey, alpha], axis=-1).astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_restore_grey_alpha_comes_back_grey_alpha(cli, tmp_path, tiny_weights, dtype):
    """A grey+alpha PNG came back as a coloured RGBA image (docs/reliability.md §8, item 10)."""
    from PIL import Image

    top = np.iinfo(dtype).max
    rng = np.random.default_rng(5)
    grey = (rng.random((18, 21)) * top).astype(dtype)
    alpha = (np.arange(18 * 21).reshape(18, 21) * 97 % (int(top) + 1)).astype(dtype)
    src = tmp_path / "la.png"
    _png_grey_alpha(src, grey, alpha)
    if dtype == np.uint8:  # an independent decoder reads the 8-bit file as grey + alpha
        with Image.open(src) as im:
            assert im.mode == "LA"
            np.testing.assert_array_equal(np.asarray(im)[:, :, 1], alpha)
    dest = tmp_path / "out" / "la.png"
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, src, dest)
    assert r.code == 0, r.err
    data = dest.read_bytes()
    assert data[25] == 4 and data[24] == (16 if dtype == np.uint16 else 8)  # IHDR: grey+alpha
    back = _unchanged(dest)  # OpenCV expands grey+alpha to BGRA
    assert back.dtype == dtype
    np.testing.assert_array_equal(back[:, :, 3], alpha)
    assert np.array_equal(back[:, :, 0], back[:, :, 1]) and np.array_equal(back[:, :, 1], back[:, :, 2])
    # the grey values are what the library gives for the grey image
    expected = restore(_model(tiny_weights), torch.from_numpy(grey.astype(np.float32) / top)[None, None])[0, 0]
    expected = (expected.clamp(0, 1) * top).round().numpy().astype(dtype)
    assert np.abs(back[:, :, 0].astype(np.int64) - expected.astype(np.int64)).max() <= 1


def test_restore_refuses_gif_files_by_name(cli, tmp_path, tiny_weights):
    """Animated GIFs were skipped silently in a folder and lost their frames as a single file
    (docs/reliability.md §8, item 10): each is now named and refused."""
    from PIL import Image

    inp = tmp_path / "in"
    write_image(inp / "a.png", _rand(3, 16, 16, seed=80))
    frames = [Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8))
              for i in range(3)]
    frames[0].save(inp / "anim.gif", save_all=True, append_images=frames[1:])
    (inp / "disguised.png").write_bytes((inp / "anim.gif").read_bytes())
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp, tmp_path / "out")
    assert r.code == 1 and "Traceback" not in r.err
    assert "skipped anim.gif:" in r.err and "skipped disguised.png:" in r.err and "GIF" in r.err
    assert "2 of 3 image(s) could not be restored" in r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp / "anim.gif",
            tmp_path / "one.png")
    assert r.code == 1 and "anim.gif" in r.err and "frame" in r.err
    assert not (tmp_path / "one.png").exists()


def test_restore_names_dangling_links(cli, tmp_path, tiny_weights):
    """A link whose target is gone was skipped without a word (docs/reliability.md §8, item 10)."""
    inp = tmp_path / "in"
    write_image(inp / "a.png", _rand(3, 16, 16, seed=81))
    (inp / "gone.png").symlink_to(tmp_path / "deleted.png")
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp, tmp_path / "out")
    assert r.code == 1 and "skipped gone.png:" in r.err and "link" in r.err and "deleted.png" in r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_an_os_error_no_command_put_into_words_is_still_one_line(cli, monkeypatch):
    """The last safety net of the command line: a full disk or a read-only folder anywhere
    prints one line naming the file, never a traceback (docs/reliability.md §8, item 9)."""
    import errno

    import slkd.cli.profile as profile_cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/report.json")

    monkeypatch.setattr(profile_cli, "profile", full)
    r = cli("profile", "--model", "res-sl-tiny", "--no-latency")
    assert r.code == 2 and "Traceback" not in r.err
    assert r.err.strip() == "slkd profile: error: No space left on device: /somewhere/report.json"


def test_a_cuda_index_the_machine_lacks_is_named(monkeypatch):
    """cuda:N passes the option parser; an N beyond the machine's GPUs is a clear error, not a
    CUDA traceback at the first tensor."""
    from slkd.cli.common import resolve_device
    from slkd.errors import SlkdError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SlkdError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")
    with pytest.raises(SlkdError, match="unknown device 'mps'"):
        resolve_device("mps")


def test_tiling_options_without_tile_are_an_error(cli, derain_folder, tmp_path, tiny_weights):
    """`eval --overlap 8` without --tile was ignored silently (so was --blend), in eval and restore."""
    for option in (("--overlap", "8"), ("--blend", "gaussian")):
        r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", *option, *CPU)
        assert r.code == 2 and r.err.strip() == (f"slkd eval: error: {option[0]} applies to tiles only: give "
                                                 "--tile N too (without it every image is processed whole)")
        r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *option, *CPU,
                derain_folder / "input", tmp_path / "out")
        assert r.code == 2 and option[0] in r.err and "--tile" in r.err and not (tmp_path / "out").exists()
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain", "--tile", "16",
            "--overlap", "8", "--blend", "gaussian", "--json", *CPU)
    assert r.code == 0, r.err


def test_an_output_under_a_file_is_refused_before_anything_runs(cli, derain_folder, tmp_path, tiny_weights):
    """`--out file.pth/sub` failed only at the first write, after the work had started."""
    blocking = tmp_path / "file.pth"
    blocking.write_bytes(b"weights")
    r = cli("eval", "--model", "input", "--data", derain_folder, "--task", "derain",
            "--save", blocking / "sub", *CPU)
    assert r.code == 2 and r.err.strip() == (f"slkd eval: error: --save {blocking}/sub is under {blocking}, "
                                             "which is a file; give a folder")
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, derain_folder / "input",
            blocking / "sub")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and f"under {blocking}, which is a file" in r.err
    assert blocking.read_bytes() == b"weights"


def test_restore_names_a_symlink_loop_as_such(cli, tmp_path, tiny_weights):
    """A loop of links was reported as "a dangling link"."""
    inp = tmp_path / "in"
    write_image(inp / "a.png", _rand(3, 16, 16, seed=82))
    (inp / "loop.png").symlink_to(inp / "back.png")
    (inp / "back.png").symlink_to(inp / "loop.png")
    r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *CPU, inp, tmp_path / "out")
    assert r.code == 1 and "skipped loop.png:" in r.err and "symlink loop" in r.err
    assert "dangling" not in r.err


def test_a_corrupt_png_is_one_line_without_the_decoders_own(capfd, tmp_path, tiny_weights):
    """libpng printed "libpng error: IDAT: incorrect data check" (and OpenCV a warning) straight
    to stderr, before the one line naming the file."""
    import zlib

    from slkd.cli.main import main

    write_image(tmp_path / "ok.png", _rand(3, 16, 16, seed=83))
    data = bytearray((tmp_path / "ok.png").read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 2:start + 12] = b"x" * 10  # inside the compressed pixels, the chunk's CRC fixed
    length = int.from_bytes(data[start - 8:start - 4], "big")
    data[start + length:start + length + 4] = zlib.crc32(bytes(data[start - 4:start + length])).to_bytes(4, "big")
    (tmp_path / "bad.png").write_bytes(bytes(data))
    capfd.readouterr()
    code = main(["restore", "--model", "res-sl-tiny", "--weights", str(tiny_weights), *CPU,
                 str(tmp_path / "bad.png"), str(tmp_path / "out.png")])
    err = capfd.readouterr().err  # what reached the process's stderr, the decoders' lines included
    assert code == 1 and "bad.png" in err
    assert "libpng" not in err and "WARN" not in err, err
