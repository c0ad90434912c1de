"""``slkd demo`` end to end on the bundled images (a few iterations), and the report helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slkd.cli.main import main
from slkd.data.image_io import read_image, write_image
from slkd.distill import DEFAULT_METHOD, distill_config
from slkd.engine.report import image_grid, markdown_table, plot_curves, read_train_events
from slkd.errors import SlkdError
from slkd.models import build_model, load_weights

pytestmark = pytest.mark.usefixtures("one_thread")

#: a handful of iterations per stage: the pipeline, not the quality, is under test
TINY = ["--quick", "--iters-scale", "0.02"]
#: the default method's student (slkd's demo adds Teacher B before it)
STUDENT = f"student_{DEFAULT_METHOD}"
MODELS = ("input", "teacher_a", *(("teacher_b",) if "b" in distill_config().teacher_roles() else ()), STUDENT,
          "student_scratch")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", *TINY, "--out", str(out)]) == 0
    return out


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


@pytest.mark.slow
def test_demo_summary_has_every_model(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    assert list(summary["models"]) == list(MODELS)
    for name in MODELS:
        m = summary["models"][name]
        for key in ("params", "macs_256", "latency_ms_256", "psnr", "ssim"):
            assert key in m, (name, key)
    models = summary["models"]
    # golden: the seeded σ=25 test noise on chelsea (20.25 dB) and ihc (20.43 dB)
    assert models["input"]["psnr"] == pytest.approx(20.34, abs=0.01)
    assert summary["evaluation"]["per_image"]["chelsea"]["input"]["psnr"] == pytest.approx(20.25, abs=0.01)
    assert models["teacher_a"]["params"] == 1_178_294
    assert models[STUDENT]["params"] == models["student_scratch"]["params"] == 208_225
    c = summary["comparison"]
    assert c["params_reduction"] >= 0.8 and c["macs_reduction"] >= 0.8
    assert c["student_minus_scratch_psnr"] == pytest.approx(
        models[STUDENT]["psnr"] - models["student_scratch"]["psnr"])
    assert "scratch" in c["sentence"]
    # every stage really trained the planned (scaled) iterations
    assert models["teacher_a"]["train_iters"] == 2 and models[STUDENT]["train_iters"] == 2
    # both students start from the same cut of Teacher A (the default --init teacher)
    for stage in (STUDENT, "student_scratch"):
        assert "init_from_teacher:" in (demo_run / "configs" / f"{stage}.yaml").read_text()
    assert summary["settings"]["init"] == "teacher" and summary["settings"]["method"] == DEFAULT_METHOD


@pytest.mark.slow
def test_demo_writes_report_images_and_configs(demo_run):
    report = (demo_run / "report.md").read_text()
    assert "| Teacher A | restormer-tiny |" in report and "initialised (like its scratch twin) with a cut" in report
    assert "![comparison grid" in report and "![training curves" in report
    for png in ("grid.png", "curves.png"):
        assert min(_png_size(demo_run / png)) > 100
    for stage in MODELS[1:]:
        assert (demo_run / "configs" / f"{stage}.yaml").is_file()
        assert (demo_run / stage / "weights.pth").is_file()
    for name in ("chelsea", "ihc"):
        assert read_image(demo_run / "images" / STUDENT / f"{name}.png").tensor.shape[0] == 3


@pytest.mark.slow
def test_demo_student_weights_are_the_student_alone(demo_run):
    student = build_model("res-sl-tiny")
    load_weights(student, demo_run / STUDENT / "weights.pth")  # strict: no adapter keys


@pytest.mark.slow
def test_demo_rerun_reuses_finished_stages(demo_run, capsys):
    before = json.loads((demo_run / "summary.json").read_text())
    mtime = (demo_run / "teacher_a" / "weights.pth").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["demo", *TINY, "--out", str(demo_run)]) == 0
    assert "resuming / reusing" in capsys.readouterr().err
    assert (demo_run / "teacher_a" / "weights.pth").stat().st_mtime_ns == mtime
    after = json.loads((demo_run / "summary.json").read_text())
    assert after["evaluation"]["means"] == before["evaluation"]["means"]


@pytest.mark.slow
def test_demo_refuses_other_settings_in_the_same_folder(demo_run, capsys):
    code = main(["demo", "--quick", "--iters-scale", "0.03", "--out", str(demo_run)])
    assert code != 0
    err = capsys.readouterr().err
    assert "other settings" in err and "Traceback" not in err
    assert (demo_run / "teacher_a" / "checkpoint.pt").is_file()  # nothing was deleted


def _noise_folder(folder: Path, n: int, size=(48, 56)) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        smooth = np.cumsum(rng.normal(size=(size[0], size[1], 3)), axis=1)
        img = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
        write_image(folder / f"img{i:02d}.png", torch.from_numpy(img).permute(2, 0, 1).float())


@pytest.mark.slow
def test_demo_on_a_user_folder(tmp_path, capsys):
    data = tmp_path / "clean"
    _noise_folder(data, 3)
    out = tmp_path / "out"
    assert main(["demo", *TINY, "--data", str(data), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["held_out"] == ["img02.png"]  # fewer than 10 images: the last one
    assert list(summary["evaluation"]["per_image"]) == ["img02"]
    assert not (out / "data").exists()  # the user's folder is read in place, not copied


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "{missing}"], "not a folder"),
        (["--data", "{one}"], "at least two"),
        (["--held-out", "{one}"], "--held-out needs --data"),
        (["--iters-scale", "0"], "--iters-scale"),
        (["--eval-images", "0"], "--eval-images"),
    ],
)
def test_demo_bad_arguments(tmp_path, capsys, argv, message):
    one = tmp_path / "one"
    _noise_folder(one, 1)
    argv = [a.format(missing=tmp_path / "nope", one=one) for a in argv]
    try:
        code = main(["demo", "--quick", "--out", str(tmp_path / "out"), *argv])
    except SystemExit as exc:  # numbers out of range are refused while parsing
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err


# ------------------------------------------------------------------------------ report helpers
def test_markdown_table():
    text = markdown_table(["a", "b"], [[1, "x"], [2, "y"]])
    assert text.splitlines() == ["| a | b |", "|:--|--:|", "| 1 | x |", "| 2 | y |"]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [[1]])


def test_read_train_events_dedups_resumed_steps_and_skips_cut_lines(tmp_path):
    lines = [{"event": "start", "step": 0}, {"event": "train", "step": 2, "loss": 3.0},
             {"event": "train", "step": 4, "loss": 2.0}, {"event": "train", "step": 2, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + '\n{"event": "tr')
    events = read_train_events(tmp_path)
    assert [(e["step"], e["loss"]) for e in events] == [(2, 1.0), (4, 2.0)]
    with pytest.raises(SlkdError, match="no metrics.jsonl"):
        read_train_events(tmp_path / "nothing")


def test_plot_and_grid_write_pngs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"event": "train", "step": s, "loss_pix": 1 / s, "loss_nc": 2 / s, "loss": 3 / s} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    png = plot_curves({"run": run}, tmp_path / "c.png", terms_of="run")
    assert min(_png_size(png)) > 100
    img = torch.rand(3, 40, 50)
    grid = image_grid([[img, img], [img, img]], ["x", "y"], tmp_path / "g.png", crop=16,
                      captions=[["1", "2"], ["3", "4"]])
    assert min(_png_size(grid)) > 100
    with pytest.raises(ValueError):
        image_grid([[img]], ["x", "y"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    shutil.rmtree(run)


# ------------------------------------------------------------------------------ where the demo writes
def _demo_error(capsys, *argv: str) -> str:
    code = main(["demo", *TINY, *argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_demo_refuses_an_out_folder_it_did_not_write(tmp_path, capsys):
    """The demo replaces report.md, summary.json, grid.png … in --out: a folder holding other
    files is refused, and nothing is written into it (docs/reliability.md §7: the rule for every
    command that writes)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    (out / "thesis.tex").write_text("precious")
    line = _demo_error(capsys, "--out", str(out))
    assert "thesis.tex" in line and "--out" in line
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "thesis.tex"]
    assert (out / "report.md").read_text() == "my own report"


def test_demo_refuses_an_out_folder_inside_its_data(tmp_path, capsys):
    """Its outputs would become training images of the next run (the user's folder is read
    recursively)."""
    data = tmp_path / "clean"
    _noise_folder(data, 3)
    before = sorted(p.name for p in data.rglob("*"))
    line = _demo_error(capsys, "--data", str(data), "--out", str(data / "demo"))
    assert "inside" in line and str(data) in line
    assert sorted(p.name for p in data.rglob("*")) == before


def test_demo_checks_held_out_images_before_training(tmp_path, capsys):
    """A broken held-out image (here a dangling link) used to fail the evaluation after all
    four trainings; two held-out images of one name would overwrite each other's outputs."""
    data = tmp_path / "clean"
    _noise_folder(data, 3)
    (data / "zz.png").symlink_to(tmp_path / "deleted.png")
    out = tmp_path / "out"
    line = _demo_error(capsys, "--data", str(data), "--out", str(out))
    assert "zz.png" in line and "deleted.png" in line
    assert not (out / "teacher_a").exists()
    (data / "zz.png").unlink()
    held = tmp_path / "held"
    _noise_folder(held / "a", 1)
    _noise_folder(held / "b", 1)
    line = _demo_error(capsys, "--data", str(data), "--held-out", str(held), "--out", str(out))
    assert "img00" in line and not (out / "teacher_a").exists()


def test_demo_refuses_a_folder_holding_only_a_data_folder_of_the_users(tmp_path, capsys):
    """`data/` is a name the demo writes (its copy of the bundled images): a user's folder that
    held only data/train/coffee.png was accepted, the user's image overwritten, and the user's
    other images trained and validated on with the demo's. One rule for every job of the
    pipeline: a folder holding anything and no job record is not ours."""
    out = tmp_path / "mine"
    (out / "data" / "train").mkdir(parents=True)
    (out / "data" / "train" / "coffee.png").write_bytes(b"my own coffee")
    (out / "data" / "train" / "holiday.png").write_bytes(b"my holiday")
    line = _demo_error(capsys, "--out", str(out))
    assert "holds files slkd did not write there (data)" in line and "no record of an slkd job" in line
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["data", "data/train", "data/train/coffee.png",
                                                                       "data/train/holiday.png"]
    assert (out / "data" / "train" / "coffee.png").read_bytes() == b"my own coffee"


def test_demo_refuses_a_folder_another_process_writes(tmp_path, capsys, holder):
    out = tmp_path / "demo"
    other = holder(out)
    line = _demo_error(capsys, "--out", str(out))
    assert f"{out} is being written by another process (PID {other.pid}" in line
    assert not (out / "data").exists() and not (out / "compress.json").exists()
