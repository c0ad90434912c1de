"""The life of one training run, for every caller: ``slkd train``/``slkd distill`` (a config
file), and the pipelines that build their configs in memory (``slkd compress``, ``slkd demo``).

:func:`run_config` joins the ranks, seeds, builds the model and data sets, lets ``make_task``
build what the step computes (:mod:`slkd.engine.tasks`), runs the trainer and leaves the ranks.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch.distributed

from slkd.data.overlap import check_held_out, held_out_warning
from slkd.engine.builders import build_model_for_run, build_train_set, build_val_sets
from slkd.engine.config import ConfigError, TrainRunConfig
from slkd.engine.distributed import barrier, init_distributed, shutdown
from slkd.engine.ema import short_run_note
from slkd.engine.memory import check_batch_fits
from slkd.engine.runstate import seed_everything
from slkd.engine.trainer import RunWords, Trainer, TrainerConfig, resolve_run_dir
from slkd.errors import DatasetError

__all__ = ["check_data", "log_stderr", "run_config"]


def log_stderr(message: str) -> None:
    """Progress and remarks go to stderr (stdout stays clean for --json)."""
    print(message, file=sys.stderr, flush=True)


def log_silent(message: str) -> None:
    """No progress (the ranks of ``torchrun`` other than 0)."""


def check_data(train_set, val_sets: dict, note: Callable[[str], None] | None) -> dict[str, dict]:
    """Before step 1: name what the data folders held that is not used (the data sets'
    ``warnings``), and apply the held-out rule (:func:`slkd.data.overlap.check_held_out`: a
    validation set made only of training images is refused, one with some is a warning).
    Returns the sets with training images among their validation images."""
    for where, dataset in [("data.train", train_set), *((f"data.val ({n})", d) for n, d in val_sets.items())]:
        for warning in getattr(dataset, "warnings", ()):
            if note:
                note(f"warning: {where}: {warning}")
    if not hasattr(train_set, "item_files"):
        return {}
    sets = {name: [(n, files) for n, files in zip(d.names, d.item_files())]
            for name, d in val_sets.items() if hasattr(d, "item_files")}
    train_files = [f for files in train_set.item_files() for f in files]
    try:
        overlap = check_held_out(train_files, sets, train="data.train")
    except DatasetError as exc:
        raise ConfigError(f"data.val: {exc}") from None
    for name, found in overlap.items():
        if note:
            note(f"warning: data.val: {held_out_warning(name, found)}")
    return overlap


def run_config(cfg: TrainRunConfig, *, make_task, resume: bool = False, device: str = "auto",
               argv: list[str] | None = None, log: Callable[[str], None] = log_stderr,
               words: RunWords | None = None) -> dict | None:
    """Train the validated run ``cfg`` (``--resume`` with ``resume``) on ``device`` (auto, cpu,
    cuda; under ``torchrun`` each rank takes its local GPU). ``log`` receives rank 0's remarks;
    ``argv`` is recorded in the run's ``command.txt``. Returns the run's result on rank 0 (None
    on the other ranks). ``words``: how the trainer's messages tell the caller's user to continue
    a stopped run or start another (:class:`~slkd.engine.trainer.RunWords`). A process group
    that exists already (a pipeline that runs several stages joins ``torchrun``'s group once:
    re-creating it per stage hung the second stage) is used and left to its owner; one created
    here is destroyed at the end."""
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
        train_set, val_sets = build_train_set(cfg), build_val_sets(cfg)
        overlap = check_data(train_set, val_sets, note)
        if cfg.data.train.patch_size is not None:  # a batch that cannot fit fails now, not at step 1
            check_batch_fits({cfg.model.name: model}, cfg.data.train.patch_size, cfg.data.batch_size,
                             dist.device, batch_option="data.batch_size", patch_option="data.train.patch_size")
        trainer = Trainer(TrainerConfig.from_run(cfg), task, train_set, val_sets,
                          run_dir=run_dir, dist=dist, resume=resume,
                          argv=sys.argv if argv is None else argv, words=words)
        result = trainer.run()
        if overlap:  # the result says which validation scores are not of held-out images
            result = {**result, "val_not_held_out": overlap}
        # wait for rank 0's last checkpoint before tearing gloo down: destroying the group
        # while a peer is still busy aborted that peer ("terminate called without an active
        # exception"). Only on success, so a rank that failed alone cannot hang the others here.
        barrier()
        return {"run_dir": str(run_dir), **summary, **result} if dist.is_main else None
    finally:
        if owned:
            shutdown()
