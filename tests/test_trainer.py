"""The training engine on a tiny synthetic dataset: run folder, resume, faults, two ranks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slkd.cli.main import main
from slkd.data.image_io import write_image
from slkd.engine.builders import build_model_for_run, build_train_set, build_val_sets
from slkd.engine.config import TrainRunConfig, apply_overrides, from_dict
from slkd.engine.distributed import DistInfo
from slkd.engine.tasks import SupervisedTask
from slkd.engine.runstate import seed_everything
from slkd.engine.trainer import CHECKPOINT, Trainer, TrainingStopped
from slkd.errors import SlkdError
from slkd.models import build_model, load_weights, save_weights

SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            smooth = np.kron(rng.random((3, 6, 6)), np.ones((1, 8, 8)))  # 48×48 blocky texture
            img = 0.7 * smooth + 0.3 * rng.random((3, 48, 48))
            write_image(root / split / f"img{i}.png", torch.from_numpy(img).float())
    return root


def config_dict(data_root, out, **changes):
    data = {
        "name": "tiny",
        "output_dir": str(out),
        "seed": 3,
        "model": {"name": "res-sl-tiny"},
        "data": {
            "root": str(data_root),
            "train": {"type": "degraded", "roots": ["train"], "patch_size": 16, "augment": True,
                      "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}},
            "val": [{"name": "val", "type": "degraded", "roots": ["val"],
                     "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}],
            "batch_size": 2,
        },
        "train": {"iters": 6, "optimizer": {"lr": 1e-3}, "scheduler": {"warmup_iters": 2},
                  "log_every": 2, "val_every": 3, "ckpt_every": 3},
    }
    return apply_overrides(data, [f"{k}={v}" for k, v in changes.items()])


def make_trainer(data_root, out, resume=False, **changes):
    cfg = from_dict(TrainRunConfig, config_dict(data_root, out, **changes))
    seed_everything(cfg.seed)
    model = build_model_for_run(cfg)
    task = SupervisedTask(model, cfg.train.loss, clean_input=cfg.role == "teacher_b")
    return Trainer(cfg, task, build_train_set(cfg), build_val_sets(cfg), run_dir=Path(out) / cfg.name,
                   dist=SINGLE, resume=resume, argv=["slkd", "train", "test"])


def events(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def weights_of(run_dir):
    return torch.load(run_dir / "weights.pth", weights_only=True)["params"]


def test_run_folder_contents_and_logs(data_root, tmp_path):
    result = make_trainer(data_root, tmp_path).run()
    run = tmp_path / "tiny"
    assert result["step"] == 6
    for name in ("config.yaml", "command.txt", "environment.json", "metrics.jsonl", CHECKPOINT,
                 "weights.pth", "best_val.pth"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iters"] == 6
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["world_size"] == 1
    train = events(run, "train")
    assert [e["step"] for e in train] == [2, 4, 6]
    assert all(np.isfinite(e["loss"]) and e["lr"] > 0 and "loss_l1" in e and "grad_norm" in e for e in train)
    val = events(run, "val")
    assert [e["step"] for e in val] == [3, 6] and all(e["count"] == 2 for e in val)
    assert result["best"]["val"]["psnr"] == max(e["psnr"] for e in val)
    # the deployable file loads into a fresh student
    load_weights(build_model("res-sl-tiny"), run / "weights.pth")


def test_learning_reduces_the_loss(data_root, tmp_path):
    make_trainer(data_root, tmp_path, **{"train.iters": 40, "train.log_every": 5, "train.val_every": 40,
                                         "train.ckpt_every": 40, "train.optimizer.lr": 3e-3}).run()
    train = events(tmp_path / "tiny", "train")
    assert train[-1]["loss"] < 0.75 * train[0]["loss"]


def test_resume_after_interrupt_is_bit_identical(data_root, tmp_path, monkeypatch):
    make_trainer(data_root, tmp_path / "a").run()
    reference = weights_of(tmp_path / "a" / "tiny")

    trainer = make_trainer(data_root, tmp_path / "b")
    original = Trainer._train_step

    def interrupt_at_4(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_at_4)
    with pytest.raises(TrainingStopped, match="interrupted at step 4; checkpoint saved"):
        trainer.run()
    monkeypatch.setattr(Trainer, "_train_step", original)
    assert torch.load(tmp_path / "b" / "tiny" / CHECKPOINT, weights_only=True)["step"] == 4

    make_trainer(data_root, tmp_path / "b", resume=True).run()
    resumed = weights_of(tmp_path / "b" / "tiny")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_existing_run_is_never_overwritten(data_root, tmp_path):
    make_trainer(data_root, tmp_path, **{"train.iters": 3}).run()
    with pytest.raises(Exception, match="already holds a training run: .*nothing was overwritten"):
        make_trainer(data_root, tmp_path, **{"train.iters": 3})


def test_non_finite_steps_are_skipped_then_stop(data_root, tmp_path, monkeypatch):
    trainer = make_trainer(data_root, tmp_path, **{"train.max_bad_steps": 2, "train.iters": 8})
    original = trainer.task.loss
    calls = {"n": 0}

    def flaky(network, batch):
        calls["n"] += 1
        loss, terms = original(network, batch)
        if calls["n"] == 2 or calls["n"] >= 5:  # one isolated NaN, then NaNs from step 5 on
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(trainer.task, "loss", flaky)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingStopped, match="2 consecutive non-finite steps at step 6"):
        trainer.run()
    run = tmp_path / "tiny"
    skips = events(run, "skip")
    assert [e["step"] for e in skips] == [2, 5, 6]
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["step"] == 3  # the last good checkpoint
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_teacher_b_learns_reconstruction_without_residual(data_root, tmp_path):
    make_trainer(data_root, tmp_path, **{"name": "a", "train.iters": 3}).run()
    trainer = make_trainer(data_root, tmp_path, **{
        "name": "b", "role": "teacher_b", "model.options.global_residual": False,
        "model.init_from": str(tmp_path / "a"), "eval.task": "reconstruct", "train.iters": 3})
    assert trainer.task.clean_input and not trainer.model.global_residual
    a = weights_of(tmp_path / "a")
    assert all(torch.equal(trainer.model.state_dict()[k], a[k]) for k in a)  # initialised from A
    trainer.run()
    assert events(tmp_path / "b", "val")[-1]["count"] == 2
    spread = events(tmp_path / "b", "teacher_b_features")[-1]
    assert set(spread) >= {"std_decoder_level1", "std_refinement"}
    assert all(spread[k] > 1e-3 for k in spread if k.startswith("std_"))


def test_cli_train_and_errors(data_root, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(data_root, tmp_path / "runs")))
    assert main(["train", "--config", str(cfg), "train.iters=2", "train.val_every=2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 2 and Path(out["run_dir"]).name == "tiny"
    assert main(["train", "--config", str(cfg), "train.iters=two"]) == 2
    assert "train.iters: expected an integer" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "data.train.roots=[nowhere]", "name=x"]) == 2
    assert "data.train.roots: folder not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_two_cpu_ranks_match_one_process(data_root, tmp_path):
    """DDP over 2 gloo ranks with batch 1 each = one process with batch 2 (same samples)."""
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump(config_dict(data_root, tmp_path / "one", **{"train.iters": 4})))
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump(config_dict(data_root, tmp_path / "two", **{"train.iters": 4,
                                                                              "data.batch_size": 1})))
    assert main(["train", "--config", str(one), "--device", "cpu"]) == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                           "slkd.cli.main", "train", "--config", str(two), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = weights_of(tmp_path / "one" / "tiny"), weights_of(tmp_path / "two" / "tiny")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    val = events(tmp_path / "two" / "tiny", "val")
    assert val[-1]["count"] == 2  # sharded over the ranks, reduced
    env_two = json.loads((tmp_path / "two" / "tiny" / "environment.json").read_text())
    assert env_two["world_size"] == 2


def test_ema_and_bf16_options(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, **{"train.iters": 3, "train.ema": 0.5, "train.bf16": True,
                                                   "train.grad_clip": 0.01})
    trainer.run()
    run = tmp_path / "tiny"
    start = events(run, "start")[0]
    assert start["bf16"] is True and start["ema"] == 0.5 and start["grad_clip"] == 0.01
    assert all(e["grad_norm"] > 0 and np.isfinite(e["loss"]) for e in events(run, "train"))
    deployed = weights_of(run)
    ema = trainer.ema.module.state_dict()
    raw = trainer.model.state_dict()
    assert all(torch.equal(deployed[k], ema[k]) for k in ema)  # EMA weights are the deployable ones
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["ema"] is not None and state["step"] == 3


class _Payload:
    """Unpickling this object would create a file: the attack a checkpoint must not carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_refuses_unsafe_or_foreign_checkpoints_without_side_effect(data_root, tmp_path, capsys):
    make_trainer(data_root, tmp_path, **{"train.iters": 3}).run()
    run = tmp_path / "tiny"
    good = torch.load(run / CHECKPOINT, weights_only=True)
    marker = tmp_path / "pwned"
    torch.save({**good, "hook": _Payload(marker)}, run / CHECKPOINT)
    before = _snapshot(run)
    with pytest.raises(SlkdError, match=r"cannot resume: refusing to load .*checkpoint.pt.*would run code"):
        make_trainer(data_root, tmp_path, resume=True, **{"train.iters": 6})
    assert not marker.exists()
    assert _snapshot(run) == before  # no log line, no config rewritten, nothing deleted
    # the same through the command line: one line, exit code 2, no traceback
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(data_root, tmp_path, **{"train.iters": 6})))
    assert main(["train", "--config", str(cfg), "--device", "cpu", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "Traceback" not in err
    assert not marker.exists() and _snapshot(run) == before

    save_weights(build_model("res-sl-tiny"), run / CHECKPOINT)  # deployable weights, not a run state
    with pytest.raises(SlkdError, match="not a training checkpoint of slkd .missing step"):
        make_trainer(data_root, tmp_path, resume=True)
    torch.save({**good, "model": build_model("restormer-tiny").state_dict()}, run / CHECKPOINT)
    with pytest.raises(SlkdError, match="does not fit this config"):
        make_trainer(data_root, tmp_path, resume=True)
    (run / CHECKPOINT).write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(SlkdError, match="cannot resume: cannot read .*checkpoint.pt"):
        make_trainer(data_root, tmp_path, resume=True)


def test_resume_repairs_a_log_cut_off_by_a_crash(data_root, tmp_path):
    """After a kill the log may end in half a line and hold steps past the checkpoint; the
    resumed run drops both, so every step is logged once."""
    make_trainer(data_root, tmp_path, **{"train.iters": 3, "train.log_every": 1}).run()
    run = tmp_path / "tiny"
    with open(run / "metrics.jsonl", "a") as fh:  # what a kill during step 5 leaves behind
        fh.write(json.dumps({"event": "train", "step": 4, "loss": 1.0}) + "\n")
        fh.write('{"event": "train", "st')
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    make_trainer(data_root, tmp_path, resume=True, **{"train.iters": 5, "train.log_every": 1}).run()
    assert [e["step"] for e in events(run, "train")] == [1, 2, 3, 4, 5]
    assert events(run, "start")[-1]["dropped_events"] == 2
    assert not (run / ".checkpoint.pt.abc123.tmp").exists()


def test_a_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch):
    trainer = make_trainer(data_root, tmp_path)  # checkpoints at steps 3 and 6
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 6:
            Path(f).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(TrainingStopped, match=r"checkpoint of step 6 \(.*checkpoint.pt\): No space left on "
                       "device; the checkpoint of step 3 .* is kept intact"):
        trainer.run()
    run = tmp_path / "tiny"
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] == 3
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_at_the_first_checkpoint_does_not_claim_one_is_kept(data_root, tmp_path, monkeypatch,
                                                                        make_distill_folder, capsys):
    """`slkd distill` on a full disk said "the previous checkpoint is kept intact" when the
    failing checkpoint was the first one: there was none."""
    root = make_distill_folder(tmp_path / "d", seed=0)
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "kd", "role": "distill", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": "res-sl-tiny"},
        "teachers": {"a": {"name": "restormer-tiny", "weights": str(root / "teacher_a.pth")}},
        "distill": {"method": "fitnet"},
        "data": {"root": str(root / "data"), "batch_size": 2,
                 "train": {"type": "degraded", "roots": ["train"], "patch_size": 16,
                           "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}, "val": []},
        "train": {"iters": 2, "log_every": 1, "val_every": 2, "ckpt_every": 2}}))
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main(["distill", "--config", str(cfg), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("slkd distill: error: "), err
    assert "checkpoint.pt" in line and "No space left on device" in line
    assert "kept" not in line and "no checkpoint was written" in line
    assert not (tmp_path / "runs" / "kd" / CHECKPOINT).exists()


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_an_interrupt_inside_an_update_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch):
    """A forced stop (second Ctrl-C) between the optimiser update and the step counter must not
    save that mixed state: the previous checkpoint stays, and resuming is still exact."""
    make_trainer(data_root, tmp_path / "a").run()
    reference = weights_of(tmp_path / "a" / "tiny")
    trainer = make_trainer(data_root, tmp_path / "b")
    real_step = trainer.optimizer.step

    def step_then_interrupt(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step == 4:  # the update of step 5 is done, the counter still says 4
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(trainer.optimizer, "step", step_then_interrupt)
    with pytest.raises(TrainingStopped, match="in the middle of step 5; its update is lost"):
        trainer.run()
    assert torch.load(tmp_path / "b" / "tiny" / CHECKPOINT, weights_only=True)["step"] == 3
    make_trainer(data_root, tmp_path / "b", resume=True).run()
    resumed = weights_of(tmp_path / "b" / "tiny")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


# --------------------------------------------------------------------------------------------
# docs/reliability.md §8: nothing lost, nothing misleading
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("left", ["config.yaml", "metrics.jsonl", "weights.pth", "best_val.pth",
                                  CHECKPOINT, "command.txt"])
def test_a_run_folder_is_protected_by_any_file_of_an_earlier_run(data_root, tmp_path, left):
    """With checkpoint.pt deleted, a rerun replaced weights.pth, best_*.pth and config.yaml and
    truncated metrics.jsonl (docs/reliability.md §8, item 2): any file of a run now protects its folder."""
    make_trainer(data_root, tmp_path / "first", **{"train.iters": 3}).run()
    run = tmp_path / "again" / "tiny"
    run.mkdir(parents=True)
    shutil.copy(tmp_path / "first" / "tiny" / left, run / left)
    before = _snapshot(run)
    with pytest.raises(SlkdError, match=f"already holds .*{left}.*nothing was overwritten"):
        make_trainer(data_root, tmp_path / "again", **{"train.iters": 3})
    assert _snapshot(run) == before
    # an empty folder, or one with unrelated files, is a fine place for a new run
    (tmp_path / "other" / "tiny").mkdir(parents=True)
    (tmp_path / "other" / "tiny" / "notes.txt").write_text("mine")
    make_trainer(data_root, tmp_path / "other", **{"train.iters": 1})


def _small_val(tmp_path: Path, size: int) -> Path:
    folder = tmp_path / f"val{size}"
    for i in range(2):
        write_image(folder / f"v{i}.png", torch.rand(3, size, size + 3))
    return folder


@pytest.mark.parametrize("changes, fragment", [
    ({"small": 8}, r"v0.png \(11×8\), v1.png \(11×8\)"),
    ({"eval.crop_border": 19}, r"eval.crop_border=19"),
    ({"eval.crop_border": 30}, r"eval.crop_border=30"),
])
def test_an_invalid_validation_set_is_refused_before_step_1(data_root, tmp_path, changes, fragment):
    """An image too small for SSIM's 11×11 window (after eval.crop_border) stopped the run at its
    first validation, after training and before any checkpoint (docs/reliability.md §8, item 3)."""
    changes = dict(changes)
    if "small" in changes:
        changes["data.val"] = [{"name": "val", "type": "degraded", "roots": [str(_small_val(tmp_path, changes.pop("small")))],
                                "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}]
    with pytest.raises(SlkdError, match=rf"data.val\[0\] \(val\): .*SSIM.*11×11.*{fragment}"):
        make_trainer(data_root, tmp_path / "runs", **changes)
    assert not (tmp_path / "runs").exists()  # checked before anything is written
    # a patch-size crop is what gets scored: a 16 px crop of the 48 px images with crop 2 is fine
    make_trainer(data_root, tmp_path / "ok", **{"eval.crop_border": 2, "data.val.0.patch_size": 16})


def test_resume_refuses_changed_settings_and_names_them(data_root, tmp_path, capsys):
    """--resume with a new learning rate kept the old one but wrote the new one into config.yaml
    (docs/reliability.md §8, item 5). Changed settings are refused by name; only bookkeeping and the
    iteration count may change, and the run says so."""
    make_trainer(data_root, tmp_path, **{"train.iters": 3}).run()
    run = tmp_path / "tiny"
    before = _snapshot(run)
    with pytest.raises(SlkdError, match="cannot resume .* with other settings") as info:
        make_trainer(data_root, tmp_path, resume=True,
                     **{"train.optimizer.lr": 0.002, "data.batch_size": 1, "train.iters": 3})
    assert "train.optimizer.lr (0.001 → 0.002)" in str(info.value)
    assert "data.batch_size (2 → 1)" in str(info.value)
    assert _snapshot(run) == before
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(data_root, tmp_path, **{"train.iters": 3})))
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--device", "cpu", "--resume", "train.optimizer.weight_decay=0"]) == 2
    err = capsys.readouterr().err
    assert "train.optimizer.weight_decay" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(run) == before
    # allowed: more iterations and other logging/validation/checkpoint intervals, said aloud
    trainer = make_trainer(data_root, tmp_path, resume=True, **{"train.iters": 5, "train.log_every": 1,
                                                                "train.val_every": 5})
    trainer.run()
    start = events(run, "start")[-1]
    assert start["changed"] == {"train.iters": [3, 5], "train.log_every": [2, 1], "train.val_every": [3, 5]}
    assert "train.iters 3 → 5" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iters"] == 5


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_weights_that_turn_non_finite_are_never_saved(data_root, tmp_path, monkeypatch):
    """lr=.inf saved all-NaN weights and reported "best nan dB" (docs/reliability.md §8, item 6). The config
    refuses .inf now; a run whose weights blow up anyway stops without saving them."""
    make_trainer(data_root, tmp_path / "a", **{"train.iters": 3}).run()  # a good run: a checkpoint
    trainer = make_trainer(data_root, tmp_path / "b")
    real_step = trainer.optimizer.step

    def step_then_blow_up(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step == 3:  # the update of step 4 puts a NaN into the weights
            next(trainer.model.parameters()).data.view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(trainer.optimizer, "step", step_then_blow_up)
    with pytest.raises(TrainingStopped, match=r"not finite.*step 3"):
        trainer.run()
    run = tmp_path / "b" / "tiny"
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] == 3  # the good one, kept
    for name in ("weights.pth", "best_val.pth"):
        assert all(torch.isfinite(v).all() for v in torch.load(run / name, weights_only=True)["params"].values())
    val = events(run, "val")
    assert all(np.isfinite(e["best_psnr"]) for e in val)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_validation_that_scores_nan_is_not_a_best(data_root, tmp_path, monkeypatch):
    trainer = make_trainer(data_root, tmp_path, **{"train.iters": 3})
    monkeypatch.setattr(trainer, "validate", lambda: {"val": {"psnr": float("nan"), "ssim": float("nan"), "count": 2}})
    trainer.run()
    assert not (tmp_path / "tiny" / "best_val.pth").exists()
    assert trainer.best == {}


def test_a_read_only_output_dir_is_one_line(data_root, tmp_path, monkeypatch, capsys):
    import errno

    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if locked in (self, *self.parents):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(data_root, locked, **{"train.iters": 2})))
    assert main(["train", "--config", str(cfg), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "Read-only file system" in err and str(locked) in err


def test_a_full_disk_while_saving_the_best_weights_is_one_line(data_root, tmp_path, monkeypatch, capsys):
    """The partial file was removed, but the user saw a traceback (docs/reliability.md §8, item 9)."""
    import slkd.models.checkpoint as checkpoint

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if Path(f).name.startswith(".best_val.pth"):
            Path(f).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(data_root, tmp_path, **{"train.iters": 3})))
    assert main(["train", "--config", str(cfg), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "best_val.pth" in err and "No space left on device" in err
    assert not [p for p in (tmp_path / "tiny").iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_while_logging_stops_with_a_clear_error(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, **{"train.iters": 3})

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        flush = close = lambda self: None

    trainer.log._jsonl = Full()
    # the first event fails: it said "(the last checkpoint is kept)" when there was none
    with pytest.raises(SlkdError, match=r"metrics.jsonl.*No space left on device; the run stops and no "
                       "checkpoint was written"):
        trainer.run()
