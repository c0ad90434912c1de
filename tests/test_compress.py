"""``slkd compress``: the pipeline end to end on small images made here (derain-like pairs in a
folder of two sets; clean images for denoising), reruns that skip or resume, and one test per
bad input (one line, before anything is trained or written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slkd.cli.main import main
from slkd.data.folders import scan_eval_sets
from slkd.data.image_io import write_image
from slkd.engine.compress import PLANS, SETTINGS_FILE, Job, prepare
from slkd.engine.config import to_dict
from slkd.engine.trainer import Trainer
from slkd.errors import SlkdError
from slkd.models import build_model, count_macs, count_parameters, default_student, get_preset, list_models
from slkd.models import load_weights, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

#: the smallest run of the whole pipeline: the pipeline, not the quality, is under test; with
#: SLKD (one word from the default method), the method with the most stages (Teacher B too)
TINY = ["--quick", "--iters", "2", "--patch", "16", "--batch", "2", "--method", "slkd"]


def _image(rng, h: int, w: int) -> np.ndarray:
    smooth = np.cumsum(rng.normal(size=(h, w, 3)), axis=1)
    return (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)


def _write(path: Path, array: np.ndarray) -> None:
    write_image(path, torch.from_numpy(array).permute(2, 0, 1).float())


def _rain_pairs(folder: Path, n: int, seed: int, size=(32, 40)) -> None:
    """input/+target/ pairs: bright streaks on smooth backgrounds."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        clean = _image(rng, *size)
        rainy = clean.copy()
        rainy[:, i % 5::6] = np.clip(rainy[:, i % 5::6] + 0.4, 0, 1)
        _write(folder / "target" / f"{i}.png", clean)
        _write(folder / "input" / f"{i}.png", rainy)


def _clean(folder: Path, n: int, seed: int, size=(32, 40)) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        _write(folder / f"img{i}.png", _image(rng, *size))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/ (4 pairs), val/ (two sets of 2 pairs, as Restormer's Datasets/test/), clean/
    train and val folders, and a tiny teacher's weights."""
    root = tmp_path_factory.mktemp("compress-data")
    _rain_pairs(root / "train", 4, seed=0)
    _rain_pairs(root / "val" / "SetA", 2, seed=1)
    _rain_pairs(root / "val" / "SetB", 2, seed=2)
    _clean(root / "clean" / "train", 3, seed=3)
    _clean(root / "clean" / "val", 2, seed=4)
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), root / "teacher.pth")
    return root


def _argv(data: Path, out: Path, *extra: str, task="derain", train="train", val="val") -> list[str]:
    return ["compress", "--teacher", f"restormer-tiny:{data / 'teacher.pth'}", "--task", task,
            "--train", str(data / train), "--val", str(data / val), "--out", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def derain_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress-run") / "out"
    assert main(_argv(data, out, "--compare-scratch")) == 0
    return out


def _eval_json(cli, *argv) -> dict:
    result = cli("eval", *argv, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_compress_quick_derain_end_to_end(derain_run, data, cli):
    out = derain_run
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["input", "teacher_a", "teacher_b", "student_slkd", "student_scratch"]
    assert summary["settings"]["student"] == "res-sl-tiny"  # the preset sized against restormer-tiny
    assert summary["settings"]["convention"].startswith("Y (BT.601)")  # deraining's convention
    assert list(summary["evaluation"]["sets"]) == ["SetA", "SetB"]
    c = summary["comparison"]
    assert c["params_reduction"] >= 0.8 and c["macs_reduction"] >= 0.8
    # the scores are those of `slkd eval` on the same set with the written student weights
    for name in ("SetA", "SetB"):
        means = summary["evaluation"]["sets"][name]["means"]
        student = _eval_json(cli, "--model", "res-sl-tiny", "--weights", out / "student.safetensors",
                             "--data", data / "val" / name, "--task", "derain")
        assert student["convention"]["y_channel"] is True
        assert means["student_slkd"]["psnr"] == pytest.approx(student["mean"]["psnr"], abs=1e-9)
        inputs = _eval_json(cli, "--model", "input", "--data", data / "val" / name, "--task", "derain")
        assert means["input"]["ssim"] == pytest.approx(inputs["mean"]["ssim"], abs=1e-9)
    pooled = summary["evaluation"]["means"]["student_slkd"]["psnr"]
    per_set = [summary["evaluation"]["sets"][n]["means"]["student_slkd"]["psnr"] for n in ("SetA", "SetB")]
    assert pooled == pytest.approx(sum(per_set) / 2)  # two images in each set
    # files: weights of the student alone, ONNX, report with its pictures, configs of every stage
    load_weights(build_model("res-sl-tiny"), out / "student.safetensors")
    assert (out / "student.onnx").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "### SetA (2 image(s))" in report and "| Teacher A | restormer-tiny |" in report
    assert (out / "grid.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000
    for stage in ("teacher_b", "student_slkd", "student_scratch"):
        assert (out / "configs" / f"{stage}.yaml").is_file() and (out / stage / "weights.pth").is_file()
    teacher_b = (out / "teacher_b" / "config.yaml").read_text()
    assert "y_channel: true" in teacher_b  # Teacher B is validated as deraining is scored
    assert (out / "images" / "student_slkd" / "SetA" / "0.png").is_file()


@pytest.mark.slow
def test_compress_rerun_skips_finished_stages(derain_run, data, capsys):
    out = derain_run
    before = json.loads((out / "summary.json").read_text())
    stamps = {s: (out / s / "weights.pth").stat().st_mtime_ns for s in ("teacher_b", "student_slkd")}
    capsys.readouterr()
    assert main(_argv(data, out, "--compare-scratch")) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier") == 3
    assert "training teacher_b" not in err and "training student_" not in err
    assert {s: (out / s / "weights.pth").stat().st_mtime_ns for s in stamps} == stamps
    after = json.loads((out / "summary.json").read_text())
    assert after["evaluation"]["means"] == before["evaluation"]["means"]


@pytest.mark.slow
def test_compress_refuses_other_settings_in_its_folder(derain_run, data, capsys):
    code = main(_argv(data, derain_run, "--compare-scratch", "--seed", "1"))
    err = capsys.readouterr().err
    assert code == 2 and "other settings" in err and "seed: 0 → 1" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_compress_resumes_an_interrupted_stage(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    original = Trainer._train_step

    def stop_in_the_student(self, batch):
        if self.run_dir.name == "student_slkd" and self.step == 1:
            raise KeyboardInterrupt  # as Ctrl-C: the trainer saves step 1 and stops
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", stop_in_the_student)
    assert main(_argv(data, out)) == 2
    assert "interrupted at step 1" in capsys.readouterr().err
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(Trainer, "_train_step", original)
    assert main(_argv(data, out)) == 0
    err = capsys.readouterr().err
    assert "finished earlier (1 iterations" in err  # Teacher B is not trained again
    assert "resuming at step 1" in err
    steps = [json.loads(line)["step"] for line in (out / "student_slkd" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "train"]
    assert steps == [1, 2]  # each step trained and logged once
    assert json.loads((out / "summary.json").read_text())["models"]["student_slkd"]["train_iters"] == 2


@pytest.mark.slow
def test_compress_quick_denoise_on_clean_images(data, tmp_path, cli):
    out = tmp_path / "out"
    result = cli(*_argv(data, out, task="denoise", train="clean/train", val="clean/val"))
    assert result.code == 0, result.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["sigma"] == 25.0
    assert summary["settings"]["convention"].startswith("RGB")
    assert "gaussian_noise" in (out / "student_slkd" / "config.yaml").read_text()
    # the same seeded test noise as `slkd eval` adds to clean images
    inputs = _eval_json(cli, "--model", "input", "--data", data / "clean" / "val", "--task", "denoise",
                        "--sigma", "25")
    assert summary["evaluation"]["means"]["input"]["psnr"] == pytest.approx(inputs["mean"]["psnr"], abs=1e-9)
    assert "noisy input" in result.out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_compress_runs_under_torchrun_unchanged(data, tmp_path):
    """Two gloo ranks train every stage in one process group (re-creating the group for each
    stage hung the second one); rank 0 alone evaluates and writes the report."""
    out = tmp_path / "out"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "slkd.cli.main",
                           *_argv(data, out, "--device", "cpu")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("[1/4] Teacher B") == 1  # rank 0 speaks for both
    for stage in ("teacher_b", "student_slkd"):
        assert json.loads((out / stage / "environment.json").read_text())["world_size"] == 2
    assert json.loads((out / "summary.json").read_text())["models"]["student_slkd"]["train_iters"] == 2


# ---------------------------------------------------------------------------------- bad input
def _one_line_refusal(cli, argv, fragment, out: Path) -> str:
    try:
        result = cli(*argv)
    except SystemExit as exc:  # options refused while parsing
        pytest.fail(f"argparse refused {argv}: {exc}")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("slkd compress: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.err and not out.exists()  # nothing was written
    return lines[0]


@pytest.fixture
def bad(data, tmp_path) -> Path:
    """Broken copies of the data: unpaired names, a pair of two sizes, small images."""
    _rain_pairs(tmp_path / "unpaired", 2, seed=5)
    (tmp_path / "unpaired" / "input" / "1.png").rename(tmp_path / "unpaired" / "input" / "x1.png")
    _rain_pairs(tmp_path / "sizes", 2, seed=6)
    _write(tmp_path / "sizes" / "input" / "1.png", _image(np.random.default_rng(7), 32, 32))
    _rain_pairs(tmp_path / "small", 2, seed=8, size=(24, 24))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    torch.manual_seed(0)
    save_weights(build_model("res-sl-tiny"), tmp_path / "student.pth")
    return tmp_path


@pytest.mark.parametrize("change, fragment", [
    ({"train": "{bad}/missing"}, "training data {bad}/missing: folder not found"),
    ({"val": "{bad}/missing"}, "validation data {bad}/missing: folder not found"),
    ({"train": "{bad}/unpaired"}, "1 degraded image(s) have no clean image of the same name: x1.png"),
    ({"val": "{bad}/unpaired"}, "have no clean image of the same name: x1.png"),
    ({"train": "{bad}/sizes"}, "1 pair(s) in {bad}/sizes differ in size: 1.png is 32×32"),
    ({"val": "{bad}/sizes"}, "1.png is 32×32 but its target 1.png is 40×32"),
    ({"teacher": "restormr:{data}/teacher.pth"}, "unknown model 'restormr' (did you mean 'restormer'?)"),
    ({"teacher": "restormer-tiny:{bad}/student.pth"}, "student.pth does not fit this model"),
    ({"teacher": "restormer:{data}/teacher.pth"}, "teacher.pth does not fit this model"),
    ({"teacher": "restormer-tiny:{bad}/none.pth"}, "weights not found: {bad}/none.pth"),
    ({"teacher": "restormer-tiny:"}, "no weights after the colon"),
    ({"teacher": "uformer-s:{data}/teacher.pth"}, "no student preset is sized against 'uformer-s'"),
    ({"student": "res-sl-tinyy"}, "unknown model 'res-sl-tinyy'"),
    ({"student": "restormer"}, "--student restormer is not smaller than the teacher restormer-tiny"),
    ({"train": "{data}/clean/train"}, "holds clean images only, no degraded/clean pairs"),
    ({"val": "{data}/clean/val"}, "holds clean images only; --task derain needs degraded/clean pairs"),
    ({"sigma": "15"}, "--sigma is for clean images"),
    ({"patch": "32", "train": "{bad}/small"}, "smaller than the 32×32 patch"),
    ({"patch": "12"}, "--patch must be a multiple of 8"),
])
def test_each_bad_input_is_one_line_before_training(data, bad, cli, change, fragment):
    options = {"teacher": f"restormer-tiny:{data / 'teacher.pth'}", "train": str(data / "train"),
               "val": str(data / "val"), "patch": "16"}
    options.update({k: v.format(bad=bad, data=data) for k, v in change.items()})
    out = bad / "out"
    argv = ["compress", "--task", "derain", "--out", str(out), "--quick", "--iters", "2"]
    for key, value in options.items():
        argv += [f"--{key}", value]
    _one_line_refusal(cli, argv, fragment.format(bad=bad, data=data), out)


def test_an_out_folder_holding_other_files_or_inside_the_data_is_refused(data, bad, cli):
    argv = _argv(data, bad / "foreign")
    _one_line_refusal(cli, argv, "holds files slkd did not write there (notes.txt)", bad / "nothing")
    assert (bad / "foreign" / "notes.txt").read_text() == "mine"
    inside = data / "val" / "SetA" / "out"
    _one_line_refusal(cli, _argv(data, inside), "is inside", inside)


def test_an_out_folder_of_a_run_with_other_settings_is_refused(data, tmp_path, cli):
    out = tmp_path / "out"
    job = Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
              val=data / "val", out=out, method="slkd", plan=PLANS["quick"].with_student_iters(2))
    prep = prepare(job, log=None)
    out.mkdir()  # an earlier run's settings file, as the pipeline writes it first
    (out / SETTINGS_FILE).write_text(json.dumps({"settings": prep.settings}))
    result = cli(*_argv(data, out, "--method", "fitnet"))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "holds a run with other settings (method: 'slkd' → 'fitnet'" in result.err
    assert sorted(p.name for p in out.iterdir()) == [SETTINGS_FILE]  # nothing was written
    # a folder written before --init existed held randomly initialised students: continuing it
    # with --init random is the same run, the new default (a cut of the teacher) is not
    old = {k: v for k, v in prep.settings.items() if k != "init"}
    (out / SETTINGS_FILE).write_text(json.dumps({"settings": old}))
    assert prepare(Job(**{**job.__dict__, "init": "random"}), log=None).settings["init"] == "random"
    with pytest.raises(SlkdError, match="init: 'random' → 'teacher'"):
        prepare(job, log=None)


def test_prepare_checks_without_writing_and_plans_the_stages(data, tmp_path):
    out = tmp_path / "out"
    job = Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
              val=data / "val", out=out, method="fitnet", plan=PLANS["quick"].with_student_iters(10))
    prep = prepare(job, log=None)
    assert not out.exists()
    # FitNet runs Teacher A only: no Teacher B stage (the method's teacher_roles())
    assert [s.name for s in prep.stages] == ["student_fitnet"]
    assert prep.stages[0].cfg.train.iters == 10 and prep.stages[0].cfg.teachers.b is None
    assert list(prep.eval_sets) == ["SetA", "SetB"]
    slkd = prepare(Job(**{**job.__dict__, "method": "slkd"}), log=None)
    assert [s.name for s in slkd.stages] == ["teacher_b", "student_slkd"]
    assert slkd.stages[0].cfg.train.iters == 4  # Teacher B: 40 % of the student's, as --quick


def test_prepare_decides_each_model_once_and_reads_the_teacher_file_once(data, tmp_path, monkeypatch):
    """What prepare decides (preset, options, weights of every network) is what the report
    loads; Teacher A's file is read once, its variant and its weights from one read."""
    from slkd.models import checkpoint

    reads = []
    real = checkpoint._read_file
    monkeypatch.setattr(checkpoint, "_read_file", lambda path: reads.append(path) or real(path))
    job = Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
              val=data / "val", out=tmp_path / "out", method="slkd", compare_scratch=True,
              plan=PLANS["quick"].with_student_iters(10))
    prep = prepare(job, log=None)
    assert reads == [data / "teacher.pth"]
    out = tmp_path / "out"
    assert {n: (m.preset, m.options, m.weights, m.trained) for n, m in prep.models.items()} == {
        "teacher_a": ("restormer-tiny", {}, (data / "teacher.pth").resolve(), False),
        "teacher_b": ("restormer-tiny", {"global_residual": False}, out / "teacher_b", True),
        "student_slkd": ("res-sl-tiny", {}, out / "student_slkd", True),
        "student_scratch": ("res-sl-tiny", {}, out / "student_scratch", True)}
    distill = next(s for s in prep.stages if s.name == "student_slkd").config
    assert distill["teachers"]["b"] == {"name": "restormer-tiny", "weights": str((out / "teacher_b").resolve()),
                                        "options": {"global_residual": False}}
    with checkpoint.read_once():  # as a job reads: each file once, however often it is loaded
        for _ in range(3):
            checkpoint.read_state_dict(data / "teacher.pth")
    assert len(reads) == 2


def test_students_start_from_a_cut_of_the_teacher_where_the_networks_allow_it(data, tmp_path, cli):
    job = Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
              val=data / "val", out=tmp_path / "out", method="fitnet", compare_scratch=True,
              plan=PLANS["quick"].with_student_iters(10))
    auto = prepare(job, log=None)  # the default: Res-SL students are cut from their Restormer
    assert auto.settings["init"] == "teacher"
    for stage in auto.stages:  # the distilled student and its scratch twin alike
        cut = stage.cfg.model.init_from_teacher
        assert cut.name == "restormer-tiny" and Path(cut.weights) == data / "teacher.pth"
    random = prepare(Job(**{**job.__dict__, "init": "random"}), log=None)
    assert random.settings["init"] == "random"
    assert all(s.cfg.model.init_from_teacher is None for s in random.stages)
    # a student of another family cannot be cut: auto falls back with a note, "teacher" refuses
    other = prepare(Job(**{**job.__dict__, "student": "nafnet-sl-tiny"}), log=None)
    assert other.settings["init"] == "random" and any("cannot be cut" in n for n in other.notes)
    out = tmp_path / "refused"
    _one_line_refusal(cli, _argv(data, out, "--student", "nafnet-sl-tiny", "--init", "teacher"),
                      "--init teacher: nafnet-sl-tiny cannot be cut from restormer-tiny", out)
    with pytest.raises(SlkdError, match="unknown init 'warm'"):
        prepare(Job(**{**job.__dict__, "init": "warm"}), log=None)


# ---------------------------------------------------------------------------------- presets
TEACHERS = [n for n in list_models() if get_preset(n).student]


@pytest.mark.parametrize("teacher", TEACHERS)
def test_each_default_student_is_at_least_80_percent_smaller(teacher):
    student = default_student(teacher)
    assert get_preset(student).teacher is not None  # a student preset
    with torch.device("meta"):
        t, s = build_model(teacher), build_model(student)
    assert 1 - count_parameters(s) / count_parameters(t) >= 0.8
    assert 1 - count_macs(s, (1, 3, 256, 256), device="meta").total / \
        count_macs(t, (1, 3, 256, 256), device="meta").total >= 0.8


def test_teachers_without_a_default_student_say_so():
    for name in ("uformer-s", "restormer-denoise-gray", "drsformer-no-mefc", "nafnet-gopro-32"):
        with pytest.raises(SlkdError, match="no student preset is sized against"):
            default_student(name)
    with pytest.raises(SlkdError, match="is itself a student preset"):
        default_student("res-sl")


def test_a_folder_of_sets_is_read_set_by_set(data, tmp_path):
    sets = scan_eval_sets(data / "val")
    assert list(sets) == ["SetA", "SetB"] and all(s.paired for s in sets.values())
    assert list(scan_eval_sets(data / "val" / "SetA")) == ["SetA"]
    (tmp_path / "sots" / "hazy").mkdir(parents=True)
    (tmp_path / "sots" / "gt").mkdir()
    _write(tmp_path / "sots" / "gt" / "1400.png", _image(np.random.default_rng(0), 16, 16))
    _write(tmp_path / "sots" / "hazy" / "1400_1.png", _image(np.random.default_rng(1), 16, 16))
    folder = scan_eval_sets(tmp_path / "sots")["sots"]  # RESIDE's own SOTS: hazy/ + gt/
    assert folder.layout == "paired:hazy/gt" and folder.items[0].clean.name == "1400.png"


# ---------------------------------------------------------------------------------- whose folder
#: the fastest job: FitNet trains the student alone (no Teacher B), two iterations
FAST = ["--quick", "--iters", "2", "--patch", "16", "--batch", "2", "--method", "fitnet"]


def _fast(data: Path, out: Path, *extra: str) -> list[str]:
    return [*_argv(data, out)[:-len(TINY)], *FAST, *extra]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_without_a_job_record_is_refused_whatever_its_files_are_called(data, tmp_path, cli):
    """A user's folder holding report.md, summary.json and configs/student_fakd.yaml was
    overwritten without a word (the names are those compress writes), and `--out ~` started
    writing into the home folder: a folder that holds anything and no job record is not ours."""
    mine = tmp_path / "mine"
    for name, text in (("report.md", "my report"), ("summary.json", "{}"), ("configs/student_fakd.yaml", "a: 1")):
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text(text)
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / ".bashrc").write_text("export PATH")
    for folder in (mine, home):
        before = _files(folder)
        result = cli(*_fast(data, folder))
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1, result.err
        assert lines[0].startswith(f"slkd compress: error: --out {folder} holds files slkd did not write there")
        assert "no record of an slkd job (compress.json)" in lines[0]
        assert _files(folder) == before  # nothing written, not even a lock file
    # an empty folder and a new one are fine (prepare writes nothing)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new"):
        job = Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
                  val=data / "val", out=out, method="fitnet", plan=PLANS["quick"].with_student_iters(2))
        assert prepare(job, log=None).out == out
    assert not (tmp_path / "new").exists() and not any((tmp_path / "empty").iterdir())


def test_an_out_folder_under_a_file_is_refused_up_front(data, tmp_path, cli):
    weights = tmp_path / "file.pth"
    weights.write_bytes(b"weights")
    _one_line_refusal(cli, _fast(data, weights / "sub"), f"--out {weights}/sub is under {weights}, which is a file",
                      weights / "sub")


def test_a_second_writer_of_a_job_folder_or_of_a_stage_folder_is_refused(data, tmp_path, cli, holder):
    """Two identical compress commands into one --out raced: the second resumed from the
    first's checkpoint while the first kept training. The job folder is locked for the whole
    job and each stage's run folder for its stage; the refusal names the folder and the PID and
    suggests no option compress lacks."""
    out = tmp_path / "out"
    other = holder(out)
    result = cli(*_fast(data, out))
    line = result.err.strip().splitlines()[-1]
    assert result.code == 2 and "Traceback" not in result.err
    assert line.startswith(f"slkd compress: error: {out} is being written by another process (PID {other.pid}")
    assert "--resume" not in line and "output_dir" not in line
    assert not (out / SETTINGS_FILE).exists()  # the job record is written after the lock only
    other.kill()
    (out / SETTINGS_FILE).write_text(json.dumps({"settings": None}))  # a job's folder, claimed
    stage = holder(out / "student_fitnet")  # e.g. `slkd distill --config out/configs/…` running
    result = cli(*_fast(data, out))
    line = result.err.strip().splitlines()[-1]
    assert result.code == 2 and f"{out / 'student_fitnet'} is being written by another process (PID {stage.pid}" in line
    assert json.loads((out / SETTINGS_FILE).read_text())["settings"]["method"] == "fitnet"
    assert not (out / "student_fitnet" / "config.yaml").exists()
    stage.kill()


def test_the_same_teacher_by_a_relative_or_an_absolute_path_is_one_job(data, tmp_path, monkeypatch):
    """A rerun naming the teacher by another path was refused as "changed settings", and the
    stored stage configs held cwd-relative teacher paths (usable only from the folder they were
    made in): the job record and the stage configs hold absolute paths."""
    out = tmp_path / "out"
    monkeypatch.chdir(data)
    relative = Job(teacher="restormer-tiny", weights="teacher.pth", task="derain", train="train", val="val",
                   out=out, method="fitnet", plan=PLANS["quick"].with_student_iters(2))
    absolute = Job(**{**relative.__dict__, "weights": data / "teacher.pth", "train": data / "train",
                      "val": data / "val"})
    a, b = prepare(relative, log=None), prepare(absolute, log=None)
    assert a.settings == b.settings and [s.config for s in a.stages] == [s.config for s in b.stages]
    for stage in a.stages:
        assert stage.cfg.teachers.a.weights == str(data / "teacher.pth")
        assert stage.cfg.model.init_from_teacher.weights == str(data / "teacher.pth")
    # a folder the absolute one wrote is continued by the relative one, stage config included
    out.mkdir()
    (out / SETTINGS_FILE).write_text(json.dumps({"settings": b.settings}))
    (out / "student_fitnet").mkdir()
    (out / "student_fitnet" / "config.yaml").write_text(yaml.safe_dump(to_dict(b.stages[0].cfg)))
    assert prepare(relative, log=None).settings == b.settings


def test_ctrl_c_during_compress_says_to_rerun_the_command(data, tmp_path, cli, monkeypatch):
    """It said "continue with --resume", an option compress does not have."""
    original = Trainer._train_step

    def stop(self, batch):
        if self.step == 1:
            raise KeyboardInterrupt  # as Ctrl-C: the trainer saves step 1 and stops
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", stop)
    result = cli(*_fast(data, tmp_path / "out"))
    line = result.err.strip().splitlines()[-1]
    assert result.code == 2 and "interrupted at step 1; checkpoint saved" in line
    assert "rerun the same command to continue it" in line and "--resume" not in result.err


def test_a_full_disk_during_compress_names_the_file(data, tmp_path, cli, monkeypatch):
    """The stage's seconds were written in a `finally` block: on a full disk that write failed
    too and its bare "No space left on device" replaced the trainer's message naming the file."""
    import slkd.engine.stages as stages

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    def full(path, data):  # the disk filled during the stage: the seconds' write fails too
        if Path(path).name == "stage_seconds.json":
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    real_write = stages.atomic_write_bytes

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(stages, "atomic_write_bytes", full)
    result = cli(*_fast(data, tmp_path / "out"))
    line = result.err.strip().splitlines()[-1]
    assert result.code == 2 and "Traceback" not in result.err
    assert "checkpoint.pt" in line and "No space left on device" in line and "no checkpoint was written" in line


@pytest.mark.slow
def test_the_seconds_of_a_killed_stage_are_counted(data, tmp_path, cli):
    """A stage killed with kill -9 (no clean-up runs) lost its training seconds: they were
    added up in a `finally` block. They are read from the stage's log now."""
    out = tmp_path / "out"
    driver = (
        "import os, signal, sys, time\n"
        "from slkd.cli.main import main\n"
        "from slkd.engine.trainer import Trainer\n"
        "original = Trainer._train_step\n"
        "def step(self, batch):\n"
        "    if self.step == 0:\n"
        "        time.sleep(3)  # a slow first step, saved by the checkpoint of step 1\n"
        "    if self.step == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(self, batch)\n"
        "Trainer._train_step = step\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", driver, *_fast(data, out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    result = cli(*_fast(data, out))  # the rerun resumes at step 1
    assert result.code == 0, result.err
    assert "resuming at step 1" in result.err
    seconds = json.loads((out / "stage_seconds.json").read_text())["student_fitnet"]
    assert seconds >= 3  # the killed process's step is counted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["student_fitnet"]["train_seconds"] == seconds


# ---------------------------------------------------------------------------------- the speed-up
class _Clock:
    """A fake clock (seconds): it moves only when a fake network runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Timed(torch.nn.Module):
    """A network whose forward pass takes ``cost`` seconds of the fake clock times the load of
    the machine at that call (``load``: the next factor of a shared sequence)."""

    def __init__(self, clock: _Clock, cost: float, load) -> None:
        super().__init__()
        self.clock, self.cost, self.load = clock, cost, load
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.clock.now += self.cost * next(self.load)
        return x


def _timings(costs: dict[str, float], loads, rounds: int = 15) -> dict:
    from slkd.models.complexity import compare_latency

    clock = _Clock()
    load = iter(loads)
    models = {name: _Timed(clock, cost, load) for name, cost in costs.items()}
    return compare_latency(models, (1, 3, 8, 8), runs=rounds, warmup=1, clock=clock)


def test_the_speed_up_is_stated_with_its_spread_when_the_timing_holds():
    """Interleaved rounds: a slow phase of the machine (every call of rounds 6-11 five times
    slower) hits teacher and students alike, and the per-round ratio cancels it."""
    from slkd.engine.compress.report import latency_comparison, latency_sentence

    costs = {"student": 0.02, "teacher_a": 0.1, "twin": 0.02}
    loads = [5.0 if 6 * 3 <= i < 12 * 3 else 1.0 for i in range(16 * 3)]  # warm-up round first
    latency = latency_comparison(_timings(costs, loads), "teacher_a", "student", "twin")
    assert latency["reliable"] and latency["problem"] is None
    assert latency["speedup"] == pytest.approx(5.0) and latency["speedup_iqr"] == pytest.approx([5.0, 5.0])
    assert latency["rounds"] == 15 and latency["twin_ratio"] == pytest.approx(1.0)
    text = latency_sentence(latency, "restormer-tiny", "res-sl-tiny")
    assert "5.00× faster" in text and "interquartile range 5.00–5.00×" in text and "unreliable" not in text


@pytest.mark.parametrize("case", ["noisy rounds", "twins apart", "too few rounds"])
def test_a_speed_up_too_noisy_to_trust_is_not_claimed(case):
    """On a loaded machine the same two models gave speed-ups far apart on two runs, and a
    student "faster" by less than 1× while its identical-architecture twin timed far from it:
    such timings are called unreliable and no speed-up is claimed."""
    from slkd.engine.compress.report import latency_comparison, latency_sentence

    costs = {"student": 0.02, "teacher_a": 0.1, "twin": 0.02}
    rounds = 15
    if case == "noisy rounds":  # every call at its own random load
        loads = np.random.default_rng(0).uniform(1, 6, size=100).tolist()
    elif case == "twins apart":  # a steady machine, but the twin measures 2.3× the student
        costs["twin"] = 0.046
        loads = [1.0] * 100
    else:
        loads, rounds = [1.0] * 100, 3
    latency = latency_comparison(_timings(costs, loads, rounds), "teacher_a", "student", "twin")
    assert not latency["reliable"]
    assert {"noisy rounds": "varied from", "twins apart": "2.30× apart",
            "too few rounds": "too few"}[case] in latency["problem"]
    text = latency_sentence(latency, "restormer-tiny", "res-sl-tiny")
    assert text.startswith("The CPU timing is unreliable here, so no speed-up is claimed")
    assert "slkd profile --compare restormer-tiny res-sl-tiny --runs 30" in text


def test_the_suggested_restore_command_quotes_paths_with_spaces():
    import shlex

    from slkd.engine.compress.report import restore_command

    line = restore_command("res-sl-tiny", "/data/my runs/student.safetensors")
    assert shlex.split(line)[:6] == ["slkd", "restore", "--model", "res-sl-tiny", "--weights",
                                     "/data/my runs/student.safetensors"]


# ------------------------------------------------------------- data faults found before step 1
@pytest.fixture
def faults(data, tmp_path) -> Path:
    """Data that used to pass the checks: ambiguous names, a folder of sets with a stray image,
    copies of the training pairs, a pair whose input is its target, a grey input."""
    shutil.copytree(data / "train", tmp_path / "twotargets")
    _write(tmp_path / "twotargets" / "target" / "1.jpg", _image(np.random.default_rng(9), 32, 40))
    _rain_pairs(tmp_path / "case", 2, seed=10)
    shutil.copy(tmp_path / "case" / "input" / "1.png", tmp_path / "case" / "input" / "1.PNG")
    shutil.copytree(data / "val", tmp_path / "vsets")
    _write(tmp_path / "vsets" / "preview.png", _image(np.random.default_rng(11), 32, 40))
    shutil.copytree(data / "train", tmp_path / "copy")
    _rain_pairs(tmp_path / "identical", 3, seed=12)
    shutil.copy(tmp_path / "identical" / "target" / "2.png", tmp_path / "identical" / "input" / "2.png")
    _rain_pairs(tmp_path / "grey", 2, seed=13)
    grey = torch.from_numpy(_image(np.random.default_rng(14), 32, 40)[..., 0]).float()[None]
    write_image(tmp_path / "grey" / "input" / "0.png", grey)
    return tmp_path


@pytest.mark.parametrize("change, fragment", [
    # pairing by name (one function for eval, compress, train and distill)
    ({"train": "{f}/twotargets"}, "used by more than one clean image (1.jpg and 1.png)"),
    ({"val": "{f}/case"}, "used by more than one degraded image (1.PNG and 1.png)"),
    # a folder of sets with one stray image is neither one set nor a folder of sets
    ({"val": "{f}/vsets"}, "holds 1 image(s) of its own (preview.png) and sub-folders of images (SetA, SetB)"),
    # validation images that are training images: the same files, copies, or a sub-folder of a
    # clean training folder read recursively
    ({"val": "{data}/train"}, "validation set train: all 4 image(s) are also training images"),
    ({"val": "{f}/copy"}, "validation set copy: all 4 image(s) are also training images"),
    ({"task": "denoise", "train": "{data}/clean", "val": "{data}/clean/val"},
     "validation set val: all 2 image(s) are also training images"),
    # found only after every stage had trained ("non-finite PSNR … a diverged training?")
    ({"val": "{f}/identical"}, "1 image(s) have an input identical to their target as scored (the "
                               "degraded image equals its target): 2"),
    ({"task": "denoise", "sigma": "0", "train": "{data}/clean/train", "val": "{data}/clean/val"},
     "--sigma 0 adds no noise"),
    # a grey input paired with an RGB target failed after training
    ({"val": "{f}/grey"}, "0.png is grey (1 channel) but its target 0.png is RGB (3 channels)"),
    ({"train": "{f}/grey"}, "differ in colour type: 0.png is grey (1 channel) but its clean image 0.png is RGB"),
])
def test_data_faults_are_one_line_before_training(data, faults, cli, change, fragment):
    options = {"task": "derain", "train": str(data / "train"), "val": str(data / "val"), "patch": "16"}
    options.update({k: v.format(f=faults, data=data) for k, v in change.items()})
    out = faults / "out"
    argv = ["compress", "--teacher", f"restormer-tiny:{data / 'teacher.pth'}", "--out", str(out),
            "--quick", "--iters", "2"]
    for key, value in options.items():
        argv += [f"--{key}", value]
    _one_line_refusal(cli, argv, fragment.format(f=faults, data=data), out)


def test_a_batch_that_cannot_fit_is_refused_before_training(data, tmp_path, cli, monkeypatch):
    """--batch 100000 died in an allocation traceback at the first step; the memory of one
    forward pass of the student or teacher on the batch (a lower bound) is checked first."""
    import slkd.engine.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 4 * 2**30)
    out = tmp_path / "out"
    line = _one_line_refusal(cli, _argv(data, out, "--batch", "100000"), "--batch 100000 of 16×16 patches "
                             "does not fit", out)
    assert "only 4.0 GiB is available" in line and "smaller --batch" in line
    prepare(Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
                val=data / "val", out=out, method="fitnet", plan=PLANS["quick"].with_student_iters(2)),
            log=None)  # the quick plan's batch fits


def test_pairing_warnings_and_overlap_are_named_before_training(data, tmp_path):
    """What the data folders hold that is not used, and validation images that are also
    training images, are notes printed before the first stage; the count is what is scored."""
    shutil.copytree(data / "val", tmp_path / "val")
    (tmp_path / "val" / "SetA" / "input" / "9.jfif").write_bytes(b"not read")
    shutil.copy(data / "train" / "target" / "3.png", tmp_path / "val" / "SetA" / "target" / "3.png")
    shutil.copy(data / "train" / "input" / "3.png", tmp_path / "val" / "SetA" / "input" / "3.png")
    shutil.copy(data / "train" / "target" / "0.png", tmp_path / "val" / "SetB" / "target" / "7.png")
    job = Job(teacher="restormer-tiny", weights=data / "teacher.pth", task="derain", train=data / "train",
              val=tmp_path / "val", out=tmp_path / "out", method="fitnet",
              plan=PLANS["quick"].with_student_iters(2))
    prep = prepare(job, log=None)
    notes = "\n".join(prep.notes)
    assert "9.jfif" in notes and "are not read" in notes
    assert "1 of the 3 clean image(s)" in notes and "7.png" in notes and "left out" in notes
    assert "1 of the 3 image(s) of validation set SetA are also training images (3)" in notes
    assert {n: len(s) for n, s in prep.eval_sets.items()} == {"SetA": 3, "SetB": 2}
    assert prep.val_overlap == {"SetA": {"count": 1, "of": 3, "names": ["3"]}}


@pytest.mark.slow
def test_scores_of_training_images_are_never_called_validation_without_saying_so(data, tmp_path, cli):
    """A partial overlap is a warning, and the summary and the report say which scores are
    not of held-out images."""
    val = tmp_path / "val"
    _rain_pairs(val, 2, seed=20)
    for side in ("input", "target"):  # a copy of a training pair under another name
        shutil.copy(data / "train" / side / "2.png", val / side / "copied.png")
    out = tmp_path / "out"
    result = cli("compress", "--teacher", f"restormer-tiny:{data / 'teacher.pth'}", "--task", "derain",
                 "--train", data / "train", "--val", val, "--out", out, "--quick", "--iters", "2",
                 "--patch", "16", "--batch", "2", "--method", "fitnet")
    assert result.code == 0, result.err
    assert "warning: 1 of the 3 image(s) of validation set val are also training images (copied)" in result.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["val_not_held_out"] == {"val": {"count": 1, "of": 3, "names": ["copied"]}}
    assert "1 of them also training images, so not held out" in summary["comparison"]["sentence"]
    report = (out / "report.md").read_text()
    assert "**not all held out**" in report
    assert "### val (3 image(s); 1 of them also training images: copied" in report


def test_the_stage_configs_are_the_library_run_configs(data, tmp_path):
    """slkd compress builds its stages' configs with slkd.engine.runconfigs, as the studies do:
    Teacher A trained here, Teacher B its options without the global residual and started from
    it, the distilled student and its scratch twin both cut from Teacher A."""
    from slkd.engine.runconfigs import (Net, cosine_train_node, data_node, distilled_run, scratch_run, teacher_a_run,
                                        teacher_b_run)

    out = tmp_path / "out"
    job = Job(teacher="restormer-tiny", weights=None, task="derain", train=data / "train", val=data / "val",
              out=out, method="slkd", init="teacher", compare_scratch=True, seed=3,
              plan=replace(PLANS["quick"], patch=16, batch=2).with_student_iters(10))
    stages = {s.name: s.config for s in prepare(job, log=None).stages}
    out = out.resolve()
    data_train = {"type": "paired", "roots": [str((data / "train").resolve())], "patch_size": 16, "augment": True}

    def common(iters: int, lr: float) -> dict:
        return {"output_dir": out, "seed": 3, "data": data_node(data_train, [], 2),
                "train": cosine_train_node(iters, lr, optimizer="adam", weight_decay=1e-4, warmup_iters=1,
                                           log_every=1, val_every=iters, ckpt_every=max(1, iters // 4))}

    a = Net("restormer-tiny", out / "teacher_a")
    b = a.teacher_b(out / "teacher_b")
    derain = {"task": "derain"}
    expected = {
        "teacher_a": teacher_a_run("teacher_a", a, eval=derain, **common(12, 2e-3)),
        "teacher_b": teacher_b_run("teacher_b", a, eval={"task": "reconstruct", "y_channel": True}, **common(4, 1e-4)),
        "student_slkd": distilled_run("student_slkd", "res-sl-tiny", "slkd", teacher_a=a, teacher_b=b,
                                      init_from_teacher=a, eval=derain, **common(10, 1e-3)),
        "student_scratch": scratch_run("student_scratch", "res-sl-tiny", init_from_teacher=a, eval=derain,
                                       **common(10, 1e-3)),
    }
    # the stored YAML files: the same keys in the same order
    assert {k: yaml.safe_dump(v, sort_keys=False) for k, v in stages.items()} == {
        k: yaml.safe_dump(v, sort_keys=False) for k, v in expected.items()}
    assert stages["teacher_b"]["model"] == {"name": "restormer-tiny", "options": {"global_residual": False},
                                            "init_from": str(out / "teacher_a")}
    assert stages["student_slkd"]["teachers"]["b"]["options"] == {"global_residual": False}
    assert stages["student_scratch"]["model"]["init_from_teacher"] == {"name": "restormer-tiny",
                                                                       "weights": str(out / "teacher_a")}
