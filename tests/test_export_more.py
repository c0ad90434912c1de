"""ONNX export of the Uformer, DRSformer and NAFNet students (the pattern of test_export.py):
numerical match with PyTorch at batch sizes and image sizes other than the export example."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from slkd.models import build_model  # noqa: E402
from slkd.models.export import check_onnx, export_onnx, read_metadata  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name, multiple, extra",
    [
        ("nafnet-sl-tiny", 16, []),
        # Uformer pads its stages to the window inside the graph too: 24×40 is not a multiple of 16
        ("ufor-sl-tiny", 16, [(1, 3, 24, 40)]),
        ("drs-sl-tiny", 8, []),
    ],
)
def test_export_matches_pytorch(name, multiple, extra, tmp_path):
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():  # NAFNet's beta/gamma start at 0, which would hide its blocks
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path / f"{name}.onnx"
    result = export_onnx(model, path, model_name=name, check=True)
    assert all(c.ok for c in result.checks) and len(result.checks) == 2
    meta = read_metadata(path)
    assert meta["slkd.model"] == name and meta["slkd.size_multiple"] == str(multiple)
    sizes = [(1, 3, 2 * multiple, 3 * multiple), (2, 3, 5 * multiple, 4 * multiple), *extra]
    checks = check_onnx(path, model, sizes=sizes)
    assert [c.shape for c in checks] == sizes
    assert all(c.ok for c in checks), checks


def test_cli_export_nafnet_student(cli, tmp_path):
    out = tmp_path / "nafnet-sl-tiny.onnx"
    r = cli("export", "--model", "nafnet-sl-tiny", "--onnx", out, "--check")
    assert r.code == 0, r.err
    assert "multiples of 16" in r.out and r.out.count("checked") == 2
