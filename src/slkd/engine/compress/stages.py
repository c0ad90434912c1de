"""Training the stages of a prepared job: each an ordinary run folder of the training engine,
skipped when finished, resumed when interrupted, its seconds added up over reruns."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from slkd.engine.compress.plan import SETTINGS_FILE, TIMES_FILE, Log, Prepared, log_silent
from slkd.engine.distributed import barrier, init_distributed, shutdown
from slkd.engine.runner import log_stderr, run_config
from slkd.engine.runstate import CHECKPOINT, WEIGHTS, earlier_run_files
from slkd.fileio import atomic_write_bytes, remove_stale_temps


def _finished(run_dir: Path, iters: int) -> bool:
    """The stage's run reached ``iters`` and saved it (its last checkpoint event)."""
    if not (run_dir / CHECKPOINT).is_file() or not (run_dir / WEIGHTS).is_file():
        return False
    last = -1
    try:
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "checkpoint":
                last = max(last, int(event.get("step", -1)))
    except OSError:
        return False
    return last >= iters


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


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _stage_seconds(out: Path) -> dict[str, float]:
    try:
        data = json.loads((out / TIMES_FILE).read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def train_stages(prep: Prepared, *, device: str = "auto", log: Log = log_stderr) -> dict[str, float]:
    """Train every stage, resume an interrupted one, skip a finished one; returns each stage's
    training seconds (over every run of the job)."""
    out = prep.out
    total = len(prep.stages) + 2
    seconds = _stage_seconds(out)
    dist = init_distributed(device)  # under torchrun: one process group for every stage
    rank0 = dist.is_main
    try:
        if rank0:
            atomic_write_bytes(out / SETTINGS_FILE, json.dumps({"settings": prep.settings}, indent=2).encode())
        for k, stage in enumerate(prep.stages, 1):
            run_dir = out / stage.name
            iters = stage.cfg.train.iters
            resume = (run_dir / CHECKPOINT).is_file()
            if rank0:
                log(f"[{k}/{total}] {stage.what}, {iters} iterations" + (" (resuming / reusing)" if resume else ""))
                atomic_write_bytes(out / "configs" / f"{stage.name}.yaml",
                                   yaml.safe_dump(stage.config, sort_keys=False).encode())
            if resume and _finished(run_dir, iters):
                if rank0:
                    log(f"      finished earlier ({iters} iterations in {run_dir}); skipped")
                continue
            if not resume and rank0 and earlier_run_files(run_dir):
                _clear_unstarted(run_dir)
            barrier()  # every rank sees the cleared folder before the trainer checks it
            start = time.perf_counter()
            try:
                run_config(stage.cfg, make_task=stage.make_task, resume=resume, device=device,
                           log=log if rank0 else log_silent)
            finally:  # also when stopped: the time spent counts when the stage resumes
                elapsed = time.perf_counter() - start
                seconds[stage.name] = seconds.get(stage.name, 0.0) + elapsed
                if rank0:
                    atomic_write_bytes(out / TIMES_FILE, json.dumps(seconds, indent=2).encode())
            if rank0:
                log(f"      {stage.name} done in {duration(elapsed)}")
        barrier()
    finally:
        shutdown()
    return seconds

