"""The study's BENCHMARKS section (benchmarks/study/pays_report.py): rendered from the stages'
own summaries and the teachers' provenance, stages not run said so, and the section replaced in
place on every update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.sections import markers
from benchmarks.study import pays, pays_report
from benchmarks.study.settings import FULL
from slkd.models import build_model
from slkd.models.checkpoint import save_weights

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _metrics(run: Path, vals: list[tuple[int, float]], seconds: float) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"event": "val", "step": s, "psnr": p, "ssim": 0.5, "dataset": "rain-val10"}) for s, p in vals]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "study.json").write_text(json.dumps({"seconds": seconds}))


def _eval(psnrs: dict[str, float]) -> dict:
    return {"mean": {"psnr": sum(psnrs.values()) / len(psnrs), "ssim": 0.5}, "count": len(psnrs),
            "images": [{"name": n, "psnr": p, "ssim": 0.5} for n, p in psnrs.items()]}


@pytest.fixture
def study(tmp_path):
    weights = tmp_path / "weights" / "derain"
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), weights / "teacher_a.safetensors")
    save_weights(build_model("restormer-tiny", global_residual=False), weights / "teacher_b.safetensors")
    (weights / "teacher_a.json").write_text(json.dumps({
        "model": "restormer-tiny", "params": 1_180_000, "iters": 12000, "train_seconds": 6 * 3600,
        "validations": [{"step": 6000, "psnr": 36.19}, {"step": 12000, "psnr": 37.05}],
        "validation": {"step": 12000, "dataset": "rain-val10", "psnr": 37.05},
        "file": "benchmarks/weights/derain/teacher_a.safetensors"}))
    return pays.PaysStudy(pays.TASKS["derain"], tmp_path / "out", DATA, weights, FULL)


def _write(results: Path, stage: str, summary: dict) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"pays_derain_{stage}.json").write_text(json.dumps(
        {"stage": stage, "command": f"python -m benchmarks.study.pays {stage} --task derain", "summary": summary},
        default=pays.json_default))


def test_section_renders_every_stage_from_its_summary_and_replaces_itself(study, tmp_path):
    results, weights = tmp_path / "results", tmp_path / "weights"
    text = pays_report.markdown(pays.TASKS["derain"], results, weights)
    assert "**37.05** @ 12000 on rain-val10" in text and "36.19 @ 6000, 37.05 @ 12000" in text
    assert "| Teacher B | not published yet |" in text  # no JSON for B yet
    assert "**Plateau**: not run yet" in text and "**Final tables**: not run yet" in text

    _write(results, "teachers", {"tests": {"Rain100L": {
        "teacher_a": {"psnr": 35.123, "ssim": 0.96}, "input": {"psnr": 26.9, "ssim": 0.838}, "images": 100}}})
    jobs, plateau = pays.plateau(study, [100, 200, 400])
    _metrics(jobs[0].run_dir, [(25, 30.0), (50, 31.0), (75, 31.5), (100, 31.8)], 60.0)   # +0.30
    _metrics(jobs[1].run_dir, [(50, 31.0), (100, 31.6), (150, 31.9), (200, 31.93)], 120.0)  # +0.03
    _metrics(jobs[2].run_dir, [(100, 31.6), (200, 31.8), (300, 31.94), (400, 31.95)], 240.0)  # confirms 200
    _write(results, "plateau", plateau())
    jobs, screen = pays.screen(study, ["output_kd", "slkd"], 200)
    for job, psnr in zip(jobs, (32.2, 31.7, 31.93)):  # output_kd, slkd, then the scratch twin
        _metrics(job.run_dir, [(200, psnr)], 300.0)
    _write(results, "screen", screen())

    jobs, final, _ = pays.final(study, "slkd", ["output_kd"], [0, 1], 100, publish=False)
    eval_dir = study.out / "eval"
    eval_dir.mkdir(parents=True)
    test = {"slkd": 34.0, "scratch": 33.5, "output_kd": 33.8}
    for name in test:
        for seed, shift in ((0, 0.0), (1, 0.1)):
            for iters in (100, 200):
                run = f"{name}_s{seed}_i{iters}"
                _metrics(study.out / run, [(iters, 30.0 + shift)], 100.0)
                (eval_dir / f"{run}__Rain100L-test.json").write_text(
                    json.dumps(_eval({"a": test[name] + shift, "b": test[name] + shift + 0.2})))
    _write(results, "final", final())

    text = pays_report.markdown(pays.TASKS["derain"], results, weights)
    assert "| 200 | 31.93 | +0.030 | +0.020 | 2 min |" in text and "Budget found: **200**" in text
    assert "| 400 | 31.95 | +0.010 | – | 4 min |" in text
    assert "+5.10 dB above the best scratch rung" in text and "Part-way" not in text
    assert "Rain100L: **35.12 dB** / SSIM 0.9600 on 100 images (degraded input 26.90 dB / 0.8380)" in text  # 37.05 − 31.93
    screen_rows = [line for line in text.splitlines() if line.startswith("| output_kd |") or line.startswith("| slkd |")]
    assert screen_rows[0].startswith("| output_kd |") and "+0.27 (scratch)" in screen_rows[0]  # best first
    assert "-0.23 (scratch)" in screen_rows[1]
    assert "| scratch | scratch | no | res-sl-tiny | 31.93 |  | 5 min |" in text  # no twin of itself
    assert "PSNR on the Y channel (BT.601)" in text
    assert "| slkd | 34.15 ± 0.07 (34.10–34.20) | +0.50 [+0.50, +0.50]; 2/2 images; better, beyond seed noise |" in text
    assert "SLKD − best baseline: +0.20 [+0.20, +0.20]" in text

    assert "Validation PSNR (dB) per seed, where the best baseline was chosen: slkd 30.00, 30.10;" in text
    assert "| PSNR, 200 it. | − scratch, 200 it. |" in text  # the longer budget: twice the 100
    _, single, _ = pays.final(study, "slkd", ["output_kd"], [0, 1], 100, publish=False, double=False)
    _write(results, "final", single())  # --no-2x: one budget, no 2× columns
    text = pays_report.markdown(pays.TASKS["derain"], results, weights)
    assert "(the runs at twice it left out: `--no-2x`)" in text and "200 it." not in text
    assert "| slkd | 34.15 ± 0.07 (34.10–34.20) | +0.50 [+0.50, +0.50]; 2/2 images; better, beyond seed noise |" in text
    assert "SLKD − best baseline: +0.20 [+0.20, +0.20]" in text and "at 200 iterations" not in text

    partial = json.loads((results / "pays_derain_screen.json").read_text())
    (results / "pays_derain_screen.json").write_text(json.dumps({**partial, "partial": True}))
    text = pays_report.markdown(pays.TASKS["derain"], results, weights)
    assert "rank nothing): **Part-way**: written while the stage still ran" in text

    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\n## 12. The study\n")
    for _ in range(2):
        assert pays_report.main(["--task", "derain", "--results", str(results), "--weights", str(weights),
                                 "--update", str(doc)]) == 0
    body = doc.read_text()
    begin, end = markers("pays_derain")
    assert body.count(begin) == 1 and body.count(end) == 1 and body.count("### 12.2 Deraining") == 1
    assert pays_report.main(["--task", "derain", "--update", str(tmp_path / "missing.md")]) == 2
