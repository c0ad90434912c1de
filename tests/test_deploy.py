"""Deployment: ONNX files scored and applied by ``slkd eval/restore --onnx`` through the PyTorch
model's code path, INT8 export (ONNX Runtime's static quantisation) with its hold-out check,
the hardware-shaped student preset, ``slkd compress --deploy int8`` and ``benchmarks.edge --quick``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from slkd.cli.main import main  # noqa: E402
from slkd.data.image_io import read_image, write_image  # noqa: E402
from slkd.errors import SlkdError  # noqa: E402
from slkd.models import build_model, count_macs, count_parameters, default_student, save_weights  # noqa: E402
from slkd.models.onnx_model import OnnxModel  # noqa: E402
from slkd.models.slicing import init_from_teacher, slice_plan  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
#: a committed denoising student (res-sl-tiny, CBSD432 σ 25): a trained network loses a little in INT8
TRAINED = ROOT / "benchmarks" / "weights" / "denoise25" / "students" / "fakd_img-init_s0.safetensors"


def _blocks(rng, h: int, w: int) -> torch.Tensor:
    cells = 0.7 * np.kron(rng.random((3, h // 8 + 1, w // 8 + 1)), np.ones((1, 8, 8)))[:, :h, :w]
    return torch.from_numpy(cells + 0.3 * rng.random((3, h, w))).float()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """clean/ (4 RGB images of odd sizes, not multiples of 8) and pairs/ (input/+target/)."""
    root = tmp_path_factory.mktemp("deploy-data")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(36, 44), (40, 52), (48, 40), (44, 36)]):
        clean = _blocks(rng, h, w)
        write_image(root / "clean" / f"im{i}.png", clean)
        write_image(root / "pairs" / "target" / f"im{i}.png", clean)
        write_image(root / "pairs" / "input" / f"im{i}.png", (clean + 0.1 * torch.rand_like(clean)).clamp(0, 1))
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_weights) -> Path:
    path = tmp_path_factory.mktemp("deploy-onnx") / "tiny.onnx"
    assert main(["export", "--model", "res-sl-tiny", "--weights", str(tiny_weights), "--onnx", str(path)]) == 0
    return path


def _eval(cli, *argv) -> dict:
    result = cli("eval", *argv, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# ------------------------------------------------------------------ eval and restore --onnx


@pytest.mark.parametrize("tiling", [(), ("--tile", "16", "--overlap", "4")], ids=["whole", "tiled"])
@pytest.mark.parametrize("data, task", [("clean", "denoise"), ("pairs", "derain")])
def test_eval_onnx_scores_line_for_line_as_the_pytorch_model(cli, images, exported, tiny_weights, tiling,
                                                             data, task):
    common = ["--data", images / data, "--task", task, *tiling]
    torch_scores = _eval(cli, "--model", "res-sl-tiny", "--weights", tiny_weights, *common)
    onnx_scores = _eval(cli, "--onnx", exported, *common)
    assert onnx_scores["onnx"] == str(exported) and "res-sl-tiny" in onnx_scores["model"]
    assert onnx_scores["convention"] == torch_scores["convention"]
    assert [r["name"] for r in onnx_scores["images"]] == [r["name"] for r in torch_scores["images"]]
    for got, want in zip(onnx_scores["images"], torch_scores["images"]):
        # the same uint8-rounded outputs up to a rare rounding flip of a float-rounding difference
        assert got["psnr"] == pytest.approx(want["psnr"], abs=0.01)
        assert got["ssim"] == pytest.approx(want["ssim"], abs=1e-4)


def test_restore_onnx_writes_the_pytorch_models_image(cli, images, exported, tiny_weights, tmp_path):
    src = images / "clean" / "im0.png"
    assert cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, src, tmp_path / "a.png").code == 0
    done = cli("restore", "--onnx", exported, src, tmp_path / "b.png")
    assert done.code == 0, done.err
    a, b = read_image(tmp_path / "a.png").tensor, read_image(tmp_path / "b.png").tensor
    assert a.shape == b.shape == read_image(src).tensor.shape
    assert (a - b).abs().max() <= 1 / 255 + 1e-6


def test_a_grey_image_through_an_rgb_graph_stays_grey(exported):
    model = OnnxModel(exported)
    from slkd.engine.inference import restore

    out = restore(model, torch.rand(1, 1, 20, 28))
    assert out.shape == (1, 1, 20, 28) and 0 <= out.min() and out.max() <= 1


def _graph(path: Path, inp_shape, out_shape, op: str = "Identity", metadata=None, **attrs) -> Path:
    helper = onnx.helper
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, inp_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


BAD_FILES = {
    "not-onnx": (lambda p: (p.write_text("not a network\n"), p)[1], "is not an ONNX file"),
    "missing": (lambda p: p, "ONNX file not found"),
    "rank-2": (lambda p: _graph(p, ["N", 3], ["N", 3]), "has rank 2"),
    "four-channels": (lambda p: _graph(p, ["N", 4, "H", "W"], ["N", 4, "H", "W"]), "has 4 channels"),
    "fixed-size": (lambda p: _graph(p, [1, 3, 64, 64], [1, 3, 64, 64]), "fixed height or width"),
    "halves-the-image": (lambda p: _graph(p, ["N", 3, "H", "W"], ["N", 3, "h", "w"], "MaxPool",
                                          kernel_shape=[2, 2], strides=[2, 2]),
                         "not a restoration network"),
    "metadata-mismatch": (lambda p: _graph(p, ["N", 3, "H", "W"], ["N", 3, "H", "W"],
                                           metadata={"slkd.inp_channels": "1", "slkd.size_multiple": "8"}),
                          "slkd.inp_channels says 1 but the graph has 3"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("command", ["eval", "restore"])
def test_onnx_files_that_are_not_restoration_networks_are_refused_in_one_line(cli, images, tmp_path, case,
                                                                                command):
    make, fragment = BAD_FILES[case]
    path = make(tmp_path / f"{case}.onnx")
    if command == "eval":
        result = cli("eval", "--onnx", path, "--data", images / "clean", "--task", "denoise")
    else:
        result = cli("restore", "--onnx", path, images / "clean" / "im0.png", tmp_path / "out.png")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.err
    assert fragment in lines[0] and str(path) in lines[0], lines[0]
    assert not (tmp_path / "out.png").exists()


def test_an_identity_graph_from_elsewhere_runs_and_gets_a_probed_multiple(tmp_path, images, cli):
    path = _graph(tmp_path / "identity.onnx", ["N", 3, "H", "W"], ["N", 3, "H", "W"])
    assert OnnxModel(path).size_multiple == 1
    scores = _eval(cli, "--onnx", path, "--data", images / "pairs", "--task", "derain")
    inputs = _eval(cli, "--model", "input", "--data", images / "pairs", "--task", "derain")
    assert scores["mean"]["psnr"] == pytest.approx(inputs["mean"]["psnr"], abs=1e-9)


@pytest.mark.parametrize("argv, fragment", [
    (["--onnx", "X", "--model", "res-sl-tiny"], "leave --model out"),
    (["--onnx", "X", "--weights", "w.pth"], "leave --weights out"),
    (["--onnx", "X", "--inference", "channels_last"], "--inference channels_last"),
    (["--onnx", "X", "--device", "cuda"], "CPU provider"),
    ([], "give --model NAME"),
])
def test_onnx_with_options_of_a_pytorch_model_is_refused(cli, images, argv, fragment):
    result = cli("eval", *argv, "--data", images / "clean", "--task", "denoise")
    assert result.code == 2 and fragment in result.err and len(result.err.strip().splitlines()) == 1


# ------------------------------------------------------------------ INT8 export


def test_int8_export_of_a_tiny_student_is_scored_by_eval(cli, images, tiny_weights, tmp_path):
    out = tmp_path / "tiny.int8.onnx"
    done = cli("export", "--model", "res-sl-tiny", "--weights", tiny_weights, "--onnx", out, "--int8",
               "--calib", images / "clean", "--calib-sigma", 25, "--calib-crops", 4, "--calib-patch", 32,
               "--max-drop", 5, "--check")
    assert done.code == 0, done.err
    assert "checked INT8 1×3×32×40" in done.out and "checked INT8 2×3×24×56" in done.out
    assert "hold-out PSNR" in done.out
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["slkd.precision"] == "int8" and meta["slkd.size_multiple"] == "8"
    assert "QDQ, per-channel int8 weights" in meta["slkd.quantization"]
    # per-channel: the weight scales of a convolution are vectors
    scales = {i.name: i for i in proto.graph.initializer}
    conv_scale = next(n.input[1] for n in proto.graph.node if n.op_type == "DequantizeLinear"
                      and "attn.qkv.weight" in n.input[0])
    assert len(onnx.numpy_helper.to_array(scales[conv_scale]).shape) == 1
    int8 = _eval(cli, "--onnx", out, "--data", images / "clean", "--task", "denoise")
    pytorch = _eval(cli, "--model", "res-sl-tiny", "--weights", tiny_weights, "--data", images / "clean",
                    "--task", "denoise")
    assert int8["count"] == 4 and np.isfinite(int8["mean"]["psnr"])
    assert abs(int8["mean"]["psnr"] - pytorch["mean"]["psnr"]) < 1.0


@pytest.mark.skipif(not TRAINED.is_file(), reason="committed study weights not present")
def test_an_int8_export_that_loses_more_than_the_threshold_is_not_written(cli, images, tmp_path):
    out = tmp_path / "trained.int8.onnx"
    argv = ["export", "--model", "res-sl-tiny", "--weights", TRAINED, "--onnx", out, "--int8",
            "--calib", images / "clean", "--calib-sigma", 25, "--calib-crops", 4, "--calib-patch", 32,
            "--keep-float", "output"]
    refused = cli(*argv, "--max-drop", 0)
    lines = refused.err.strip().splitlines()
    assert refused.code == 2 and lines[-1].startswith("slkd export: error: not written: on 8 hold-out crops"), refused.err
    assert "more than the 0 dB allowed" in lines[-1]
    assert not out.exists() and not list(tmp_path.iterdir())
    assert cli(*argv, "--max-drop", 10).code == 0 and out.is_file()


def test_without_ground_truth_the_float_output_is_the_reference(cli, images, tiny_weights, tmp_path):
    out = tmp_path / "ref.int8.onnx"
    done = cli("export", "--model", "res-sl-tiny", "--weights", tiny_weights, "--onnx", out, "--int8",
               "--calib", images / "clean", "--calib-crops", 4, "--calib-patch", 32)
    assert done.code == 0, done.err
    assert "PSNR from the float output" in done.out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "reference float output" in meta["slkd.holdout"] and "float " not in meta["slkd.holdout"].split(":")[1]


@pytest.mark.parametrize("argv, fragment", [
    (["--calib", "."], "--calib applies to the INT8 export only: add --int8"),
    (["--int8"], "--int8 needs --calib DIR"),
    (["--int8", "--calib", "no/such/folder"], "--calib no/such/folder: folder not found"),
])
def test_int8_options_are_checked_before_any_work(cli, tmp_path, argv, fragment):
    result = cli("export", "--model", "res-sl-tiny", "--onnx", tmp_path / "x.onnx", *argv)
    assert result.code == 2 and fragment in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_holds_out_other_images_and_adds_seeded_noise(images):
    from slkd.models.quantize import calibration_set

    a = calibration_set(images / "clean", sigma=25, crops=6, patch=32, holdout=2)
    b = calibration_set(images / "clean", sigma=25, crops=6, patch=32, holdout=2)
    assert len(a.inputs) == 6 and len(a.holdout) == 2 and a.has_targets
    assert "from 3 of the 4 images" in a.described and "1 other image(s)" in a.described
    assert all(np.array_equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert all(x.shape == (1, 3, 32, 32) for x in a.inputs)
    assert not np.allclose(a.holdout[0], a.holdout_targets[0])  # noisy input, clean target
    paired = calibration_set(images / "pairs", crops=3, patch=24, holdout=1)
    assert paired.has_targets and "input/target pairs" in paired.described
    with pytest.raises(SlkdError, match="noise .* is for folders of clean images"):
        calibration_set(images / "pairs", sigma=25)


# ------------------------------------------------------------------ hardware-shaped student


def test_the_hardware_shaped_student_has_multiples_of_16_and_no_more_macs():
    hw, paper, teacher = build_model("res-sl-hw"), build_model("res-sl"), build_model("restormer")
    for name, module in hw.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            for side, count in (("in", module.in_channels), ("out", module.out_channels)):
                image_side = (name == "patch_embed.proj" and side == "in") or (name == "output" and side == "out")
                assert image_side or count % 16 == 0, (name, side, count)
    for block in (m for m in hw.modules() if type(m).__name__ == "FeedForward"):
        hidden = block.project_out.in_channels  # int(dim × ffn_expansion_factor)
        assert hidden % 16 == 0 and block.project_in.out_channels == 2 * hidden
    size = (1, 3, 64, 64)
    assert count_macs(hw, size).total <= count_macs(paper, size).total
    assert count_parameters(hw) <= 0.2 * count_parameters(teacher)
    assert count_macs(hw, size).total <= 0.2 * count_macs(teacher, size).total
    assert default_student("restormer") == "res-sl"  # offered, not imposed


def test_the_hardware_shaped_student_is_cut_from_its_teacher():
    torch.manual_seed(0)
    teacher, student = build_model("restormer"), build_model("res-sl-hw")
    assert slice_plan(student, teacher)
    counts = init_from_teacher(student, teacher)
    assert counts["cut"] > 0
    t, s = teacher.state_dict(), student.state_dict()
    # the gated feed-forward keeps the first channels of each of its two halves
    key = "encoder_level1.0.ffn.project_in.weight"
    half_t, half_s = t[key].shape[0] // 2, s[key].shape[0] // 2
    assert torch.equal(s[key][:half_s], t[key][:half_s, :32])
    assert torch.equal(s[key][half_s:], t[key][half_t:half_t + half_s, :32])


def test_profile_compares_the_hardware_shaped_student_with_the_papers(cli):
    result = cli("profile", "--compare", "res-sl", "res-sl-hw", "--size", 64, 64, "--no-latency", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert set(report["models"]) == {"res-sl", "res-sl-hw"}
    assert report["comparison"]["macs_reduction"] >= 0


# ------------------------------------------------------------------ compress --deploy int8


def test_compress_deploy_int8_writes_and_reports_the_int8_file(cli, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            clean = _blocks(rng, 32, 40)
            write_image(data / split / "target" / f"{i}.png", clean)
            write_image(data / split / "input" / f"{i}.png", (clean + 0.2 * torch.rand_like(clean)).clamp(0, 1))
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), tmp_path / "teacher.pth")
    out = tmp_path / "out"
    result = cli("compress", "--teacher", f"restormer-tiny:{tmp_path / 'teacher.pth'}", "--task", "derain",
                 "--train", data / "train", "--val", data / "val", "--out", out, "--quick", "--iters", "2",
                 "--patch", "16", "--batch", "2", "--method", "fitnet", "--deploy", "int8")
    assert result.code == 0, result.err
    summary = json.loads((out / "summary.json").read_text())
    files = summary["files"]
    assert files["int8"] == str(out / "student.int8.onnx") and (out / "student.onnx").is_file()
    assert files["int8_holdout"]["reference"] == "ground truth"
    models = summary["models"]
    assert {"student_onnx", "student_int8"} <= set(models)
    for name in ("student_onnx", "student_int8"):
        assert models[name]["latency_ms_256"] > 0 and np.isfinite(models[name]["psnr"])
        assert models[name]["params"] == models["student_fitnet"]["params"]
    # the float ONNX file scores as the PyTorch student
    assert models["student_onnx"]["psnr"] == pytest.approx(models["student_fitnet"]["psnr"], abs=0.01)
    report = (out / "report.md").read_text()
    assert "student, ONNX INT8" in report and "**Deployed.** The INT8 file scores" in report
    assert "--deploy int8" in summary["settings"]["command"]


def test_compress_deploy_without_the_export_packages_fails_before_training(monkeypatch, tmp_path):
    from slkd.engine.compress import PLANS, Job, prepare
    import slkd.models.export as export

    def missing(check=False):
        raise SlkdError("ONNX export needs the onnx package, which is not installed")

    monkeypatch.setattr(export, "require_packages", missing)
    job = Job(teacher="restormer-tiny", weights=None, task="derain", train=tmp_path, val=tmp_path,
              out=tmp_path / "out", deploy="int8", plan=PLANS["quick"])
    with pytest.raises(SlkdError, match="--deploy int8: ONNX export needs"):
        prepare(job, log=None)
    with pytest.raises(SlkdError, match="unknown deployment 'fp16'"):
        prepare(Job(teacher="restormer-tiny", weights=None, task="derain", train=tmp_path, val=tmp_path,
                    out=tmp_path / "out", deploy="fp16"), log=None)


# ------------------------------------------------------------------ the benchmark


DATA = Path(os.environ.get("SLKD_DATA", ROOT.parent / "shared" / "data"))


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "CBSD68").is_dir() or not (DATA / "Rain100L").is_dir(),
                    reason="the shared benchmark data is not present")
def test_the_edge_benchmark_runs_at_toy_size(tmp_path):
    from benchmarks import edge

    out = tmp_path / "edge.json"
    assert edge.main(["--quick", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {r["task"] for r in report["psnr"]} == {"denoise25", "derain"}
    latency = report["latency"]
    assert latency["int8_vs_float"] and latency["hw_vs_paper"]["rows"] and latency["deployed_vs_teacher"]["rows"]
    out2 = tmp_path / "float_nodes.json"
    assert edge.main(["--quick", "--float-sets", "--threads", "1", "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["rows"]


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "BSDS500").is_dir(), reason="the shared benchmark data is not present")
def test_the_int8_latency_benchmark_profiles_the_float_and_default_graphs(tmp_path):
    from benchmarks import edge

    out = tmp_path / "int8.json"
    assert edge.main(["--quick", "--int8-latency", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    timed = [r for r in rows if "graph" in r]
    assert [r["graph"] for r in timed][0] == "float" and len(timed) == 1 + 2
    assert all(r["speed_vs_float"] > 0 for r in timed)
    # speed relative to float: float's time over the graph's, round by round (> 1 = faster)
    base = timed[0]["latency"]["times_ms"]
    for r in timed:
        ratios = sorted(f / g for f, g in zip(base, r["latency"]["times_ms"]))
        assert r["speed_vs_float"] == pytest.approx(ratios[len(ratios) // 2], rel=0.02)
    profile = next(r["profile_ms_per_pass"] for r in rows if "profile_ms_per_pass" in r)
    default = "int8 keep " + "+".join(edge.LATENCY_SETS[0])
    assert set(profile) == {"float", default}
    # the INT8 graph runs quantised convolutions and (de)quantisation; the float graph none
    assert "QLinearConv" in profile[default] and "DequantizeLinear" in profile[default]
    assert "QLinearConv" not in profile["float"] and "Conv" in profile["float"]
    with pytest.raises(SystemExit):
        edge.main(["--float-sets", "--int8-latency", "--json", str(tmp_path / "x.json")])
