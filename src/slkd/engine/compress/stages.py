"""Training the stages of a prepared job: each an ordinary run folder of the training engine,
skipped when finished, resumed when interrupted, its seconds added up over reruns (from its
log, so the processes killed without warning count too)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from slkd.engine.compress.plan import TIMES_FILE, Log, Prepared, log_silent
from slkd.engine.distributed import barrier, init_distributed, shutdown
from slkd.engine.runlock import lock_on_rank0
from slkd.engine.runlog import run_state
from slkd.engine.runner import log_stderr, run_config
from slkd.engine.text import duration
from slkd.engine.runstate import CHECKPOINT, WEIGHTS, earlier_run_files
from slkd.engine.trainer import RunWords
from slkd.fileio import atomic_write_bytes, remove_stale_temps

#: how the stages' messages tell the user to continue (compress and demo have no --resume)
WORDS = RunWords(resume="rerun the same command to continue it", new_run="give a new --out")


def _clear_unstarted(run_dir: Path) -> None:
    """A stage folder with run files but no checkpoint holds no trained weights (a stop before
    the first checkpoint): remove those files so the stage starts again."""
    for name in earlier_run_files(run_dir):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    remove_stale_temps(run_dir, [CHECKPOINT, WEIGHTS, "metrics.jsonl"])


def train_stages(prep: Prepared, *, device: str = "auto", log: Log = log_stderr) -> dict[str, float]:
    """Train every stage, resume an interrupted one, skip a finished one; returns each stage's
    training seconds (over every run of the job). The job record is written already
    (:func:`~slkd.engine.compress.prepare.claim_out`)."""
    seconds: dict[str, float] = {}
    dist = init_distributed(device)  # under torchrun: one process group for every stage
    try:
        for k, stage in enumerate(prep.stages, 1):
            # one writer per stage folder, from before it is looked at (an unstarted stage's files
            # are cleared) to the stage's end; the trainer takes the same lock again
            lock = lock_on_rank0(prep.out / stage.name, dist)
            try:
                seconds[stage.name] = _train_stage(prep, k, stage, dist, device, log, seconds)
            finally:
                if lock is not None:
                    lock.release()
        barrier()
    finally:
        shutdown()
    return seconds


def _train_stage(prep: Prepared, k: int, stage, dist, device: str, log: Log, seconds: dict[str, float]) -> float:
    """Train (or skip, or resume) stage ``k``; its training seconds."""
    out, rank0 = prep.out, dist.is_main
    total = len(prep.stages) + 2
    run_dir = out / stage.name
    iters = stage.cfg.train.iters
    resume = (run_dir / CHECKPOINT).is_file()
    if rank0:
        log(f"[{k}/{total}] {stage.what}, {iters} iterations" + (" (resuming / reusing)" if resume else ""))
        atomic_write_bytes(out / "configs" / f"{stage.name}.yaml",
                           yaml.safe_dump(stage.config, sort_keys=False).encode())
    earlier = run_state(run_dir, iters) if resume else None
    if earlier is not None and earlier.finished:
        if rank0:
            log(f"      finished earlier ({iters} iterations in {run_dir}); skipped")
        return earlier.seconds or 0.0
    if not resume and rank0 and earlier_run_files(run_dir):
        _clear_unstarted(run_dir)
    barrier()  # every rank sees the cleared folder before the trainer checks it
    start = time.perf_counter()
    # no write in a `finally` here: a stopped stage's time is in its log, and a failing write
    # (a full disk) would replace the trainer's message naming the file
    run_config(stage.cfg, make_task=stage.make_task, resume=resume, device=device,
               log=log if rank0 else log_silent, words=WORDS)
    elapsed = time.perf_counter() - start
    # from the log, over every process that trained the stage: a process killed with ``kill -9``
    # counts up to its last checkpoint (the pipeline's own clock dies with it)
    done = run_state(run_dir, iters).seconds or elapsed
    if rank0:
        atomic_write_bytes(out / TIMES_FILE, json.dumps({**seconds, stage.name: done}, indent=2).encode())
        log(f"      {stage.name} done in {duration(elapsed)}")
    return done

