"""Stages: the training runs of a pipeline, each an ordinary run folder of the training engine,
and the one rule for what a rerun does with each (:func:`stage_state`): a finished run is
skipped with its seconds, an interrupted one resumed from its checkpoint, and a folder with run
files but no checkpoint (a stop before the first checkpoint: no trained weights) cleared and
started again.

``slkd compress`` (and ``slkd demo``) train their stages in-process, one after the other
(:func:`train_stages`); the studies under ``benchmarks/study`` start theirs as ``slkd train`` /
``slkd distill`` subprocesses, several at a time, and decide each with the same
:func:`begin_stage`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import yaml

from slkd.engine.runlock import FolderLock
from slkd.engine.runlog import run_state
from slkd.engine.runstate import CHECKPOINT, WEIGHTS, earlier_run_files
from slkd.engine.text import duration
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes, remove_stale_temps

if TYPE_CHECKING:
    from slkd.engine.config import TrainRunConfig
    from slkd.engine.trainer import RunWords

__all__ = ["DONE", "NEW", "RESUME", "Stage", "StageState", "begin_stage", "build_stage", "clear_unstarted",
           "stage_state", "train_stages"]

#: what :func:`stage_state` finds: a finished run (skip it), one to resume, one to start
DONE, RESUME, NEW = "done", "resume", "new"


@dataclass
class Stage:
    """One training run of a pipeline: its run folder's name, how it is described, its config
    (plain data, as stored) and that config validated, and the task it trains
    (:func:`slkd.engine.tasks.supervised_task` or :func:`~slkd.engine.tasks.distiller_task`)."""

    name: str
    what: str
    config: dict
    cfg: "TrainRunConfig"
    make_task: Callable


def build_stage(name: str, what: str, config: dict, make_task: Callable) -> Stage:
    """A :class:`Stage` of ``config``, validated now (a bad config is one line naming the
    stage, before anything trains)."""
    from slkd.engine.config import TrainRunConfig, from_dict

    try:
        cfg = from_dict(TrainRunConfig, config)
    except SlkdError as exc:
        raise SlkdError(f"stage {name}: {exc}") from None
    return Stage(name, what, config, cfg, make_task)


@dataclass(frozen=True)
class StageState:
    """What a rerun does with a run folder (:data:`DONE`, :data:`RESUME` or :data:`NEW`), and
    the training seconds its log holds (summed over the processes that trained it; None
    without a readable log)."""

    how: str
    seconds: float | None = None


def stage_state(run_dir: Path, iters: int) -> StageState:
    """The state of the run in ``run_dir`` that should reach ``iters`` steps: :data:`DONE` when
    its log says it did and its weights are there (:func:`slkd.engine.runlog.run_state`),
    :data:`RESUME` when it holds a checkpoint, else :data:`NEW`. Nothing is changed."""
    run_dir = Path(run_dir)
    state = run_state(run_dir, iters)
    if state.finished:
        return StageState(DONE, state.seconds)
    return StageState(RESUME if (run_dir / CHECKPOINT).is_file() else NEW, state.seconds)


def clear_unstarted(run_dir: Path) -> None:
    """Remove the run files of a folder without a checkpoint (they hold no trained weights: a
    stop before the first checkpoint), so that the run starts again there."""
    for name in earlier_run_files(run_dir):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    remove_stale_temps(run_dir, [CHECKPOINT, WEIGHTS, "metrics.jsonl"])


def begin_stage(run_dir: Path, iters: int, *, clear: bool = True) -> StageState:
    """:func:`stage_state`, and for a :data:`NEW` run whose folder holds run files, those files
    cleared (with ``clear``; under ``torchrun`` rank 0 clears), under the folder's lock
    (:class:`~slkd.engine.runlock.FolderLock`: a folder another live process writes is
    refused, not cleared)."""
    run_dir = Path(run_dir)
    state = stage_state(run_dir, iters)
    if state.how == NEW and clear and earlier_run_files(run_dir):
        with FolderLock(run_dir):
            clear_unstarted(run_dir)
    return state


def train_stages(stages: Sequence[Stage], out: Path, *, total: int, words: "RunWords", times_file: str,
                 configs: str = "configs", device: str = "auto", log: Callable[[str], None]) -> dict[str, float]:
    """Train every stage in ``out/<stage name>`` in-process, in order, as :func:`begin_stage`
    decides: skip a finished one, resume an interrupted one, start the others. Each stage's
    config is written to ``out/<configs>/<stage name>.yaml`` and, once it has trained, every
    stage's seconds so far to ``out/<times_file>``; ``total`` is the count the progress lines
    ("[k/total]") show. Returns each stage's training seconds (over every process that trained
    it, from its log: a process killed with ``kill -9`` counts up to its last checkpoint).
    Under ``torchrun`` every rank trains and rank 0 writes and logs."""
    from slkd.engine.distributed import barrier, init_distributed, shutdown
    from slkd.engine.runlock import lock_on_rank0

    seconds: dict[str, float] = {}
    dist = init_distributed(device)  # under torchrun: one process group for every stage
    try:
        for k, stage in enumerate(stages, 1):
            # one writer per stage folder, from before it is looked at (an unstarted stage's files
            # are cleared) to the stage's end; the trainer takes the same lock again
            lock = lock_on_rank0(out / stage.name, dist)
            try:
                seconds[stage.name] = _train_stage(stage, f"[{k}/{total}]", out, dist, words, times_file, configs,
                                                   device, log, seconds)
            finally:
                if lock is not None:
                    lock.release()
        barrier()
    finally:
        shutdown()
    return seconds


def _train_stage(stage: Stage, counter: str, out: Path, dist, words: "RunWords", times_file: str, configs: str,
                 device: str, log: Callable[[str], None], seconds: dict[str, float]) -> float:
    """Train (or skip, or resume) ``stage``; its training seconds."""
    from slkd.engine.distributed import barrier
    from slkd.engine.runner import log_silent, run_config

    rank0 = dist.is_main
    run_dir = out / stage.name
    iters = stage.cfg.train.iters
    state = begin_stage(run_dir, iters, clear=rank0)
    if rank0:
        log(f"{counter} {stage.what}, {iters} iterations" + (" (resuming / reusing)" if state.how != NEW else ""))
        atomic_write_bytes(out / configs / f"{stage.name}.yaml", yaml.safe_dump(stage.config, sort_keys=False).encode())
    if state.how == DONE:
        if rank0:
            log(f"      finished earlier ({iters} iterations in {run_dir}); skipped")
        return state.seconds or 0.0
    barrier()  # every rank sees the cleared folder before the trainer checks it
    start = time.perf_counter()
    # no write in a `finally` here: a stopped stage's time is in its log, and a failing write
    # (a full disk) would replace the trainer's message naming the file
    run_config(stage.cfg, make_task=stage.make_task, resume=state.how == RESUME, device=device,
               log=log if rank0 else log_silent, words=words)
    elapsed = time.perf_counter() - start
    done = stage_state(run_dir, iters).seconds or elapsed
    if rank0:
        atomic_write_bytes(out / times_file, json.dumps({**seconds, stage.name: done}, indent=2).encode())
        log(f"      {stage.name} done in {duration(elapsed)}")
    return done
