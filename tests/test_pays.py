"""The "distillation that pays" study (benchmarks/study/pays.py): variants, the configs it
writes (accepted by the engine, holding out the teachers' validation images), the plateau rule,
the choice of the best baseline on validation only, the headline file, and the weights
publisher (benchmarks/publish.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.publish import PublishError, publish
from benchmarks.study import pays
from benchmarks.study.settings import FULL
from benchmarks.study.settings import StudyError
from slkd.engine.config import TrainRunConfig, from_dict
from slkd.models import build_model
from slkd.models.checkpoint import save_weights

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def teachers(tmp_path):
    folder = tmp_path / "teachers"
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), folder / "teacher_a.safetensors")
    save_weights(build_model("restormer-tiny", global_residual=False), folder / "teacher_b.safetensors")
    return folder


def test_variant_names_compose_init_and_student():
    v = pays.variant("slkd_img+init@deep")
    assert (v.method, v.init, v.student, v.scratch_twin) == ("slkd", True, "res-sl-tiny-deep", "scratch+init@deep")
    assert v.distill == {"loss_weights": {"img": 0.5}}
    assert pays.variant("fakd").scratch_twin == "scratch"
    with pytest.raises(StudyError, match="unknown variant 'slkd_bogus'"):
        pays.variant("slkd_bogus")
    for name in pays.SCREEN:  # every screened variant exists
        pays.variant(name)


@pytest.mark.parametrize("task", ["denoise", "derain"])
def test_student_configs_are_valid_runs_holding_out_the_teachers_validation(task, teachers, tmp_path):
    study = pays.PaysStudy(pays.TASKS[task], tmp_path / "out", DATA, teachers, FULL)
    teacher_cfg = pays.TASKS[task].setting()
    for name in ("slkd_img+init", "scratch", "fakd_img@deep"):
        job = study.student(pays.variant(name), 1, 800)
        cfg = from_dict(TrainRunConfig, json.loads(json.dumps(job.config)))  # the engine accepts it
        assert cfg.train.iters == 800 and cfg.train.val_every == 200 and cfg.seed == 1
        assert job.config["data"]["val"] == [teacher_cfg["val"]]
        assert job.config["data"]["train"]["holdout"] == teacher_cfg["train"]["holdout"]
        assert job.config["data"]["train"]["holdout"]["take"] == "rest"
    slkd = study.jobs["slkd_img+init_s1_i800"].config
    assert slkd["model"]["init_from_teacher"]["weights"] == str(teachers / "teacher_a.safetensors")
    assert slkd["distill"] == {"method": "slkd", "loss_weights": {"img": 0.5}}
    assert "teachers" not in study.jobs["scratch_s1_i800"].config
    assert study.jobs["fakd_img@deep_s1_i800"].config["model"] == {"name": "res-sl-tiny-deep"}


def test_missing_teachers_are_one_clear_error_and_scratch_needs_none(tmp_path):
    study = pays.PaysStudy(pays.TASKS["denoise"], tmp_path / "out", DATA, tmp_path, FULL)
    jobs, summary = pays.plateau(study, [8, 16])  # the plateau stage runs while the teachers train
    assert [j.config["distill"]["method"] for j in jobs] == ["scratch", "scratch"]
    _metrics(jobs[0].run_dir, [(2, 20.0), (4, 21.0), (6, 21.5), (8, 21.52)])
    _metrics(jobs[1].run_dir, [(4, 21.0), (8, 21.3), (12, 21.5), (16, 21.53)])  # confirms 8
    result = summary()
    assert (result["budget"], result["teacher_a_validation"], result["teacher_minus_best_scratch"]) == (8, None, None)
    for name in ("slkd", "scratch+init"):
        with pytest.raises(StudyError, match="Teacher A not found .*python -m benchmarks.publish"):
            study.student(pays.variant(name), 0, 8)
    with pytest.raises(StudyError, match="Teacher A not found"):
        pays.screen(study, ["output_kd"], 8)  # refused while the jobs are planned, before any run


def _metrics(run: Path, vals: list[tuple[int, float]], seconds: float | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"event": "val", "step": s, "psnr": p, "ssim": 0.5, "dataset": "val32"}) for s, p in vals]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if seconds is not None:
        (run / "study.json").write_text(json.dumps({"seconds": seconds}))


def test_plateau_budget_is_the_first_rung_that_gains_little_in_its_last_quarter_and_in_the_next(teachers, tmp_path):
    study = pays.PaysStudy(pays.TASKS["denoise"], tmp_path / "out", DATA, teachers, FULL)
    jobs, summary = pays.plateau(study, [1000, 2000, 4000])
    # 1000: its last quarter loses a little, but 2000 ends 0.44 dB higher: not the plateau
    _metrics(jobs[0].run_dir, [(250, 28.0), (500, 28.5), (750, 28.82), (1000, 28.8)])   # −0.02
    _metrics(jobs[1].run_dir, [(500, 28.6), (1000, 29.0), (1500, 29.2), (2000, 29.24)])  # +0.04
    _metrics(jobs[2].run_dir, [(1000, 29.0), (2000, 29.1), (3000, 29.24), (4000, 29.26)])  # +0.02
    s = summary()
    assert [r["last_quarter_gain"] for r in s["rungs"]] == pytest.approx([-0.02, 0.04, 0.02])
    assert [r["next_rung_gain"] for r in s["rungs"][:2]] == pytest.approx([0.44, 0.02])
    assert s["rungs"][2]["next_rung_gain"] is None  # the longest rung has nothing to confirm it
    assert s["budget"] == 2000
    _metrics(jobs[2].run_dir, [(1000, 29.0), (2000, 29.2), (3000, 29.3), (4000, 29.33)])  # 4000 ends +0.09
    assert summary()["budget"] is None
    assert pays.last_quarter_gain([(dict(step=4, psnr=1.0))], 8) is None


def test_plateau_stage_stops_climbing_once_a_wave_finds_the_budget(teachers, tmp_path, monkeypatch, capsys):
    curves = {1000: [(250, 28.0), (500, 28.5), (750, 28.8), (1000, 29.0)],      # +0.20
              2000: [(500, 28.6), (1000, 29.0), (1500, 29.2), (2000, 29.3)],    # +0.10
              4000: [(1000, 29.0), (2000, 29.2), (3000, 29.3), (4000, 29.33)],  # +0.03: the budget
              8000: [(2000, 29.2), (4000, 29.3), (6000, 29.34), (8000, 29.35)]}  # confirms it: +0.02
    waves = []

    def fake_run_jobs(jobs, parallel, threads, env, device):
        waves.append([j.config["train"]["iters"] for j in jobs])
        for j in jobs:
            _metrics(j.run_dir, curves[j.config["train"]["iters"]])
        return {j.name: "done" for j in jobs}

    monkeypatch.setattr(pays, "run_jobs", fake_run_jobs)
    argv = ["plateau", "--ladder", "8000", "1000", "4000", "2000", "16000", "--jobs", "2", "--teachers", str(teachers),
            "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results"), "--data", str(DATA)]
    assert pays.main(argv) == 0
    assert waves == [[1000, 2000], [4000, 8000]]  # 16000 is never started
    assert "plateau at 4000 iterations; not run (--full-ladder runs them): scratch_s0_i16000" in capsys.readouterr().out
    summary = json.loads((tmp_path / "results" / "pays_denoise25_plateau.json").read_text())["summary"]
    assert summary["budget"] == 4000 and summary["rungs"][-1]["val_psnr"] is None


def test_summary_only_starts_nothing_and_marks_the_file_part_way(teachers, tmp_path, monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("--summary-only started a run")

    monkeypatch.setattr(pays, "run_jobs", no_run)
    study = pays.PaysStudy(pays.TASKS["denoise"], tmp_path / "out", DATA, teachers, FULL)
    jobs, _ = pays.screen(study, ["output_kd"], 200)
    _metrics(jobs[0].run_dir, [(100, 30.0), (200, 30.4)])  # output_kd finished; its scratch twin not yet
    common = ["--teachers", str(teachers), "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results"),
              "--data", str(DATA)]
    assert pays.main(["screen", "--iters", "200", "--variants", "output_kd", "--summary-only", *common]) == 0
    result = json.loads((tmp_path / "results" / "pays_denoise25_screen.json").read_text())
    assert result["partial"] is True and "--summary-only" not in result["command"]
    rows = result["summary"]["variants"]
    assert rows["output_kd"]["val_psnr"] == pytest.approx(30.4) and rows["scratch"]["val_psnr"] is None
    # final too: nothing finished, so the file names no students and no differences
    assert pays.main(["final", "--iters", "200", "--slkd", "output_kd", "--baselines", "fitnet", "--no-2x",
                      "--no-publish", "--summary-only", *common]) == 0
    result = json.loads((tmp_path / "results" / "pays_denoise25_final.json").read_text())
    assert result["partial"] is True and result["summary"]["double"] is False
    assert result["summary"]["families"]["slkd"]["val_psnr"] == [pytest.approx(30.4), None, None]
    assert result["summary"]["sets"]["CBSD68"]["slkd_minus_scratch"] is None


def _eval(psnrs: dict[str, float]) -> dict:
    return {"mean": {"psnr": sum(psnrs.values()) / len(psnrs), "ssim": 0.5}, "count": len(psnrs),
            "images": [{"name": n, "psnr": p, "ssim": 0.5} for n, p in psnrs.items()]}


def test_final_picks_the_best_baseline_on_validation_and_writes_the_headline(teachers, tmp_path):
    task = pays.TASKS["derain"]
    study = pays.PaysStudy(task, tmp_path / "out", DATA, teachers, FULL)
    jobs, summary, parity = pays.final(study, "slkd_img", ["fitnet", "output_kd"], [0, 1], 100, publish=False)
    # validation: output_kd ahead of fitnet; test: fitnet ahead of output_kd (must not matter)
    val = {"slkd_img": 30.0, "scratch": 29.5, "fitnet": 29.6, "output_kd": 29.8}
    test = {"slkd_img": 34.0, "scratch": 33.5, "fitnet": 33.9, "output_kd": 33.7}
    data = task.tests[0][0]
    eval_dir = study.out / "eval"
    eval_dir.mkdir(parents=True)
    for name, seconds in (("slkd_img", 300.0), ("scratch", 100.0), ("fitnet", 200.0), ("output_kd", 150.0)):
        for seed, shift in ((0, 0.0), (1, 0.1)):
            for iters in (100, 200):
                run = f"{name}_s{seed}_i{iters}"
                _metrics(study.out / run, [(iters, val[name] + shift)], seconds)
                (eval_dir / f"{run}__{data.replace('/', '-')}.json").write_text(
                    json.dumps(_eval({"a": test[name] + shift, "b": test[name] + shift + 0.2})))
    (eval_dir / f"teacher_a__{data.replace('/', '-')}.json").write_text(json.dumps(_eval({"a": 36.0, "b": 36.2})))
    nr = lambda b: {"mean": {"input": {"brisque": 40.0, "piqe": 50.0}, "output": {"brisque": b, "piqe": b + 1}},  # noqa: E731
                    "count": 20}
    for seed, b in ((0, 30.0), (1, 32.0)):
        (eval_dir / f"slkd_img_s{seed}_i100__RealRain20.json").write_text(json.dumps(nr(b)))
    (eval_dir / "input__RealRain20.json").write_text(json.dumps(nr(0.0)))
    assert {j.name for j in jobs} >= {"eval/slkd_img_s1_i100/RealRain20", "eval/teacher_a/RealRain20"}
    assert "eval/slkd_img_s1_i200/RealRain20" not in {j.name for j in jobs}  # the 2x runs: test sets only
    single, _, _ = pays.final(study, "slkd_img", ["fitnet", "output_kd"], [0, 1], 100, publish=False, double=False)
    assert {j.name for j in jobs} - {j.name for j in single} >= {"slkd_img_s0_i200", "eval/slkd_img_s1_i200/Rain100L/test"}
    assert not any("_i200" in j.name for j in single)
    # every distilled finalist against scratch given its wall-clock: 100 × its seconds / scratch's 100 s
    assert parity() == {"slkd": 300, "fitnet": 200, "output_kd": 150}
    extra = {j.name for j in pays.parity_jobs(study, "slkd_img", [0, 1], parity())}
    assert {"scratch_s0_i300", "scratch_s1_i150", "eval/scratch_s1_i200/Rain100L/test"} <= extra
    assert pays.parity_jobs(study, "slkd_img", [0, 1], {"slkd": None}) == []  # not finished yet
    for n, p in ((300, 33.7), (200, 33.6), (150, 33.55)):  # scratch trained longer: better
        for seed, shift in ((0, 0.0), (1, 0.1)):
            (eval_dir / f"scratch_s{seed}_i{n}__{data.replace('/', '-')}.json").write_text(
                json.dumps(_eval({"a": p + shift, "b": p + shift + 0.2})))
    longer, _, _ = pays.final(study, "slkd_img", ["fitnet"], [0, 1], 100, publish=False, longer=[800, 200])
    assert {"slkd_img_s1_i800", "fitnet_s0_i200", "eval/scratch_s0_i800/Rain100L/test"} <= {j.name for j in longer}
    s = summary()
    assert s["best_baseline"] == "output_kd"
    row = s["sets"]["Rain100L"]
    assert row["slkd"]["mean"] == pytest.approx(34.15)
    assert row["slkd_minus_scratch"]["psnr_diff_per_seed"] == pytest.approx([0.5, 0.5])
    assert row["slkd_minus_scratch"]["verdict"] == "better, beyond seed noise"
    assert row["slkd_minus_best_baseline"]["psnr_diff_mean"] == pytest.approx(0.3)
    real = s["no_reference"]["RealRain20"]
    assert real["input"] == {"brisque": 40.0, "piqe": 50.0} and real["teacher"] is None
    assert real["slkd"] == {"brisque": 31.0, "piqe": 32.0} and real["scratch"] is None
    families = {k: pays.variant(f["variant"]) for k, f in s["families"].items()}
    s["parity"] = pays._parity_rows(study, families, [0, 1], 100, parity())
    slkd_parity = s["parity"]["Rain100L"]["slkd"]
    assert slkd_parity["iters"] == 300 and slkd_parity["minus_scratch_parity"]["psnr_diff_per_seed"] == \
        pytest.approx([0.3, 0.3])
    head = pays.headline(s, task, "res-sl-tiny")
    assert head["sets"]["Rain100L"] == {"teacher": pytest.approx(36.1), "scratch": pytest.approx(33.65),
                                        "slkd": pytest.approx(34.15),
                                        "best_baseline": {"name": "output_kd", "psnr": pytest.approx(33.85)},
                                        "seeds": 2,
                                        "compute_parity": {
                                            "slkd": {"psnr": pytest.approx(34.15), "scratch_same_wallclock": pytest.approx(33.85)},
                                            "fitnet": {"psnr": pytest.approx(34.05), "scratch_same_wallclock": pytest.approx(33.75)},
                                            "output_kd": {"psnr": pytest.approx(33.85), "scratch_same_wallclock": pytest.approx(33.7)}},
                                        # scratch at 200 iterations is also FitNet's parity run (one run)
                                        "iters_200": {"scratch": pytest.approx(33.75), "slkd": pytest.approx(34.15),
                                                      "output_kd": pytest.approx(33.85)}}
    assert set(head["students"]) == {"model", "task", "scratch", "slkd", "output_kd"}


def _finished_run(run: Path, iters: int = 4) -> None:
    torch.manual_seed(0)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"name: t\nrole: teacher_a\nmodel: {{name: res-sl-tiny}}\ntrain: {{iters: {iters}}}\n")
    events = [{"event": "start", "step": 0, "time": 10.0},
              {"event": "val", "step": 2, "time": 11.0, "dataset": "val32", "psnr": 25.0, "ssim": 0.6},
              {"event": "val", "step": 4, "time": 12.0, "dataset": "val32", "psnr": 24.0, "ssim": 0.5},
              {"event": "checkpoint", "step": 4, "time": 13.5}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    save_weights(build_model("res-sl-tiny"), run / "best_val32.pth")
    save_weights(build_model("res-sl-tiny"), run / "weights.pth")


def test_publish_writes_safetensors_with_provenance_and_refuses_to_replace(tmp_path):
    run = tmp_path / "run"
    _finished_run(run)
    meta = json.loads(publish(run, tmp_path / "w" / "student").read_text())
    assert meta["validation"] == {"step": 2, "dataset": "val32", "psnr": 25.0, "ssim": 0.6}  # the best
    assert meta["model"] == "res-sl-tiny" and meta["train_seconds"] == 3.5 and len(meta["sha256"]) == 64
    loaded = build_model("res-sl-tiny")
    from slkd.models import load_weights
    load_weights(loaded, tmp_path / "w" / "student.safetensors")
    with pytest.raises(PublishError, match="exists"):
        publish(run, tmp_path / "w" / "student")
    final = json.loads(publish(run, tmp_path / "w" / "student", which="final", overwrite=True).read_text())
    assert final["validation"]["step"] == 4 and final["validation"]["psnr"] == 24.0
    with pytest.raises(PublishError, match="over its 0 MiB limit"):
        publish(run, tmp_path / "w" / "other", weights_root=tmp_path / "w", limit=1000)
    assert not (tmp_path / "w" / "other.safetensors").exists()


def test_publish_refuses_an_unfinished_run(tmp_path):
    run = tmp_path / "run"
    _finished_run(run, iters=8)
    with pytest.raises(PublishError, match="has not finished: last checkpoint at step 4 of 8"):
        publish(run, tmp_path / "w" / "x")


def test_publish_and_the_study_runner_read_a_runs_seconds_alike(tmp_path):
    """A run stopped and resumed: the runner (train_finished, what study.json records) and the
    publisher count the same seconds, each process from its start to its last checkpoint."""
    from benchmarks.study.scheduler import train_finished

    run = tmp_path / "run"
    _finished_run(run, iters=4)
    events = [{"event": "start", "step": 0, "time": 10.0},
              {"event": "val", "step": 2, "time": 11.0, "dataset": "val32", "psnr": 25.0, "ssim": 0.6},
              {"event": "checkpoint", "step": 2, "time": 11.5},
              {"event": "train", "step": 3, "time": 12.0},                       # lost at the kill
              {"event": "start", "step": 2, "time": 5000.0, "resumed": True},
              {"event": "val", "step": 4, "time": 5002.0, "dataset": "val32", "psnr": 24.0, "ssim": 0.5},
              {"event": "checkpoint", "step": 4, "time": 5002.25}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    meta = json.loads(publish(run, tmp_path / "w" / "student").read_text())
    assert train_finished(run, 4) == pytest.approx(1.5 + 2.25)
    assert meta["train_seconds"] == round(train_finished(run, 4), 1) == 3.8
    assert meta["validation"]["step"] == 2  # the best of the set, across both processes


@pytest.mark.slow
def test_screen_runs_end_to_end_at_toy_size(teachers, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.study.pays", "screen", "--quick", "--iters", "4",
                           "--variants", "output_kd+init", "--teachers", str(teachers), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "denoise25" / "results" / "pays_denoise25_screen.json").read_text())["summary"]
    rows = summary["variants"]
    assert set(rows) == {"output_kd+init", "scratch+init"}  # the scratch twin is added
    assert all(r["val_psnr"] is not None and 10 < r["val_psnr"] < 40 for r in rows.values())
    assert rows["output_kd+init"]["minus_scratch_twin"] == pytest.approx(
        rows["output_kd+init"]["val_psnr"] - rows["scratch+init"]["val_psnr"])
    run = json.loads((out / "denoise25" / "output_kd+init_s0_i4" / "study.json").read_text())
    assert (run["device"], run["threads"], run["parallel"]) == ("cpu", 1, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_is_checked_before_any_run(teachers, tmp_path, capsys):
    argv = ["screen", "--iters", "8", "--teachers", str(teachers), "--out", str(tmp_path / "out"), "--data", str(DATA)]
    assert pays.main(argv + ["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as stop:
        pays.main(argv + ["--device", "mps"])
    assert stop.value.code == 2 and "unknown device 'mps'" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["denoise", "derain"])
def test_teacher_recipes_validate_and_chain_b_to_a(task, tmp_path):
    jobs = pays.teacher_jobs(task, tmp_path, quick=False)
    a, b = jobs["a"].config, jobs["b"].config
    key = pays.TASKS[task].key
    assert a["role"] == "teacher_a" and b["role"] == "teacher_b"
    assert a["train"]["ema"] == 0.999 and a["train"]["iters"] >= 10000 and a["train"]["iters"] % a["train"]["val_every"] == 0
    assert b["model"]["init_from"] == str(tmp_path / f"{key}-teacher-a") and jobs["b"].deps == [f"{key}-teacher-a"]
    assert b["model"]["options"] == {"global_residual": False}
    # no EMA for B's short fine-tune: 0.999 would still hold 37 % of its starting weights at the end
    assert b["train"]["ema"] is None and b["train"]["iters"] <= 2000
    assert jobs["a"].run_dir == tmp_path / f"{key}-teacher-a"
    assert pays.teacher_jobs(task, Path("runs/study"), quick=False)["a"].run_dir == ROOT / "runs/study" / f"{key}-teacher-a"
    # the students validate on the teachers' held-out split
    assert a["data"]["val"][0]["holdout"]["take"] == "held" and a["data"]["train"]["holdout"]["take"] == "rest"


@pytest.mark.slow
def test_teachers_stage_trains_publishes_and_scores_teacher_a_on_the_test_set(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.study.pays", "teachers", "--quick", "--task", "derain",
                           "--teacher-runs", str(tmp_path / "runs"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "weights" / "derain" / "teacher_b.json").read_text())
    assert meta["published_from"].endswith("derain-teacher-b") and meta["config"]["model"]["init_from"]
    summary = json.loads((out / "derain" / "results" / "pays_derain_teachers.json").read_text())["summary"]
    test = summary["tests"]["Rain100L"]
    assert test["images"] == 2 and 5 < test["teacher_a"]["psnr"] < 40
    assert test["input"]["psnr"] == pytest.approx(26.645, abs=0.01)  # the first two test pairs, Y channel
    assert summary["validation"]["a"]["dataset"] == "rain-val10"


@pytest.mark.parametrize("name, variant_name", [("distill_tiny", "fakd_img+init"), ("scratch_tiny", "scratch+init")])
def test_shipped_derain_student_configs_are_the_study_runs(name, variant_name):
    """configs/derain/{distill,scratch}_tiny.yaml give users the study's deraining students:
    the same model, cut, method, data, validation split and schedule (paths and names aside)."""
    shipped = yaml.safe_load((ROOT / "configs" / "derain" / f"{name}.yaml").read_text())
    study = pays.PaysStudy(pays.TASKS["derain"], Path("/nowhere"), DATA, ROOT / "benchmarks" / "weights" / "derain",
                       FULL)
    run = study.student(pays.variant(variant_name), 0, shipped["train"]["iters"]).config
    assert shipped["model"]["name"] == run["model"]["name"]
    assert Path(shipped["model"]["init_from_teacher"]["weights"]).name == \
        Path(run["model"]["init_from_teacher"]["weights"]).name
    assert shipped["data"] == run["data"] and shipped["train"] == run["train"] and shipped["eval"] == run["eval"]
    assert shipped["seed"] == run["seed"]
    # the study runs scratch through `slkd distill` (method scratch: the pixel loss alone)
    assert shipped.get("distill", {}).get("method", shipped["role"]) == run["distill"]["method"]


def test_publish_keeps_every_dot_of_the_destination_name(tmp_path):
    """`benchmarks.publish … pub/teacher.v2` wrote pub/teacher.safetensors: the suffix replaced ".v2"."""
    run = tmp_path / "run"
    _finished_run(run)
    meta = publish(run, tmp_path / "pub" / "teacher.v2")
    assert meta == tmp_path / "pub" / "teacher.v2.json"
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["teacher.v2.json", "teacher.v2.safetensors"]
    # a destination given with its suffix is the same destination
    with pytest.raises(PublishError, match="teacher.v2.safetensors exists"):
        publish(run, tmp_path / "pub" / "teacher.v2.safetensors")


def test_ablation_stage_runs_the_full_variant_and_its_four_ablations_against_it(teachers, tmp_path):
    task = pays.TASKS["derain"]
    study = pays.PaysStudy(task, tmp_path / "out", DATA, teachers, FULL)
    jobs, summary = pays.ablation(study, "split_aff_img+init", [0, 1], 100)
    rows = pays.ablation_rows("split_aff_img+init")
    assert list(rows) == ["full", "−DRL", "−IRL", "−L_NC", "−L_ET"]
    assert {j.name for j in jobs} >= {"split_aff_img_noirl+init_s1_i100", "eval/split_aff_img_noet+init_s0_i100/Rain100L/test"}
    assert pays.variant(rows["−DRL"]).distill["drl"] is False and pays.variant(rows["−L_ET"]).distill["extractor_et"] == "identity"
    data = task.tests[0][0].replace("/", "-")
    (study.out / "eval").mkdir(parents=True)
    for label, name in rows.items():
        for seed in (0, 1):
            base = 33.0 if label == "full" else 32.8
            (study.out / "eval" / f"{name}_s{seed}_i100__{data}.json").write_text(
                json.dumps(_eval({"a": base + 0.1 * seed, "b": base + 0.1 * seed + (0.4 if label == "−IRL" else -0.1)})))
    table = summary()["sets"]["Rain100L"]
    assert table["full"]["minus_full"] is None and table["full"]["psnr"]["mean"] == pytest.approx(32.95 + 0.05)
    assert table["−DRL"]["minus_full"]["psnr_diff_mean"] == pytest.approx(-0.2)
    assert table["−IRL"]["minus_full"]["images_better"] == 1  # image b better without IRL, image a worse
    with pytest.raises(StudyError, match="SLKD-family"):
        pays.ablation_rows("fakd_img+init")
