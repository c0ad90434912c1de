"""The reproduction study (benchmarks/study, run as `python -m benchmarks.study`): the configs
it writes are valid training configs, deraining trains on Rain100L/train only, reruns are reused
or refused, failures propagate, and the statistics that decide "beyond seed noise" are right. The
study itself runs with `make bench-quick`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.study.cli import data_root, main
from benchmarks.study.plan import ReproductionStudy, build_plan
from benchmarks.study.report import markdown
from benchmarks.study.scheduler import Job, holder, lock_path, prepare, run_jobs, train_finished
from benchmarks.study.settings import FULL, QUICK, STUDIES, Scale, StudyError
from benchmarks.study.paired import compare
from benchmarks.study.summaries import summarise_denoise, summarise_precision
from slkd.engine.config import load_config


def _plan(tmp_path: Path, studies) -> ReproductionStudy:
    study = ReproductionStudy(tmp_path / "runs", tmp_path / "data", QUICK, (0, 1), (0, 1))
    # scratch-long's step timing is measured once per study folder; a saved one is reused
    saved = study.out / "denoise25" / "scratch_long.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"student_iters": QUICK.student, "ratio": 3.5, "iters": 42}))
    build_plan(studies, study)
    return study


def test_every_study_config_is_a_valid_training_config(tmp_path):
    study = _plan(tmp_path, list(STUDIES))
    trains = [j for j in study.jobs.values() if j.config is not None]
    for job in trains:
        prepare(job)  # writes the config
        cfg = load_config(job.config_path)
        assert cfg.name == job.run_dir.name
        assert Path(cfg.output_dir) == job.run_dir.parent
    names = {j.name for j in trains}
    # 2 seeds × (7 methods + 1 revision + 3 balanced baselines + 5 ablations) students, teachers A/B of 3 tasks,
    # scratch + SLKD + balanced SLKD of 2 tasks; families: teachers A/B of 2 architectures, the same 3 of 3 pairs;
    # precision: the bf16 twins of scratch and balanced SLKD on 2 seeds
    assert len(names) == 2 * (7 + 1 + 3 + 5) + 3 * 2 + 2 * 3 + 2 * 2 + 3 * 3 + 2 * 2
    by_name = {j.run_dir.name: j.config for j in trains if j.run_dir.parent.name == "denoise25"}
    assert by_name["scratch_long_s1"]["train"]["iters"] == 42
    assert by_name["scratch_s1"]["train"]["iters"] == QUICK.student
    assert by_name["scratch_s1"]["role"] == "scratch" and by_name["slkd_s1"]["role"] == "distill"
    # identical data, iterations and seed; only the loss differs
    for run in ("fitnet_s1", "no_drl_s1", "teacher_b_is_a_s1"):
        a, b = by_name[run], by_name["slkd_s1"]
        assert a["data"] == b["data"] and a["train"] == b["train"] and a["seed"] == b["seed"] == 1
    # every SLKD run states its λ's (the paper's unless overridden), whatever the library default
    assert by_name["no_drl_s0"]["distill"] == {"method": "slkd", "drl": False,
                                               "loss_weights": {"kl": 0.0, "nc": 0.1, "et": 0.1}}
    assert by_name["slkd_s0"]["distill"]["loss_weights"] == {"kl": 0.5, "nc": 0.1, "et": 0.1}
    assert by_name["slkd_balanced_s0"]["distill"]["loss_weights"] == {"kl": 0.5, "nc": 0.01, "et": 0.03}
    assert by_name["fitnet_s0"]["distill"] == {"method": "fitnet", "loss_weights": {"feature": 1.0}}
    assert by_name["fitnet_balanced_s0"]["distill"] == {"method": "fitnet", "loss_weights": {"feature": 0.003}}
    derain = {j.run_dir.name: j.config for j in trains if j.run_dir.parent.name == "derain"}
    assert derain["slkd_balanced_s0"]["distill"]["loss_weights"] == {"kl": 0.5, "nc": 0.01, "et": 0.03}
    assert by_name["teacher_b"]["model"]["options"] == {"global_residual": False}
    # cross-architecture: the Restormer teachers of the denoise study distil a NAFNet student
    cross = next(j for j in trains if j.name == "denoise25-restormer-to-nafnet/slkd_s0")
    assert cross.config["model"]["name"] == "nafnet-sl-tiny"
    assert cross.config["teachers"]["a"] == {"name": "restormer-tiny",
                                             "weights": str(study.out / "denoise25" / "teacher_a")}
    assert cross.deps == ["denoise25/teacher_a", "denoise25/teacher_b"]
    naf_b = next(j for j in trains if j.name == "denoise25-nafnet/teacher_b")
    assert naf_b.config["model"]["name"] == "nafnet-tiny" and naf_b.deps == ["denoise25-nafnet/teacher_a"]
    # a bf16 twin differs from its float32 run in train.bf16 only
    for bf16, fp32 in (("scratch_bf16_s1", "scratch_s1"), ("slkd_balanced_bf16_s0", "slkd_balanced_s0")):
        twin = dict(by_name[bf16], name=fp32, train={**by_name[bf16]["train"]})
        assert twin["train"].pop("bf16") is True and "bf16" not in by_name[fp32]["train"]
        assert twin == by_name[fp32]
    # ablations are evaluated on CBSD68 only; main methods on CBSD68 and Kodak24
    evals = {j.name for j in study.jobs.values() if j.eval_out is not None}
    assert "denoise25/eval/no_nc_s0/Kodak24" not in evals
    assert "denoise25/eval/scratch_bf16_s0/CBSD68" in evals and "denoise25/eval/scratch_bf16_s0/Kodak24" not in evals
    assert {"denoise25/eval/slkd_s1/Kodak24", "derain/eval/slkd_s0/RealRain20",
            "denoise25/eval/teacher_a/PolyU100", "deblur/eval/input/Levin"} <= evals


def test_deraining_trains_on_rain100l_train_and_tests_on_rain100l_test(tmp_path):
    """Real rain pairs: 74 of the 84 Rain100L training pairs to train on, the other 10 (the same
    split everywhere) to validate on, the complete test split for the tables; never CBSD432,
    which holds 75 of the test backgrounds."""
    study = _plan(tmp_path, ["derain", "realworld"])
    trains = {j.run_dir.name: j for j in study.jobs.values() if j.config is not None and j.run_dir.parent.name == "derain"}
    assert set(trains) == {"teacher_a", "teacher_b", "scratch_s0", "slkd_s0", "slkd_balanced_s0"}
    for job in trains.values():
        train = job.config["data"]["train"]
        assert train["type"] == "paired" and train["roots"] == ["Rain100L/train"], job.name
        assert train["holdout"] == {"count": 10, "take": "rest"} and "exclude" not in train
    b = trains["teacher_b"].config
    assert b["data"]["val"] == [{"name": "Rain100L-val10", "type": "paired", "roots": ["Rain100L/train"],
                                 "holdout": {"count": 10, "take": "held"}}]
    assert b["eval"] == {"task": "reconstruct", "y_channel": True}
    for job in trains.values():  # every config is a valid training config
        prepare(job)
        assert load_config(job.config_path).data.train.holdout.take == "rest"
    evals = {j.name: j for j in study.jobs.values() if j.eval_out is not None and j.name.startswith("derain/")}
    test = evals["derain/eval/slkd_s0/Rain100L/test"]
    assert test.argv[test.argv.index("--data") + 1] == str(study.data / "Rain100L" / "test")
    assert test.argv[test.argv.index("--task") + 1] == "derain"  # Y channel
    assert test.eval_out.name == "slkd_s0__Rain100L-test.json"
    assert "derain/eval/input/Rain100L/test" in evals and "derain/eval/scratch_s0/RealRain20" in evals
    # the deraining study reads Rain100L (and RealRain20 for the no-reference scores), nothing else
    roots = {r for j in trains.values() for d in [j.config["data"]["train"], *j.config["data"]["val"]]
             for r in d["roots"]}
    assert roots == {"Rain100L/train"}
    read = {Path(j.argv[j.argv.index("--data") + 1]).relative_to(study.data).as_posix() for j in evals.values()}
    assert read == {"Rain100L/test", "RealRain20"}


def test_the_data_a_study_needs_is_checked_first(tmp_path, capsys):
    for folder in ("BSDS500", "CBSD68"):
        (tmp_path / folder).mkdir()
    assert data_root(str(tmp_path), ["denoise"]) == tmp_path.resolve()
    with pytest.raises(StudyError, match="no Rain100L/ folder"):
        data_root(str(tmp_path), ["derain"])
    code = main(["derain", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "no Rain100L/ folder" in capsys.readouterr().err


@pytest.mark.slow
def test_the_study_command_is_the_package(tmp_path):
    """BENCHMARKS.md and `make bench-quick` run `python -m benchmarks.study`; it is the study's CLI,
    and no other module name for it is left in the documents."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.study", "--help"], capture_output=True,
                          text=True, cwd=root, timeout=120)
    assert proc.returncode == 0 and "Rain100L/train" in proc.stdout and "--teachers-from" in proc.stdout
    assert "usage: python -m benchmarks.study " in proc.stdout
    assert "python -m benchmarks.study all --quick" in (root / "Makefile").read_text()
    for doc in ("README.md", "BENCHMARKS.md", "Makefile", "benchmarks/README.md"):
        path = root / doc
        assert not path.is_file() or "benchmarks.reproduce" not in path.read_text(), doc


def test_a_run_folder_with_other_settings_is_refused(tmp_path):
    study = _plan(tmp_path, ["denoise"])
    job = study.jobs["denoise25/slkd_s0"]
    assert prepare(job) == "new"
    (job.run_dir).mkdir(parents=True)
    (job.run_dir / "checkpoint.pt").write_bytes(b"x")
    assert prepare(job) == "resume"
    other = dict(job.config, seed=7)
    job.config_path.write_text(yaml.safe_dump(other))
    with pytest.raises(StudyError, match="other settings"):
        prepare(job)
    assert (job.run_dir / "checkpoint.pt").read_bytes() == b"x"  # nothing deleted


def test_finished_run_is_recognised_from_its_log(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "weights.pth").write_bytes(b"w")
    lines = [{"event": "start", "step": 0, "time": 100.0},
             {"event": "checkpoint", "step": 5, "time": 130.0},
             {"event": "checkpoint", "step": 10, "time": 160.5}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{cut")
    assert train_finished(run, 20) is None
    assert train_finished(run, 10) == pytest.approx(60.5)


def test_resumed_run_counts_the_time_of_every_process_that_kept_work(tmp_path):
    """A run stopped and resumed the next day: each process from its start to its last
    checkpoint (the steps after it were lost and redone), nothing for the night between."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "weights.pth").write_bytes(b"w")
    lines = [{"event": "start", "step": 0, "time": 100.0},
             {"event": "checkpoint", "step": 5, "time": 130.0},
             {"event": "train", "step": 7, "time": 145.0},           # lost at the kill
             {"event": "start", "step": 5, "time": 90_000.0, "resumed": True},
             {"event": "val", "step": 8, "time": 90_010.0},
             {"event": "checkpoint", "step": 10, "time": 90_040.0}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert train_finished(run, 10) == pytest.approx(30.0 + 40.0)


def test_lock_names_only_another_live_process(tmp_path):
    import os
    import subprocess
    import sys

    job = Job("j", ["eval"], eval_out=tmp_path / "eval" / "j.json")
    assert holder(job) is None  # no lock
    lock_path(job).parent.mkdir(parents=True)
    lock_path(job).write_text("not a pid")
    assert holder(job) is None
    lock_path(job).write_text(str(os.getpid()))
    assert holder(job) is None  # this process's own
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path(job).write_text(str(other.pid))
        assert holder(job) == other.pid
    finally:
        other.kill()
        other.wait()
    assert holder(job) is None  # died without removing its lock: stale, ignored
    run = Job("r", ["distill"], [], {}, tmp_path / "c.yaml", tmp_path / "run")
    assert lock_path(run) == tmp_path / "run" / ".study.lock"


@pytest.mark.slow
def test_job_run_by_another_study_process_waits_for_it(tmp_path, capsys):
    import subprocess
    import sys
    import threading

    job = Job("shared", ["profile", "--model", "res-sl-tiny", "--no-latency", "--size", "32", "32"],
              eval_out=tmp_path / "eval" / "shared.json")
    lock_path(job).parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    lock_path(job).write_text(str(other.pid))
    threading.Thread(target=other.wait, daemon=True).start()  # reaped when it ends, as a non-child is
    try:
        assert run_jobs([job], parallel=1, threads=1, env={}) == {"shared": "done"}
    finally:
        other.kill()
        other.wait()
    assert f"wait shared: another study process (pid {other.pid}) is running it" in capsys.readouterr().out
    assert other.returncode == 0  # it had finished on its own: the job waited for it
    assert job.eval_out.is_file() and not lock_path(job).exists()


@pytest.mark.slow
def test_failed_job_skips_its_dependents_and_others_go_on(tmp_path):
    bad = Job("bad", ["eval", "--model", "input", "--data", str(tmp_path / "missing"), "--task",
                         "denoise", "--json"], eval_out=tmp_path / "e" / "eval" / "bad.json")
    after = Job("after", ["eval", "--help"], deps=["bad"], eval_out=tmp_path / "e" / "eval" / "after.json")
    ok = Job("ok", [ "profile", "--model", "res-sl-tiny", "--no-latency", "--size", "32", "32"],
                eval_out=tmp_path / "e" / "eval" / "ok.json")
    state = run_jobs([bad, after, ok], parallel=2, threads=1, env={})
    assert state == {"bad": "failed", "after": "skipped", "ok": "done"}
    assert not bad.eval_out.exists() and ok.eval_out.is_file()
    assert "data folder not found" in bad.log.read_text()


def _eval(path: Path, psnrs: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"name": n, "psnr": v, "ssim": 0.5} for n, v in psnrs.items()]
    mean = sum(psnrs.values()) / len(psnrs)
    path.write_text(json.dumps({"count": len(rows), "mean": {"psnr": mean, "ssim": 0.5}, "images": rows}))


def test_paired_comparison_and_verdicts(tmp_path):
    study = ReproductionStudy(tmp_path, tmp_path, FULL, (0, 1, 2))
    ev = tmp_path / "denoise25" / "eval"
    # SLKD beats "a" on every seed by more than either family's seed spread
    for s, (x, y) in enumerate([(30.0, 29.5), (30.2, 29.6), (30.1, 29.7)]):
        _eval(ev / f"slkd_s{s}__CBSD68.json", {"i1": x + 0.1, "i2": x - 0.1})
        _eval(ev / f"a_s{s}__CBSD68.json", {"i1": y + 0.3, "i2": y - 0.3})
        _eval(ev / f"b_s{s}__CBSD68.json", {"i1": x + 0.1 + (0.05 if s % 2 else -0.05), "i2": x - 0.1})
    runs = [f"slkd_s{s}" for s in range(3)]
    c = compare(study, "denoise25", runs, [f"a_s{s}" for s in range(3)], "CBSD68")
    assert c["psnr_diff_per_seed"] == pytest.approx([0.5, 0.6, 0.4])
    assert c["psnr_diff_mean"] == pytest.approx(0.5)
    # per image: i1 gains 0.5-0.2, i2 gains 0.5+0.2 on average over seeds
    assert c["per_image_mean_diff"] == pytest.approx(0.5) and c["images_better"] == 2
    assert c["verdict"] == "better, beyond seed noise"
    c = compare(study, "denoise25", runs, [f"b_s{s}" for s in range(3)], "CBSD68")
    assert c["verdict"] == "within seed noise"
    c = compare(study, "denoise25", [f"a_s{s}" for s in range(3)], runs, "CBSD68")
    assert c["verdict"] == "worse, beyond seed noise"
    assert compare(study, "denoise25", runs[:1], ["a_s0"], "CBSD68")["verdict"] == "one seed: no claim possible"
    assert compare(study, "denoise25", ["zz_s0"], ["a_s0"], "CBSD68") is None


def test_tables_from_a_partial_study(tmp_path):
    """The summary and its Markdown tables work with whatever runs have finished."""
    study = ReproductionStudy(tmp_path, tmp_path, FULL, (0, 1), (0,))
    ev = tmp_path / "denoise25" / "eval"
    for s, (x, y) in enumerate([(27.0, 27.4), (27.1, 27.3)]):
        _eval(ev / f"slkd_s{s}__CBSD68.json", {"i1": x, "i2": x})
        _eval(ev / f"scratch_s{s}__CBSD68.json", {"i1": y, "i2": y})
    _eval(ev / "no_nc_s0__CBSD68.json", {"i1": 27.2, "i2": 27.2})
    _eval(ev / "teacher_a__CBSD68.json", {"i1": 28.0, "i2": 28.0})
    summary = summarise_denoise(study, ablations=True)
    rows = summary["table"]["CBSD68"]
    assert rows["scratch"]["psnr"]["mean"] == pytest.approx(27.35)
    assert rows["fitnet"] is None and summary["table"]["Kodak24"]["slkd"] is None
    assert summary["slkd_minus"]["CBSD68"]["no_nc"]["psnr_diff_per_seed"] == pytest.approx([-0.2])
    text = markdown({"denoise": summary})
    assert "| scratch | 27.35 ± 0.07 (27.30–27.40)" in text
    assert "-0.30 [-0.40, -0.20]; 0/2 images; worse, beyond seed noise" in text
    assert "| SLKD w/o L_NC | 27.20 (1 seed)" in text and "FitNet" not in text
    # precision: the bf16 twin paired with its float32 run on the ablations' seed
    _eval(ev / "scratch_bf16_s0__CBSD68.json", {"i1": 27.5, "i2": 27.3})
    prec = summarise_precision(study)
    assert prec["slkd_balanced_bf16"] == {"data": "CBSD68", "float32": None, "bf16": None, "bf16_minus_float32": None}
    assert prec["scratch_bf16"]["bf16_minus_float32"]["psnr_diff_per_seed"] == pytest.approx([0.0])
    text = markdown({"precision": prec})
    assert "| scratch | CBSD68 | 27.40 (1 seed) | 27.40 (1 seed) | +0.00 [+0.00]; 1/2 images; one seed" in text
    assert "SLKD balanced" not in text


def test_missing_data_folder_is_a_plain_error(tmp_path, capsys):
    code = main(["denoise", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "data folder not found" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_longer_schedule_reuses_another_studys_teachers(tmp_path):
    """``--methods`` picks students and ``--teachers-from`` points them at another study's
    teachers and input evaluations, so a longer schedule is paired with the same teachers."""
    first = tmp_path / "study"
    study = ReproductionStudy(tmp_path / "long", tmp_path / "data", replace_iters(QUICK, 99), (0,),
                   methods=("scratch", "slkd_balanced"), teachers_from=first)
    build_plan(["denoise"], study)  # no scratch-long: no step timing, no scratch_long.json
    assert not (study.out / "denoise25" / "scratch_long.json").exists()
    trains = {j.name: j for j in study.jobs.values() if j.config is not None}
    assert set(trains) == {"denoise25/teacher_a", "denoise25/teacher_b", "denoise25/scratch_s0",
                           "denoise25/slkd_balanced_s0"}
    assert trains["denoise25/teacher_a"].run_dir == first / "denoise25" / "teacher_a"
    assert trains["denoise25/teacher_a"].config["train"]["iters"] == QUICK.teacher_a
    student = trains["denoise25/slkd_balanced_s0"]
    assert student.run_dir == study.out / "denoise25" / "slkd_balanced_s0"
    assert student.config["train"]["iters"] == 99
    assert student.config["teachers"]["b"]["weights"] == str(first / "denoise25" / "teacher_b")
    assert student.deps == ["denoise25/teacher_a", "denoise25/teacher_b"]
    evals = {j.name: j.eval_out for j in study.jobs.values() if j.eval_out is not None}
    assert evals["denoise25/eval/teacher_a/CBSD68"].parent == first / "denoise25" / "eval"
    assert evals["denoise25/eval/scratch_s0/CBSD68"].parent == study.out / "denoise25" / "eval"
    # the summary reads teacher and input from the shared folder, students from its own
    _eval(first / "denoise25" / "eval" / "teacher_a__CBSD68.json", {"i1": 30.0, "i2": 30.0})
    _eval(study.out / "denoise25" / "eval" / "scratch_s0__CBSD68.json", {"i1": 28.0, "i2": 28.0})
    rows = summarise_denoise(study, ablations=False)["table"]["CBSD68"]
    assert rows["teacher_a"]["psnr"] == 30.0 and rows["scratch"]["psnr"]["mean"] == 28.0
    assert set(rows) == {"input", "teacher_a", "scratch", "slkd_balanced"}


def replace_iters(scale: Scale, iters: int) -> Scale:
    from dataclasses import replace

    return replace(scale, student=iters)


def test_bad_methods_and_teacher_folder_are_plain_errors(tmp_path, capsys):
    (tmp_path / "BSDS500").mkdir()
    (tmp_path / "CBSD68").mkdir()
    with pytest.raises(SystemExit):
        main(["denoise", "--methods", "nonsense", "--data", str(tmp_path)])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err
    code = main(["denoise", "--teachers-from", str(tmp_path / "missing"), "--data", str(tmp_path),
                    "--out", str(tmp_path / "o")])
    assert code == 2 and "--teachers-from: no such study folder" in capsys.readouterr().err


def test_both_studies_speak_one_vocabulary():
    """One Task, one Scale, one Study for the reproduction and the pays study: the reproduction
    states a task's data, the pays study reads it from the committed teacher's config, and both
    give the same three things (training data, validation set, eval node)."""
    from dataclasses import replace

    from benchmarks.study import pays
    from benchmarks.study.configs import TASKS, Task
    from benchmarks.study.scheduler import Study
    from benchmarks.study.settings import FULL

    assert all(type(t) is Task for t in (*TASKS.values(), *pays.TASKS.values()))
    assert issubclass(ReproductionStudy, Study) and issubclass(pays.PaysStudy, Study)
    assert FULL == Scale() and pays.QUICK == replace(FULL, patch=16, batch=2, eval_limit=2)
    stated, read = TASKS["derain"].setting(), pays.TASKS["derain"].setting()
    assert stated["train"] == read["train"] == {"type": "paired", "roots": ["Rain100L/train"],
                                                "holdout": {"count": 10, "take": "rest"}}
    assert stated["val"]["holdout"] == read["val"]["holdout"] == {"count": 10, "take": "held"}
    assert stated["eval"] == {"task": "reconstruct", "y_channel": True}  # Teacher B's check
    assert read["eval"] == {"task": "derain"}                           # the students' convention
    assert pays.TASKS["derain"].sets == ("Rain100L",) and TASKS["derain"].sets == ("Rain100L/test",)


def test_a_task_config_with_other_than_one_validation_set_is_refused(tmp_path, monkeypatch):
    from benchmarks.study import configs
    from benchmarks.study.configs import Task

    monkeypatch.setattr(configs, "ROOT", tmp_path)
    (tmp_path / "t.yaml").write_text("data: {train: {type: paired, roots: [x], patch_size: 8}, val: []}\n")
    with pytest.raises(StudyError, match="t.yaml: expected one validation set, found 0"):
        Task("k", (("x", "denoise"),), config="t.yaml").setting()


def _run_folder(run: Path, kind: str, iters: int) -> None:
    """A run folder as a stop leaves it: ``unstarted`` (run files, no checkpoint), ``interrupted``
    (a checkpoint before ``iters``) or ``finished`` (a checkpoint at ``iters`` and the weights)."""
    run.mkdir(parents=True)
    events = [{"event": "start", "step": 0, "time": 100.0}]
    (run / "config.yaml").write_text("name: x\n")
    if kind in ("interrupted", "finished"):
        step = iters if kind == "finished" else iters // 2
        events.append({"event": "checkpoint", "step": step, "time": 112.5})
        (run / "checkpoint.pt").write_bytes(b"c")
    if kind == "finished":
        (run / "weights.pth").write_bytes(b"w")
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.mark.parametrize("kind, decided", [("unstarted", "new"), ("interrupted", "resume"), ("finished", "done")])
def test_the_study_decides_a_run_as_compress_decides_a_stage(tmp_path, kind, decided):
    """One rule for a study's runs and slkd compress's stages (slkd.engine.stages.begin_stage):
    the finished run is reused with its log's seconds, the interrupted one resumed, and the
    unstarted one's files (no trained weights) cleared so that it starts again."""
    from slkd.engine.stages import begin_stage

    study = _plan(tmp_path, ["denoise"])
    job = study.jobs["denoise25/scratch_s0"]
    iters = job.config["train"]["iters"]
    library = tmp_path / "library" / "run"
    _run_folder(job.run_dir, kind, iters)
    _run_folder(library, kind, iters)
    assert prepare(job) == begin_stage(library, iters).how == decided
    left = sorted(p.name for p in job.run_dir.iterdir() if p.name != "study.json" and not p.name.startswith("."))
    assert left == sorted(p.name for p in library.iterdir() if not p.name.startswith("."))
    if kind == "unstarted":
        assert left == []
    if kind == "finished":
        assert json.loads((job.run_dir / "study.json").read_text())["seconds"] == 12.5
        assert train_finished(job.run_dir, iters) == 12.5


def test_compress_skips_a_finished_run_as_the_study_does(tmp_path):
    """The stage runner of slkd compress (slkd.engine.stages.train_stages) on a run folder the
    study has decided finished: skipped, with the seconds the study recorded."""
    from slkd.engine.compress.plan import TIMES_FILE, WORDS
    from slkd.engine.stages import build_stage, train_stages
    from slkd.engine.tasks import supervised_task

    study = _plan(tmp_path, ["denoise"])
    job = study.jobs["denoise25/scratch_s0"]
    iters = job.config["train"]["iters"]
    _run_folder(job.run_dir, "finished", iters)
    assert prepare(job) == "done"
    stage = build_stage(job.run_dir.name, "the scratch student", job.config, supervised_task)
    lines: list[str] = []
    seconds = train_stages([stage], job.run_dir.parent, total=1, words=WORDS, times_file=TIMES_FILE, device="cpu",
                           log=lines.append)
    assert seconds == {"scratch_s0": 12.5} and train_finished(job.run_dir, iters) == 12.5
    assert lines[0] == f"[1/1] the scratch student, {iters} iterations (resuming / reusing)"
    assert lines[1].strip().startswith(f"finished earlier ({iters} iterations in")
    stored = job.run_dir.parent / "configs" / "scratch_s0.yaml"
    assert stored == job.config_path and stored.read_text() == yaml.safe_dump(job.config, sort_keys=False)
