"""The life of one training run, for every caller: ``slkd train``/``slkd distill`` (a config
file), and the pipelines that build their configs in memory (``slkd compress``, ``slkd demo``).

:func:`run_config` joins the ranks, seeds, builds the model and data sets, lets ``make_task``
build what the step computes (:mod:`slkd.engine.tasks`), runs the trainer and leaves the ranks.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch.distributed

from slkd.engine.builders import build_model_for_run, build_train_set, build_val_sets
from slkd.engine.config import TrainRunConfig
from slkd.engine.distributed import barrier, init_distributed, shutdown
from slkd.engine.ema import short_run_note
from slkd.engine.runstate import seed_everything
from slkd.engine.trainer import Trainer, TrainerConfig, resolve_run_dir

__all__ = ["log_stderr", "run_config"]


def log_stderr(message: str) -> None:
    """Progress and remarks go to stderr (stdout stays clean for --json)."""
    print(message, file=sys.stderr, flush=True)


def run_config(cfg: TrainRunConfig, *, make_task, resume: bool = False, device: str = "auto",
               argv: list[str] | None = None, log: Callable[[str], None] = log_stderr) -> dict | None:
    """Train the validated run ``cfg`` (``--resume`` with ``resume``) on ``device`` (auto, cpu,
    cuda; under ``torchrun`` each rank takes its local GPU). ``log`` receives rank 0's remarks;
    ``argv`` is recorded in the run's ``command.txt``. Returns the run's result on rank 0 (None
    on the other ranks). A process group that exists already (a pipeline that runs several
    stages joins ``torchrun``'s group once: re-creating it per stage hung the second stage) is
    used and left to its owner; one created here is destroyed at the end."""
    owned = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    dist = init_distributed(device)
    note = log if dist.is_main else None
    try:
        run_dir = resolve_run_dir(cfg)
        ema_note = short_run_note(cfg.train.ema, cfg.train.iters)
        if ema_note and note:
            note(ema_note)
        seed_everything(cfg.seed)  # same initial weights on every rank and in every rerun
        model = build_model_for_run(cfg, log=note)
        task, summary = make_task(cfg, model, note)
        trainer = Trainer(TrainerConfig.from_run(cfg), task, build_train_set(cfg), build_val_sets(cfg),
                          run_dir=run_dir, dist=dist, resume=resume,
                          argv=sys.argv if argv is None else argv)
        result = trainer.run()
        # wait for rank 0's last checkpoint before tearing gloo down: destroying the group
        # while a peer is still busy aborted that peer ("terminate called without an active
        # exception"). Only on success, so a rank that failed alone cannot hang the others here.
        barrier()
        return {"run_dir": str(run_dir), **summary, **result} if dist.is_main else None
    finally:
        if owned:
            shutdown()
