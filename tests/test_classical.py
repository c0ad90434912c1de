"""CBM3D as the classical reference (benchmarks/classical.py): it runs through the shared
evaluation loop on the same noisy images as the students and really denoises."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("bm3d")

from benchmarks.classical import CBM3D, main  # noqa: E402
from slkd.models import build_model  # noqa: E402
from slkd.models.checkpoint import save_weights  # noqa: E402


def test_cbm3d_module_keeps_shape_and_removes_noise():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 0.8, 48)
    clean = torch.stack([ramp[None, :].expand(48, 48), ramp[:, None].expand(48, 48),
                         torch.full((48, 48), 0.5)])[None]
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=g)
    out = CBM3D(25.0)(noisy)
    assert out.shape == clean.shape and out.dtype == torch.float32
    mse_in, mse_out = ((noisy - clean) ** 2).mean(), ((out - clean) ** 2).mean()
    assert mse_out < mse_in / 10  # a smooth image: BM3D removes nearly all the noise


def test_side_by_side_report(tmp_path):
    data = tmp_path / "clean"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(60, 200, (40, 40, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    torch.manual_seed(0)
    save_weights(build_model("res-sl-tiny"), tmp_path / "s.safetensors")
    out = tmp_path / "r.json"
    assert main(["--data", str(data), "--student", "res-sl-tiny", str(tmp_path / "s.safetensors"),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 2 and len(report["images"]["cbm3d"]) == 2
    assert [r["name"] for r in report["images"]["student"]] == ["img0", "img1"]
    s = report["summary"]
    assert s["cbm3d_seconds_over_student"] == pytest.approx(s["cbm3d"]["seconds"] / s["student"]["seconds"])
    assert all(r["seconds"] > 0 for rows in report["images"].values() for r in rows)


def test_refuses_paired_folders(tmp_path, capsys):
    for sub in ("input", "target"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / sub / "a.png")
    assert main(["--data", str(tmp_path), "--student", "res-sl-tiny", "x.safetensors"]) == 2
    assert "CBM3D is compared on clean images" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [
    ("--limit", "0"), ("--limit", "-1"), ("--sigma", "nan"), ("--sigma", "-25"), ("--sigma", "0"),
    ("--threads", "0"), ("--threads", "100000"), ("--noise-seed", "-1"),
])
def test_bad_numbers_are_refused_while_parsing(tmp_path, capsys, option, value):
    """--limit 0 scored everything, --limit -1 dropped the last image, --sigma nan wrote NaN
    results; the others were tracebacks. Each is now one argparse line, before anything runs."""
    with pytest.raises(SystemExit) as info:
        main(["--data", str(tmp_path), "--student", "res-sl-tiny", "x.safetensors", "--json",
              str(tmp_path / "r.json"), option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_the_committed_result_is_replaced_only_with_overwrite(tmp_path, capsys, monkeypatch):
    """The default --json is the committed benchmarks/results/classical_<set>.json: a run on a
    folder of that name replaced it without a word. It is refused before anything runs."""
    import benchmarks.classical as classical

    monkeypatch.setattr(classical, "ROOT", tmp_path)  # a stand-in for the repository
    committed = tmp_path / "benchmarks" / "results" / "classical_CBSD68.json"
    committed.parent.mkdir(parents=True)
    committed.write_text('{"measured": "earlier"}')
    data = tmp_path / "CBSD68"
    data.mkdir()
    Image.fromarray(np.full((24, 24, 3), 100, np.uint8)).save(data / "img0.png")
    torch.manual_seed(0)
    save_weights(build_model("res-sl-tiny"), tmp_path / "s.safetensors")
    argv = ["--data", str(data), "--student", "res-sl-tiny", str(tmp_path / "s.safetensors")]
    with pytest.raises(SystemExit) as info:  # refused as argparse refuses, before anything runs
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "classical_CBSD68.json exists" in err and "--overwrite" in err
    assert committed.read_text() == '{"measured": "earlier"}'
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(committed.read_text())["count"] == 1
