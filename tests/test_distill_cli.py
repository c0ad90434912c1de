"""`slkd distill` end to end on tiny data: every method runs through the shared trainer."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slkd.cli.main import main
from slkd.engine.runstate import seed_everything
from slkd.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_distill_folder):
    return make_distill_folder(tmp_path_factory.mktemp("distill"), seed=1)


def write_config(setup, name, **changes):
    data = {
        "name": name, "role": "distill", "seed": 1, "output_dir": str(setup / "runs"),
        "model": {"name": "res-sl-tiny"},
        "teachers": {"a": {"name": "restormer-tiny", "weights": str(setup / "teacher_a.pth")},
                     "b": {"name": "restormer-tiny", "weights": str(setup / "teacher_b.pth"),
                           "options": {"global_residual": False}}},
        "distill": {"method": "slkd"},
        "data": {"root": str(setup / "data"), "batch_size": 2,
                 "train": {"type": "degraded", "roots": ["train"], "patch_size": 16,
                           "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}},
                 "val": [{"name": "val", "type": "degraded", "roots": ["val"],
                          "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}]},
        "train": {"iters": 2, "log_every": 1, "val_every": 2, "ckpt_every": 2},
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = setup / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def train_events(run_dir: Path):
    return [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if e["event"] == "train"]


@pytest.mark.parametrize("method, terms", [
    ("slkd", {"loss_pix", "loss_kl", "loss_nc", "loss_et"}),
    ("scratch", {"loss_pix"}),
    ("output_kd", {"loss_pix", "loss_img"}),
    ("fitnet", {"loss_pix", "loss_feature"}),
    ("at", {"loss_pix", "loss_feature"}),
    ("fakd", {"loss_pix", "loss_feature"}),
])
def test_each_method_trains_and_exports_the_student_only(setup, capsys, method, terms):
    extra = {"distill.loss_weights": {"pix": 1.0, "kl": 0.5, "nc": 0.1, "et": 0.1, "img": 1.0, "feature": 1.0}} \
        if method == "output_kd" else {}
    cfg = write_config(setup, f"m-{method}", **{"distill.method": method, **extra})
    assert main(["distill", "--config", str(cfg), "--device", "cpu"]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = Path(result["run_dir"])
    assert result["method"] == method and result["step"] == 2
    logged = train_events(run)
    assert terms <= set(logged[-1]) and all(np.isfinite(logged[-1][t]) for t in terms)
    student_keys = set(build_model("res-sl-tiny").state_dict())
    exported = torch.load(run / "weights.pth", weights_only=True)["params"]
    assert set(exported) == student_keys
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert student_keys <= {k.removeprefix("student.") for k in checkpoint["model"]}


def test_resume_continues_a_distillation(setup, capsys):
    cfg = write_config(setup, "resume", **{"train.iters": 3})
    assert main(["distill", "--config", str(cfg), "--device", "cpu", "train.iters=2"]) == 0
    assert main(["distill", "--config", str(cfg), "--device", "cpu", "--resume"]) == 0
    steps = [e["step"] for e in train_events(setup / "runs" / "resume")]
    assert steps == [1, 2, 3]


def test_configuration_errors_are_named(setup, capsys):
    cfg = write_config(setup, "bad")
    assert main(["distill", "--config", str(cfg), "teachers.b=null"]) == 2
    assert "teachers.b: SLKD with IRL on needs Teacher B" in capsys.readouterr().err
    assert main(["distill", "--config", str(cfg), "teachers.a.weights=/nowhere.pth"]) == 2
    assert "teachers.a.weights" in capsys.readouterr().err
    assert main(["distill", "--config", str(cfg), "distill.method=magic"]) == 2
    assert "distill.method" in capsys.readouterr().err
    # Teacher B must not have a global residual (docs/spec.md §2.1)
    assert main(["distill", "--config", str(cfg), "teachers.b.options.global_residual=true",
                 f"teachers.b.weights={setup / 'teacher_a.pth'}"]) == 2
    assert "residual" in capsys.readouterr().err


def test_train_and_distill_refuse_each_others_configs(setup, capsys):
    cfg = write_config(setup, "wrong-command")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "is a 'distill' config; use `slkd distill`" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_slkd_under_two_cpu_ranks_matches_one_process(setup, capsys):
    """The same SLKD distillation on 2 gloo ranks × batch 1 and on 1 process × batch 2.

    Every SLKD term is a mean over the batch except L_ET's activity-weighted ratio of means
    (mean(w·|ΔΦ|)/mean(w) per rank), so the runs agree closely but not to rounding. What must
    agree is the global gradient (the all-reduced mean of the ranks' gradients) and what the
    student becomes; the weights themselves are not compared after 3 steps: Adam's first
    updates are sign-like (m/√v ≈ ±1), so a parameter whose gradient is near zero moves by ±lr
    whichever way rounding tips it, and the relative weight distance of the two runs is
    machine-dependent (under 0.2 on the CI machine, 0.48 on another, with the gradients 0.06 % apart)."""
    one = write_config(setup, "ddp", **{"train.iters": 3, "output_dir": str(setup / "one")})
    assert main(["distill", "--config", str(one), "--device", "cpu"]) == 0, capsys.readouterr().err
    two = write_config(setup, "ddp", **{"train.iters": 3, "output_dir": str(setup / "two"),
                                        "data.batch_size": 1})
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "slkd.cli.main",
                           "distill", "--config", str(two), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = torch.load(setup / "one" / "ddp" / "weights.pth", weights_only=True)["params"]
    b = torch.load(setup / "two" / "ddp" / "weights.pth", weights_only=True)["params"]
    assert set(a) == set(b)
    seed_everything(1)  # the config's seed: the student's initial weights
    init = build_model("res-sl-tiny").state_dict()
    flat = lambda sd: torch.cat([sd[k].flatten().double() for k in sorted(a)])  # noqa: E731
    assert (flat(a) - flat(init)).norm() > 0 and (flat(b) - flat(init)).norm() > 0  # both trained
    events = {run: list(map(json.loads, (setup / run / "ddp" / "metrics.jsonl").read_text().splitlines()))
              for run in ("one", "two")}
    first = {run: next(e["grad_norm"] for e in ev if e["event"] == "train" and e["step"] == 1)
             for run, ev in events.items()}
    assert first["two"] == pytest.approx(first["one"], rel=0.01)  # the same global gradient
    val = {run: [e["psnr"] for e in ev if e["event"] == "val"] for run, ev in events.items()}
    assert len(val["one"]) == len(val["two"]) == 2
    assert val["two"] == pytest.approx(val["one"], abs=0.05)  # the same student, to 0.05 dB
    env_two = json.loads((setup / "two" / "ddp" / "environment.json").read_text())
    assert env_two["world_size"] == 2
    # a torchrun run goes through `slkd`'s main(), which tunes glibc's allocator first
    assert env_two["allocator"].startswith("glibc ") or "glibc" not in platform.libc_ver()[0]
    ckpt = torch.load(setup / "two" / "ddp" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_two_rank_distillation_resumes_bit_identically(setup):
    """2 gloo ranks stopped after 2 of 4 steps and resumed reach exactly the weights of an
    uninterrupted 2-rank run (constant learning rate, so the shorter first leg has the same
    schedule; data, RNG and optimiser state come from the checkpoint)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(cfg, *extra):
        proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "slkd.cli.main",
                               "distill", "--config", str(cfg), "--device", "cpu", *extra],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]

    changes = {"train.iters": 4, "data.batch_size": 1, "train.ckpt_every": 1,
               "train.scheduler": {"type": "constant", "warmup_iters": 0}}
    straight = write_config(setup, "ddp-resume", **changes, output_dir=str(setup / "straight"))
    launch(straight)
    resumed = write_config(setup, "ddp-resume", **changes, output_dir=str(setup / "resumed"))
    launch(resumed, "train.iters=2")
    first = torch.load(setup / "resumed" / "ddp-resume" / "checkpoint.pt", weights_only=True)
    assert first["step"] == 2 and first["world_size"] == 2
    launch(resumed, "--resume")
    a = torch.load(setup / "straight" / "ddp-resume" / "weights.pth", weights_only=True)["params"]
    b = torch.load(setup / "resumed" / "ddp-resume" / "weights.pth", weights_only=True)["params"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    steps = [e["step"] for e in train_events(setup / "resumed" / "ddp-resume")]
    assert steps == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------------
# docs/reliability.md §8: train.loss for every method; Teacher B only where it is used
# --------------------------------------------------------------------------------------------


def _distiller(setup, name, **changes):
    from slkd.engine.builders import build_model_for_run
    from slkd.engine.config import load_config
    from slkd.engine.tasks import distiller_task

    cfg = load_config(write_config(setup, name, **changes))
    seed_everything(0)
    student = build_model_for_run(cfg)
    return distiller_task(cfg, student, None)[0], student


@pytest.mark.parametrize("loss", ["l1", "mse", "charbonnier"])
@pytest.mark.parametrize("method", ["scratch", "slkd", "output_kd", "fitnet", "at", "fakd"])
def test_every_method_uses_the_configured_pixel_loss(setup, method, loss):
    """`slkd distill` computed L1 whatever train.loss said, while config.yaml recorded the
    requested loss (docs/reliability.md §8, item 4). The pixel term is SupervisedTask's pixel_loss."""
    from slkd.losses import pixel_loss

    distiller, student = _distiller(setup, f"loss-{method}-{loss}",
                                    **{"distill.method": method, "train.loss": loss})
    gen = torch.Generator().manual_seed(3)
    batch = {"lq": torch.rand(2, 3, 16, 16, generator=gen), "gt": torch.rand(2, 3, 16, 16, generator=gen)}
    _, terms = distiller(batch)
    with torch.no_grad():
        expected = pixel_loss(loss, student(batch["lq"]), batch["gt"])
    assert torch.equal(terms["loss_pix"], expected)


def test_slkd_without_the_et_term_neither_needs_nor_loads_teacher_b(setup, capsys):
    """With distill.loss_weights.et=0 IRL computes nothing, yet Teacher B was demanded by the
    config check and loaded by the command (docs/reliability.md §8, item 10)."""
    from slkd.distill import distill_config

    assert "b" not in distill_config("slkd", loss_weights={"et": 0.0}).teacher_roles()
    assert "b" in distill_config("slkd").teacher_roles() and "b" not in distill_config("slkd", irl=False).teacher_roles()
    assert "b" not in distill_config("slkd", teacher_b="same_as_a").teacher_roles()
    assert "b" not in distill_config(method="fitnet").teacher_roles()
    cfg = write_config(setup, "no-et", **{"distill.loss_weights": {"et": 0.0}})
    assert main(["distill", "--config", str(cfg), "--device", "cpu", "teachers.b=null"]) == 0, \
        capsys.readouterr().err
    # a Teacher B that is not used is not loaded: a missing file does not matter
    capsys.readouterr()
    assert main(["distill", "--config", str(cfg), "--device", "cpu", "name=no-et-2",
                 f"teachers.b.weights={setup / 'nowhere.pth'}"]) == 0
    assert "teachers.b" not in capsys.readouterr().err
    # and with et > 0 it is needed, by the config check and by the command alike
    assert main(["distill", "--config", str(cfg), "--device", "cpu", "name=no-et-3", "teachers.b=null",
                 "distill.loss_weights.et=0.03"]) == 2
    assert "teachers.b: SLKD with IRL on needs Teacher B" in capsys.readouterr().err


def test_slkd_without_teacher_a_terms_does_not_load_teacher_a(setup, capsys):
    """IRL alone (no DRL, KL or img term) runs Teacher B only; Teacher A is not loaded."""
    from slkd.distill import distill_config

    irl_only = {"drl": False, "loss_weights": {"kl": 0.0, "img": 0.0}}
    assert distill_config("slkd", **irl_only).teacher_roles() == ("b",)
    assert distill_config("slkd", **irl_only, teacher_b="same_as_a").teacher_roles() == ("a",)
    assert distill_config("slkd").teacher_roles() == ("a", "b") and distill_config(method="scratch").teacher_roles() == ()
    cfg = write_config(setup, "irl-only", **{"distill.drl": False,
                                             "distill.loss_weights": {"kl": 0.0, "img": 0.0}})
    capsys.readouterr()
    assert main(["distill", "--config", str(cfg), "--device", "cpu",
                 f"teachers.a.weights={setup / 'nowhere.pth'}"]) == 0
    assert "teachers.a" not in capsys.readouterr().err


def test_an_ema_too_slow_for_the_run_is_noted(setup, capsys):
    from slkd.engine.ema import short_run_note, start_share

    assert start_share(0.999, 1000) == pytest.approx(0.3677, abs=1e-4)
    note = short_run_note(0.999, 1000)
    assert "about 1000 steps" in note and "still hold 37 %" in note and "train.ema <= 0.9954" in note
    assert short_run_note(0.999, 20000) is None and short_run_note(None, 10) is None
    assert short_run_note(0.9954, 1000) is None  # the suggested decay keeps about 1 %
    cfg = write_config(setup, "ema-short", **{"distill.method": "scratch", "train.ema": 0.9})
    assert main(["distill", "--config", str(cfg), "--device", "cpu"]) == 0
    assert "note: train.ema 0.9 averages over about 10 steps: after 2 iterations" in capsys.readouterr().err
    cfg = write_config(setup, "ema-fits", **{"distill.method": "scratch", "train.ema": 0.5, "train.iters": 6,
                                             "train.val_every": 6, "train.ckpt_every": 6})
    assert main(["distill", "--config", str(cfg), "--device", "cpu"]) == 0
    assert "train.ema" not in capsys.readouterr().err  # 0.5^6 = 1.6 %
