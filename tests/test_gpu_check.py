"""``benchmarks/gpu_check.py --dry-run``: the GPU check's whole plan at toy size on the CPU, so
the script cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from benchmarks.gpu_report import SECTION, markdown, update_section
from benchmarks.sections import markers
from slkd.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_runs_every_stage(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out),
                           "--work", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert report["dry_run"] and set(stages) == {"tests", "nccl", "timings", "teachers"}
    assert stages["tests"]["rc"] == 0 and stages["tests"]["failed"] == []  # skipped without CUDA
    assert stages["nccl"]["ok"] and stages["nccl"]["backend"] == "gloo"
    assert stages["nccl"]["max_weight_diff"] == 0.0  # resumed == uninterrupted on the CPU
    timings = stages["timings"]
    assert timings["rc"] == 0 and timings["distill_step"]["slkd_over_floor"] > 0
    assert set(timings["train_step"]["median_ms"]) == {f"{n} {p}" for n in ("restormer-tiny", "res-sl-tiny")
                                                       for p in ("fp32", "bf16")}
    # the teachers: A and B of both tasks, trained, selected on validation, exported, loadable
    runs = stages["teachers"]["runs"]
    assert len(runs) == 4 and all(r["rc"] == 0 and r["steps_done"] == r["iters"] for r in runs.values())
    names = {"denoise25_teacher_a", "denoise25_teacher_b", "derain_teacher_a", "derain_teacher_b"}
    assert {p.stem for p in out.glob("*.safetensors")} == names
    for name in names:
        model = build_model("restormer-tiny", **({"global_residual": False} if name.endswith("_b") else {}))
        model.load_state_dict(load_file(out / f"{name}.safetensors"))
    # the BENCHMARKS section renders from the report and replaces itself in place
    text = markdown(report)
    assert "dry run" in text and "SLKD step / floor" in text and "derain_teacher_b.safetensors" in text
    doc = tmp_path / "B.md"
    doc.write_text("# B\n")
    update_section(doc, text)
    update_section(doc, text)
    begin, end = markers(SECTION)
    assert doc.read_text().count(begin) == 1 and doc.read_text().count(end) == 1
    assert doc.read_text().startswith("# B\n\n## 10. GPU check")


def test_the_work_folder_is_emptied_only_when_it_is_the_checks_own(tmp_path):
    """`--work` is deleted with everything in it before a check: `--work ~` deleted the home
    folder. Only a folder the check made (its mark) or an empty one is emptied."""
    import pytest

    from benchmarks.gpu_check import WORK_MARK, fresh_work

    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "draft.tex").write_text("precious")
    with pytest.raises(SystemExit, match="holds files gpu_check did not write"):
        fresh_work(home)
    assert (home / "thesis" / "draft.tex").read_text() == "precious"
    work = tmp_path / "work"
    fresh_work(work)  # new: made, and marked
    (work / "runs").mkdir()
    fresh_work(work)  # its own: emptied
    assert sorted(p.name for p in work.iterdir()) == [WORK_MARK]
    (tmp_path / "empty").mkdir()
    fresh_work(tmp_path / "empty")
    assert (tmp_path / "empty" / WORK_MARK).is_file()
