"""``benchmarks/gpu_check.py --dry-run``: the GPU check's whole plan at toy size on the CPU, so
the script cannot rot between the rare sessions that have a GPU; and the pieces that decide its
verdict, on reports made up here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu_check import DRY_VARIANTS, SOURCES, STAGES, TARGETS, Budget, pack_data, scale
from benchmarks.gpu_report import SECTION, markdown, update_section
from benchmarks.sections import markers

ROOT = Path(__file__).resolve().parents[1]


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def test_dry_run_runs_every_stage(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out),
                           "--work", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert report["dry_run"] and set(stages) == set(STAGES)
    assert stages["tests"]["rc"] == 0 and stages["tests"]["failed"] == []  # skipped without CUDA
    assert stages["nccl"]["ok"] and stages["nccl"]["backend"] == "gloo"
    assert stages["nccl"]["max_weight_diff"] == 0.0  # resumed == uninterrupted on the CPU
    # phase 1 compiled every compiled configuration and the inference graphs
    warm = stages["warm"]["children"]
    assert set(warm) == {f"{p}_{v}" for p, vs in DRY_VARIANTS.items() for v in vs if "compiled" in v} | {"inference_64"}
    assert all(r["rc"] == 0 and r["graphs"] >= 1 for r in warm.values())
    # every configuration of both pairs timed on the three sources, through the trainer's data path
    for key in ("steps_paper", "steps_tiny"):
        steps = stages[key]
        assert steps["rc"] == 0 and steps["errors"] == {} and steps["skipped"] == []
        assert set(steps["variants"]) == set(DRY_VARIANTS[key.split("_")[1]])
        for variant, r in steps["variants"].items():
            assert set(r["ms"]) == set(SOURCES) and all(_finite(v) and v > 0 for v in r["ms"].values())
            assert r["real_ms"] == max(r["ms"]["denoise"], r["ms"]["derain"])
            assert r["data_share"] == pytest.approx(r["real_ms"] / r["ms"]["synthetic"] - 1)
            assert set(r["data_path"]) == {"denoise", "derain"} and all(r["data_path"].values())
            if r["mode"] == "compiled":  # the trainer compiled the step (its compile event) in one graph
                assert _finite(r["compile_s"]) and r["graphs"] == 1 and r["graph_breaks"] == 0
    inference = stages["inference"]["sizes"]["64"]
    assert set(inference["paths"]) == {"eager", "channels_last", "compiled"}
    compress = stages["compress"]
    assert compress["steps_done"] >= 1 and _finite(compress["it_per_s"]) and compress["it_per_s"] > 0
    # the scale: its keys, finite values, and the verdict decided on each target
    s = report["scale"]
    assert isinstance(s["commit"], str) and s["commit"]
    assert _finite(s["data_share"])
    assert _finite(s["paper_step_ms"]["fakd_eager_fp32"]) and _finite(s["paper_step_ms"]["fakd_best"])
    assert s["paper_step_ms"]["fakd_best"] == min(
        r["real_ms"] for r in stages["steps_paper"]["variants"].values() if r["method"] == "fakd")
    assert s["paper_step_ms"]["fakd_best"] == s["paper_step_ms"][s["fakd_best_config"]]
    assert _finite(s["inference_1024"]["speedup"]) and _finite(s["inference_1024"]["macs_ratio"])
    assert s["inference_1024"]["macs_ratio"] > 1
    assert _finite(s["compress"]["it_per_s"])
    verdict = s["verdict"]
    assert set(verdict) == {"data_share", "fakd_speedup", "inference_share", "bf16_speedup"}
    assert all(isinstance(v["ok"], bool) for v in verdict.values())
    assert verdict["data_share"]["ok"] == (s["data_share"] <= TARGETS["data_share"])
    assert verdict["fakd_speedup"]["value"] == s["paper_step_ms"]["fakd_eager_fp32"] / s["paper_step_ms"]["fakd_best"]
    assert verdict["inference_share"]["value"] == s["inference_1024"]["speedup"] / s["inference_1024"]["macs_ratio"]
    assert s["targets_met"] == all(v["ok"] for v in verdict.values())
    # the BENCHMARKS section renders from the report and replaces itself in place
    text = markdown(report)
    assert "dry run" in text and "**Verdict**" in text and "data_share <= 0.05" in text
    for heading in ("Compilation", "Training step", "Inference", "`slkd compress`"):
        assert heading in text
    doc = tmp_path / "B.md"
    doc.write_text("# B\n")
    update_section(doc, text)
    update_section(doc, text)
    begin, end = markers(SECTION)
    assert doc.read_text().count(begin) == 1 and doc.read_text().count(end) == 1
    assert doc.read_text().startswith("# B\n\n## 10. GPU check")


def _variant(ms: float, synthetic: float) -> dict:
    method, mode, precision = "fakd", "eager", "fp32"
    return {"method": method, "mode": mode, "precision": precision, "real_ms": ms,
            "ms": {"denoise": ms, "derain": ms, "synthetic": synthetic}, "data_share": ms / synthetic - 1}


def _report(paper: dict, share: float | None = 0.8) -> dict:
    stages = {"steps_paper": {"variants": paper}}
    if share is not None:
        stages["inference"] = {"sizes": {"1024": {"macs_ratio": 7.0, "best": {
            "speedup": 7.0 * share, "share": share, "teacher_path": "compiled", "student_path": "compiled"}}}}
    return {"commit": "abc", "dry_run": False, "machine": {"gpu": "G"}, "stages": stages}


def test_the_verdict_reads_the_fastest_fakd_configuration():
    paper = {"fakd_eager_fp32": _variant(200.0, 199.0), "fakd_eager_bf16": _variant(180.0, 179.0),
             "fakd_compiled_fp32": _variant(90.0, 88.0), "fakd_compiled_bf16": _variant(70.0, 69.0),
             "scratch_eager_fp32": {**_variant(50.0, 10.0), "method": "scratch"}}  # not FAKD: not read
    s = scale(_report(paper))
    assert s["fakd_best_config"] == "fakd_compiled_bf16"
    assert s["paper_step_ms"]["fakd_best"] == 70.0 and s["fakd_speedup"] == pytest.approx(200 / 70)
    assert s["data_share"] == pytest.approx(70 / 69 - 1)  # of the fastest configuration
    assert s["bf16_speedup"] == pytest.approx({"eager": 200 / 180, "compiled": 90 / 70})
    assert s["inference_1024"]["speedup"] == pytest.approx(5.6)
    assert all(v["ok"] is True for v in s["verdict"].values()) and s["targets_met"] is True
    # bf16 slower in one mode, a data path that costs, a student short of its MACs ratio
    paper["fakd_compiled_bf16"] = _variant(95.0, 80.0)
    s = scale(_report(paper, share=0.5))
    assert s["fakd_best_config"] == "fakd_compiled_fp32"
    assert s["verdict"]["fakd_speedup"]["value"] == pytest.approx(200 / 90)
    assert s["verdict"]["bf16_speedup"]["ok"] is False and s["verdict"]["inference_share"]["ok"] is False
    assert s["targets_met"] is False


def test_what_was_not_measured_is_none_not_a_pass():
    s = scale(_report({"fakd_eager_fp32": _variant(200.0, 150.0)}, share=None))
    assert s["paper_step_ms"]["fakd_best"] == 200.0 and s["fakd_speedup"] == 1.0
    assert s["verdict"]["data_share"]["ok"] is False  # 33 % of the step is the data path
    assert s["verdict"]["bf16_speedup"] == {"value": None, "rule": s["verdict"]["bf16_speedup"]["rule"], "ok": None}
    assert s["verdict"]["inference_share"]["ok"] is None and s["targets_met"] is None
    # a stage that died before writing anything: the section says so, the verdict is open
    report = {"command": "c", "commit": None, "dry_run": False, "budget_s": 480,
              "machine": {"torch": "t", "python": "p", "cpu_count": 16},
              "stages": {"steps_paper": {"rc": -9, "timed_out": True, "error": "no result (steps_paper.json missing)"}}}
    report["scale"] = scale(report)
    assert report["scale"]["commit"] == "unknown" and report["scale"]["paper_step_ms"]["fakd_best"] is None
    text = markdown(report)
    assert "not everything was measured" in text and "no result (rc -9, timed out)" in text


def test_each_stage_gets_its_share_of_the_time_left():
    budget = Budget(100.0, ["tests", "steps_paper", "compress"])  # no inference, no tiny pair
    assert budget.left == ["phase1", "steps_paper", "compress"]
    total = 34 + 25 + 22
    assert budget.take("phase1") == pytest.approx(100 * 34 / total, abs=0.5)
    budget.deadline -= 20  # as if 20 s had passed
    assert budget.take("steps_paper") == pytest.approx((100 - 20) * 25 / (25 + 22), abs=0.5)
    assert budget.take("compress") == pytest.approx(100 - 20, abs=0.5)  # the rest


def test_pack_data_copies_few_images_losslessly(tmp_path, monkeypatch):
    import cv2

    import benchmarks.gpu_check as gpu_check

    monkeypatch.setattr(gpu_check, "PACK", {"BSDS500": 2, "Rain100L/train": 2, "Rain100L/test": 1})
    src, rng = tmp_path / "src", np.random.default_rng(0)
    for folder, name in (("CBSD68", "a.png"), ("BSDS500/train", "a.jpg"), ("BSDS500/train", "b.jpg"),
                         ("BSDS500/test", "c.jpg"), ("BSDS500/test", "d.jpg")):
        (src / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / folder / name), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    images = {}
    for split in ("train", "test"):
        for i in range(3):
            for side in ("input", "target"):
                (src / "Rain100L" / split / side).mkdir(parents=True, exist_ok=True)
                images[split, side, i] = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
                cv2.imwrite(str(src / "Rain100L" / split / side / f"norain-{i}.png"), images[split, side, i])
    dest = tmp_path / "packed"
    sizes = pack_data(src, dest)
    assert set(sizes) == {"BSDS500", "Rain100L/train", "Rain100L/test"}
    # CBSD68's names left out (a.jpg), then the first two in name order
    assert sorted(p.relative_to(dest / "BSDS500").as_posix() for p in (dest / "BSDS500").rglob("*.jpg")) == \
        ["test/c.jpg", "test/d.jpg"]
    train = sorted(p.name for p in (dest / "Rain100L" / "train" / "input").iterdir())
    assert train == ["norain-0.webp", "norain-1.webp"]
    assert len(list((dest / "Rain100L" / "test" / "target").iterdir())) == 1
    back = cv2.imread(str(dest / "Rain100L" / "train" / "target" / "norain-1.webp"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, images["train", "target", 1])
    with pytest.raises(SystemExit, match="not empty"):
        pack_data(src, dest)


def test_the_work_folder_is_emptied_only_when_it_is_the_checks_own(tmp_path):
    """`--work` is deleted with everything in it before a check: `--work ~` deleted the home
    folder. Only a folder the check made (its mark) or an empty one is emptied."""
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
