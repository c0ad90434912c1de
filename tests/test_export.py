"""ONNX export: numerical match with PyTorch at other batch sizes and image sizes than the
export example, metadata, ``slkd export`` end to end, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from slkd import __version__  # noqa: E402
from slkd.errors import SlkdError  # noqa: E402
from slkd.models import build_model, load_weights  # noqa: E402
from slkd.models.export import (  # noqa: E402
    OnnxCheck,
    check_onnx,
    export_onnx,
    read_metadata,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: batch, height and width all differ from the export example (2×C×32×48) and between the two
SIZES = ((1, 3, 32, 48), (2, 3, 64, 40))
ATOL = 1e-4


def _run_both(path: Path, model: torch.nn.Module, size: tuple[int, ...], seed: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.rand(size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == expected.shape == size
    return float(np.abs(got - expected).max())


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def seeded_export(tmp_path_factory):
    """res-sl-tiny, random weights from a fixed seed, exported once for the module."""
    torch.manual_seed(123)
    model = build_model("res-sl-tiny").eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = export_onnx(model, path, model_name="res-sl-tiny")
    return model, path, result


# --------------------------------------------------------------------------------------------
# library


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_seeded_export_matches_pytorch(seeded_export, size):
    model, path, _ = seeded_export
    assert _run_both(path, model, size, seed=sum(size)) <= ATOL


def test_graph_has_dynamic_batch_height_width(seeded_export):
    _, path, _ = seeded_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"], (value.name, dims)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]


def test_metadata(seeded_export):
    _, path, result = seeded_export
    meta = read_metadata(path)
    assert meta == result.metadata
    assert meta["slkd.size_multiple"] == "8"
    assert meta["slkd.model"] == "res-sl-tiny"
    assert meta["slkd.version"] == __version__
    assert meta["slkd.inp_channels"] == meta["slkd.out_channels"] == "3"
    assert meta["slkd.opset"] == "17"
    assert "multiple" in meta["slkd.preprocess"] and "slkd.weights" not in meta
    assert result.checks == []


def test_export_leaves_model_alone(tmp_path):
    torch.manual_seed(0)
    model = build_model("res-sl-tiny").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx")
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_check_runs_before_writing_and_keeps_old_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model("res-sl-tiny").eval()
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"previous export")
    monkeypatch.setattr(
        "slkd.models.export.check_onnx",
        lambda *a, **k: [OnnxCheck(shape=(1, 3, 32, 40), max_abs_diff=0.5, ok=False)],
    )
    with pytest.raises(SlkdError, match="not written.*1×3×32×40"):
        export_onnx(model, dest, check=True)
    assert dest.read_bytes() == b"previous export"
    assert _no_temp_files(tmp_path)


def test_check_onnx_reports_a_mismatch(seeded_export):
    model, path, _ = seeded_export
    other = build_model("res-sl-tiny").eval()  # other random weights
    results = check_onnx(path, other, sizes=[(1, 3, 16, 24)])
    assert len(results) == 1 and not results[0].ok and results[0].max_abs_diff > ATOL


def test_library_refuses_bad_opset_and_weights_as_output(tmp_path, tiny_weights):
    model = build_model("res-sl-tiny")
    with pytest.raises(SlkdError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=7)
    with pytest.raises(SlkdError, match="refusing"):
        export_onnx(model, tiny_weights, weights=tiny_weights)


# --------------------------------------------------------------------------------------------
# command line


def test_cli_export_from_saved_weights(cli, tmp_path, tiny_weights):
    """Weights written by slkd.models.save_weights (conftest), exported and checked by the CLI,
    then run here at two sizes against the same weights loaded in PyTorch."""
    out = tmp_path / "exported" / "res-sl-tiny.onnx"
    weights_before = tiny_weights.read_bytes()
    r = cli("export", "--model", "res-sl-tiny", "--weights", tiny_weights, "--onnx", out, "--check")
    assert r.code == 0, r.err
    assert "wrote" in r.out and "multiples of 8" in r.out and r.out.count("checked") == 2
    assert tiny_weights.read_bytes() == weights_before

    model = build_model("res-sl-tiny")
    load_weights(model, tiny_weights)
    model.eval()
    for i, size in enumerate(SIZES):
        assert _run_both(out, model, size, seed=i) <= ATOL

    meta = read_metadata(out)
    assert meta["slkd.model"] == "res-sl-tiny" and meta["slkd.size_multiple"] == "8"
    assert meta["slkd.weights"] == tiny_weights.name
    assert meta["slkd.weights_sha256"] == hashlib.sha256(weights_before).hexdigest()
    assert meta["slkd.opset"] == "17"


def test_cli_export_random_init_is_seeded(cli, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    r = cli("export", "--model", "res-sl-tiny", "--onnx", a, "--opset", "13")
    assert r.code == 0, r.err
    assert "random weights" in r.err
    assert cli("export", "--model", "res-sl-tiny", "--onnx", b, "--opset", "13").code == 0
    weights = [[np.asarray(onnx.numpy_helper.to_array(t)) for t in onnx.load(str(p)).graph.initializer]
               for p in (a, b)]
    assert all(np.array_equal(x, y) for x, y in zip(*weights))
    assert read_metadata(a)["slkd.opset"] == "13"
    assert onnx.load(str(a)).opset_import[0].version == 13


def _assert_one_line_error(r, *fragments: str) -> None:
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert lines[-1].startswith("slkd export: error:"), r.err
    assert "Traceback" not in r.err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_cli_bad_input(cli, tmp_path, tiny_weights, monkeypatch, capsys):
    out = tmp_path / "out.onnx"
    _assert_one_line_error(cli("export", "--model", "nope", "--onnx", out), "unknown model 'nope'")
    _assert_one_line_error(
        cli("export", "--model", "res-sl-tiny", "--weights", tmp_path / "missing.pth", "--onnx", out),
        "weights file not found",
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _assert_one_line_error(
        cli("export", "--model", "res-sl-tiny", "--onnx", blocker / "out.onnx"), "is a file, not a folder"
    )
    _assert_one_line_error(cli("export", "--model", "res-sl-tiny", "--onnx", tmp_path), "is a folder")
    with pytest.raises(SystemExit) as exc:  # refused while parsing (number() in cli/common.py)
        cli("export", "--model", "res-sl-tiny", "--onnx", out, "--opset", "99")
    assert exc.value.code == 2 and "argument --opset: must be <= 20" in capsys.readouterr().err
    # the weights file is never overwritten, also not through a symlink
    before = tiny_weights.read_bytes()
    link = tmp_path / "link.pth"
    link.symlink_to(tiny_weights)
    for target in (tiny_weights, link):
        _assert_one_line_error(
            cli("export", "--model", "res-sl-tiny", "--weights", tiny_weights, "--onnx", target),
            "refusing",
        )
    assert tiny_weights.read_bytes() == before
    # weights of another preset
    _assert_one_line_error(
        cli("export", "--model", "res-sl", "--weights", tiny_weights, "--onnx", out), "does not fit"
    )
    # missing packages
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    _assert_one_line_error(
        cli("export", "--model", "res-sl-tiny", "--onnx", out, "--check"), "onnxruntime"
    )
    monkeypatch.setitem(sys.modules, "onnx", None)
    _assert_one_line_error(cli("export", "--model", "res-sl-tiny", "--onnx", out), "onnx package")
    assert not out.exists() and _no_temp_files(tmp_path)


def test_cli_lists_export(cli, capsys):
    with pytest.raises(SystemExit):
        cli("export", "--help")
    text = capsys.readouterr().out
    assert "multiples of the" in text and "size multiple" in text and "OUTSIDE" in text


def test_cli_refuses_to_replace_an_existing_file_without_overwrite(cli, tmp_path):
    """Every command that writes keeps an existing output unless told otherwise (docs/reliability.md §7:
    `slkd export` used to replace it with a note)."""
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an older export")
    _assert_one_line_error(cli("export", "--model", "res-sl-tiny", "--onnx", out), "exists", "--overwrite")
    assert out.read_bytes() == b"an older export"
    r = cli("export", "--model", "res-sl-tiny", "--onnx", out, "--overwrite")
    assert r.code == 0, r.err
    assert onnx.load(str(out)).graph.input[0].name == "input"
