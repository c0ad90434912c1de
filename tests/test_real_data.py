"""Sanity baselines of the benchmark folders (docs/spec.md §6): the degraded inputs scored against
their ground truth with ``slkd eval --model input``.

These check the whole evaluation path on real files: layout detection, pairing by name, grey
and JPEG decoding, the task's metric convention (Y channel for deraining, RGB otherwise). The
data folder comes from ``$SLKD_DATA`` or ``<repo>/../shared/data``; without it the tests skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slkd.cli.main import main

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> tuple[Path, str]:
    env = os.environ.get("SLKD_DATA")
    if env:
        return Path(env), f"$SLKD_DATA={env}"
    return REPO.parent / "shared" / "data", "<repo>/../shared/data"


@pytest.fixture(scope="module")
def data_root() -> Path:
    root, where = _data_root()
    if not root.is_dir():
        pytest.skip(f"benchmark images not found at {where} ({root}); point SLKD_DATA at the benchmark folder")
    return root


def _eval_input(capsys, root: Path, folder: str, task: str) -> dict:
    path = root / folder
    if not path.is_dir():
        pytest.skip(f"{folder} is not in {root}")
    capsys.readouterr()
    code = main(["eval", "--model", "input", "--data", str(path), "--task", task,
                 "--device", "cpu", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


# (folder, task, expected count, layout, input Y/RGB-PSNR of docs/spec.md §6, tolerance in dB)
BASELINES = [
    ("Rain100L/test", "derain", 100, "paired:input/target", 26.90, 0.01),
    ("Rain100L/train", "derain", 84, "paired:input/target", 26.64, 0.01),
    ("CC15", "real", 15, "paired:noisy/mean", 33.41, 0.01),
    ("PolyU100", "real", 100, "paired:noisy/mean", 35.97, 0.01),
    ("Levin", "deblur", 32, "paired:blurred/gt", 21.55, 0.01),
    # "≈ 12.0". The mean of per-image PSNRs over this 25-pair subset is 12.335 dB (the
    # PSNR of the pooled MSE is 11.92): both are "≈ 12", so the looser tolerance.
    ("SOTS_indoor25", "dehaze", 25, "paired:hazy/clear", 12.0, 0.5),
]


@pytest.mark.parametrize("folder, task, count, layout, expected, tol", BASELINES)
def test_input_psnr_baseline(capsys, data_root, folder, task, count, layout, expected, tol):
    result = _eval_input(capsys, data_root, folder, task)
    assert result["count"] == count
    assert result["layout"] == layout
    assert result["convention"]["y_channel"] is (task == "derain")
    assert abs(result["mean"]["psnr"] - expected) <= tol, result["mean"]
    ssim = {"Rain100L/test": 0.838, "Rain100L/train": 0.845}.get(folder)  # the Y-SSIM baselines
    if ssim is not None:
        assert abs(result["mean"]["ssim"] - ssim) <= 0.001, result["mean"]
