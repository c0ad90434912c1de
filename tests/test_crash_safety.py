"""Crash safety of `slkd train`: killed at random points, resumed, same weights as no crash.

A tiny run (res-sl-tiny, 32×32 patches of the bundled images, batch 2, a checkpoint every step)
is started with ``slkd train`` in a subprocess and killed at seeded random steps, six times:

* four SIGKILLs — no handler runs, as after a power cut, an OOM kill or a pre-empted job —
  either from outside, a random few milliseconds after a checkpoint was logged (the kill then
  lands in the next step's computation, logging or checkpoint writing), or by the process
  itself halfway through writing the checkpoint file;
* one SIGTERM and one SIGINT (Ctrl-C): the run stops at the end of the step in progress, saves
  a checkpoint of exactly that step and exits with code 2.

After every kill ``--resume`` must find an intact checkpoint, and the run finished after the last
one must hold exactly the weights, optimiser state and logged losses of an uninterrupted run with
the same seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from slkd.engine.runlock import LOCK_FILE
from slkd.engine.trainer import CHECKPOINT, WEIGHTS

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"), pytest.mark.slow]

ASSETS = Path(__file__).resolve().parents[1] / "src" / "slkd" / "assets"
ITERS = 30
KILLS = 4  # SIGKILLs; plus one SIGTERM and one SIGINT
SEED = 20250611  # of the kill points; the run's own seed is in the config


def _config(out: Path) -> dict:
    return {
        "name": "crash",
        "output_dir": str(out),
        "seed": 7,
        "model": {"name": "res-sl-tiny"},
        "data": {
            "root": str(ASSETS),
            "batch_size": 2,
            "num_workers": 0,
            "train": {"type": "degraded", "roots": ["."], "patch_size": 32, "augment": True,
                      "degradation": {"name": "gaussian_noise", "params": {"sigma": [10, 50]}}},
            "val": [],
        },
        "train": {"iters": ITERS, "optimizer": {"lr": 1e-3}, "scheduler": {"warmup_iters": 3},
                  "log_every": 1, "val_every": 10_000, "ckpt_every": 1},
    }


# `slkd train`, optionally dying by SIGKILL halfway through writing the checkpoint of one step
DRIVER = r"""
import io, os, signal, sys
import torch

kill_step = int(os.environ.get("KILL_IN_CHECKPOINT_AT", "0"))
real_save = torch.save

def save(obj, f, *args, **kwargs):
    if kill_step and isinstance(obj, dict) and obj.get("step") == kill_step and ".checkpoint.pt." in str(f):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(f, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
from slkd.cli.main import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _launch(cfg: Path, *extra: str, kill_in_checkpoint_at: int = 0) -> subprocess.Popen:
    # one intra-op thread in every run: the reference and the resumed runs use the same kernels
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "KILL_IN_CHECKPOINT_AT": str(kill_in_checkpoint_at)}
    # output to a file, not a pipe: nobody reads a pipe while the run is being watched
    log = open(cfg.with_name(f"{cfg.stem}-{len(list(cfg.parent.glob(cfg.stem + '-*.log')))}.log"), "wb")
    with log:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, "--config", str(cfg), "--device", "cpu", *extra],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log_path = Path(log.name)
    return proc


def _checkpoint_steps(run: Path) -> list[int]:
    """Steps of the complete ``checkpoint`` lines of metrics.jsonl written so far."""
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    steps = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event["event"] == "checkpoint":
            steps.append(event["step"])
    return steps


def _signal_after_checkpoint(proc: subprocess.Popen, run: Path, target: int, delay: float,
                             sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``proc`` ``delay`` s after a checkpoint at step >= ``target`` was logged,
    and wait for it to end. Returns False when the process ended by itself first."""
    deadline = time.monotonic() + 120
    while not any(s >= target for s in _checkpoint_steps(run)):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return True


def _finish(proc: subprocess.Popen) -> None:
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.log_path.read_text(errors="replace")[-3000:]


def _train_losses(run: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "train"]
    steps = [e["step"] for e in train]
    assert steps == sorted(set(steps)), f"train events repeated or out of order: {steps}"
    return {e["step"]: e["loss"] for e in train}


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    ref_cfg, crash_cfg = tmp_path / "ref.yaml", tmp_path / "crash.yaml"
    ref_cfg.write_text(yaml.safe_dump(_config(tmp_path / "ref")))
    crash_cfg.write_text(yaml.safe_dump(_config(tmp_path / "crashed")))
    run = tmp_path / "crashed" / "crash"

    reference = _launch(ref_cfg)  # runs alongside the first crashing run (one thread each)
    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(2, ITERS - 8), KILLS + 2))
    kinds = ["outside", "in-checkpoint"] + [rng.choice(["outside", "in-checkpoint"]) for _ in range(KILLS - 2)]
    kinds += ["SIGTERM", "SIGINT"]
    rng.shuffle(kinds)
    kills, resumed_from, done = 0, [], 0
    resume: tuple[str, ...] = ()
    for target, kind in zip(targets, kinds):
        target = max(target, done + 2)
        if kind == "in-checkpoint":
            proc = _launch(crash_cfg, *resume, kill_in_checkpoint_at=target)
            proc.wait(timeout=300)
            assert proc.returncode == -signal.SIGKILL, proc.log_path.read_text(errors="replace")[-3000:]
            # the half-written file is the hidden temporary, never checkpoint.pt itself
            assert [p.name for p in run.glob(".checkpoint.pt.*.tmp")], "no write was interrupted"
        else:
            sig = signal.SIGKILL if kind == "outside" else getattr(signal, kind)
            proc = _launch(crash_cfg, *resume)
            if not _signal_after_checkpoint(proc, run, target, rng.uniform(0.0, 0.15), sig):
                break  # finished before the kill: nothing left to interrupt
        kills += 1
        # the checkpoint left behind is complete and loads safely
        state = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
        assert done < state["step"] < ITERS
        if kind == "in-checkpoint":
            assert state["step"] == target - 1  # the previous one, intact
        if kind in ("SIGTERM", "SIGINT"):
            log = proc.log_path.read_text(errors="replace")
            assert proc.returncode == 2, log[-3000:]
            what = "Ctrl-C" if kind == "SIGINT" else "SIGTERM"
            assert f"{what} at step {state['step']}; checkpoint saved" in log, log[-3000:]
            # a graceful stop loses no step: the checkpoint is the last step trained
            assert max(_train_losses(run)) == state["step"]
        done = state["step"]
        resumed_from.append(done)
        resume = ("--resume",)
    proc = _launch(crash_cfg, *resume)
    _finish(proc)
    _finish(reference)
    assert kills >= KILLS, f"only {kills} kills landed before the run finished"

    final = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    ref = torch.load(tmp_path / "ref" / "crash" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert final["step"] == ref["step"] == ITERS
    assert final["model"].keys() == ref["model"].keys()
    for key in ref["model"]:
        assert torch.equal(final["model"][key], ref["model"][key]), key
    for a, b in zip(final["optimizer"]["state"].values(), ref["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    weights = torch.load(run / WEIGHTS, weights_only=True)["params"]
    ref_weights = torch.load(tmp_path / "ref" / "crash" / WEIGHTS, weights_only=True)["params"]
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)

    # the log reads like the uninterrupted run's: every step once, the same losses, bit for bit
    assert _train_losses(run) == _train_losses(tmp_path / "ref" / "crash")
    starts = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "start"]
    assert [s["step"] for s in starts] == [0, *resumed_from]
    # no temporary file of an interrupted atomic write is left behind (the lock file of the
    # killed processes stays, and blocked none of the resumes: slkd.engine.runlock)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [LOCK_FILE]
