"""Run folders and logging: what ran, with what, and every number it produced.

A run folder holds ``config.yaml`` (resolved), ``command.txt``, ``environment.json``
(versions, git commit, world size) and ``metrics.jsonl`` — one JSON object per event, so
plots never parse console text. The console gets one readable line per logging interval
(losses, lr, speed, ETA), plus a live progress bar when stderr is a terminal. TensorBoard
scalars are written too when the ``tensorboard`` package is installed. Only rank 0 writes.

A run killed without warning (SIGKILL, power cut) may leave a half-written last line and events
of steps whose work was lost with it (after the last checkpoint). When the run is continued,
:func:`repair_events` drops both, so ``metrics.jsonl`` lists every step once, as an
uninterrupted run would, plus one ``start`` event per (re)start.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

import slkd
from slkd.engine.allocator import allocator_status
from slkd.engine.text import duration, log_number
from slkd.errors import SlkdError
from slkd.models.pretrained import RUN_WEIGHTS
from slkd.fileio import atomic_write_bytes


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the slkd checkout (with ``-dirty`` if modified), or None outside git."""
    where = cwd or Path(slkd.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=where,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(world_size: int) -> dict[str, Any]:
    import numpy

    return {
        "slkd": slkd.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "allocator": allocator_status(),
        "world_size": world_size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_run_files(run_dir: Path, config: dict, world_size: int, argv: list[str] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    command = shlex.join(argv if argv is not None else sys.argv)
    atomic_write_bytes(run_dir / "command.txt", (command + "\n").encode())
    atomic_write_bytes(run_dir / "environment.json",
                       (json.dumps(environment(world_size), indent=2) + "\n").encode())


def read_events(run_dir: str | Path) -> list[dict]:
    """Every event of a run's ``metrics.jsonl`` in file order. A missing file is an error; a
    line cut off by a crash is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise SlkdError(f"no metrics.jsonl in {run_dir}; is it a run folder of slkd train/distill?")
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def logged_seconds(events: list[dict]) -> float:
    """A run's training seconds from its log, summed over the processes that ran it (one per
    ``start`` event): each from its start to its last checkpoint, so a process killed without
    warning (``kill -9``) still counts up to its last checkpoint. Work after a process's last
    checkpoint was lost and done again by the resume, so it is counted once, in the process that
    kept it; time between processes (a run resumed the next day) is not counted."""
    total, start, last = 0.0, None, None
    for e in events + [{"event": "start"}]:
        if e.get("event") == "start":
            if start is not None and last is not None:
                total += last - start
            start, last = e.get("time"), None
        elif e.get("event") == "checkpoint":
            last = e["time"]
    return total


@dataclass(frozen=True)
class RunState:
    """What a run folder's log says about the run (:func:`run_state`): the one reading of
    ``metrics.jsonl`` that decides whether a run is finished, how long it trained and its best
    validation, for every caller that skips, resumes or publishes runs."""

    #: the log records a checkpoint at ``iters`` (or later) and the final weights file exists
    finished: bool
    #: the step of the last checkpoint in the log (-1: none; 0 runs have no log)
    last_checkpoint: int
    #: training seconds over every process that ran it (:func:`logged_seconds`); None when the
    #: log cannot tell (no log, or events without times)
    seconds: float | None
    #: the best validation event (highest PSNR; the first on a tie) of each validation set
    best: dict[str, dict] = field(default_factory=dict)


def run_state(run_dir: str | Path, iters: int, weights: str = RUN_WEIGHTS) -> RunState:
    """The state of the run in ``run_dir`` that should reach ``iters`` steps: finished when its
    log holds a checkpoint event at step ``iters`` or later and ``weights`` (the run's final
    weights file) is there. A folder without a log is an unstarted run, never an error; a line
    cut off by a crash is skipped (:func:`read_events`)."""
    run_dir = Path(run_dir)
    try:
        events = read_events(run_dir)
    except (SlkdError, OSError):
        return RunState(finished=False, last_checkpoint=-1, seconds=None)
    last = -1
    best: dict[str, dict] = {}
    for event in events:
        kind = event.get("event")
        try:
            if kind == "checkpoint":
                last = max(last, int(event.get("step", -1)))
            elif kind == "val" and "psnr" in event:
                held = best.get(event.get("dataset"))
                if held is None or event["psnr"] > held["psnr"]:
                    best[event.get("dataset")] = event
        except (TypeError, ValueError):
            continue
    try:
        seconds = logged_seconds(events)
    except (KeyError, TypeError, ValueError):
        seconds = None
    return RunState(finished=last >= iters and (run_dir / weights).is_file(), last_checkpoint=last,
                    seconds=seconds, best=best)


def repair_events(path: Path, last_step: int) -> int:
    """Keep only the complete JSON lines of ``path`` whose ``step`` is at most ``last_step``.

    Called before a run appends to an existing ``metrics.jsonl``: a line cut off by a crash
    would otherwise swallow the next event, and events after the checkpoint the run continues
    from describe steps that are computed again. The file is rewritten atomically, and only
    when something is dropped. Returns the number of lines dropped.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    kept, dropped = [], 0
    for line in data.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("cut off")
            step = json.loads(line)["step"]
            keep = int(step) <= last_step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, b"".join(kept))
    return dropped


class RunLogger:
    """Console, ``metrics.jsonl`` and optional TensorBoard; silent on ranks other than 0.

    ``resume_step``: the step the run (re)starts from; events after it already in
    ``metrics.jsonl`` (and a line cut off by a crash) are dropped first, see
    :func:`repair_events`; their number is in :attr:`dropped_events`.
    """

    def __init__(self, run_dir: Path, *, enabled: bool, total_iters: int, tensorboard: bool = True,
                 resume_step: int = 0, kept: Callable[[], str] | None = None) -> None:
        self.enabled = enabled
        self.kept = kept  # what a stop leaves, in words (the trainer's checkpoint), for messages
        self.path = run_dir / "metrics.jsonl"
        self.total = total_iters
        self.tty = sys.stderr.isatty()
        self.dropped_events = repair_events(run_dir / "metrics.jsonl", resume_step) if enabled else 0
        self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard not installed: JSON lines are the record
                self._tb = None

    def event(self, kind: str, step: int, **data: Any) -> None:
        """Record one event (``train``, ``val``, ``checkpoint``, ``skip`` …) as a JSON line."""
        if not self.enabled:
            return
        record = {"event": kind, "step": step, "time": round(time.time(), 3), **data}
        try:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        except OSError as exc:  # a full disk, a quota, a file system gone read-only
            raise SlkdError(f"cannot write {self.path}: {exc.strerror or exc}; the run stops"
                            + (f" and {self.kept()}" if self.kept else "")) from None
        if self._tb is not None:
            for key, value in data.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def console(self, message: str) -> None:
        if self.enabled:
            if self.tty:
                print("\r\033[K", end="", file=sys.stderr)
            print(message, file=sys.stderr, flush=True)

    def train_line(self, step: int, values: dict[str, float], lr: float, it_per_s: float) -> None:
        eta = (self.total - step) / it_per_s if it_per_s > 0 else float("inf")
        parts = "  ".join(f"{k} {log_number(v)}" for k, v in values.items())
        self.console(f"[{step:>{len(str(self.total))}}/{self.total}] {parts}  lr {lr:.2e}  "
                     f"{it_per_s:.2f} it/s  ETA {duration(eta)}")

    def progress(self, step: int) -> None:
        """A live one-line bar on a terminal (nothing in logs and CI output)."""
        if self.enabled and self.tty:
            width = 30
            done = int(width * step / self.total)
            print(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.total}", end="",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._jsonl is not None:
            try:
                self._jsonl.close()
            except OSError:  # the write that failed was reported already
                pass
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
