"""The state a training run keeps besides its weights: what marks a run folder, which settings
``--resume`` may change, seeding and the RNG states saved in a checkpoint, and the
learning-rate schedule (a function of the step, so a resumed run continues it exactly).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from slkd.models.pretrained import RUN_WEIGHTS

__all__ = ["CHECKPOINT", "CHECKPOINT_KEYS", "CONFIG", "RESUME_MAY_CHANGE", "RUN_FILES", "WEIGHTS",
           "config_changes", "earlier_run_files", "lr_lambda", "rng_state", "seed_everything", "set_rng_state"]

CHECKPOINT = "checkpoint.pt"
WEIGHTS = RUN_WEIGHTS
CONFIG = "config.yaml"
#: what a checkpoint must hold to be resumed from
CHECKPOINT_KEYS = ("step", "model", "ema", "optimizer", "scheduler", "best", "rng")
#: the files (and folder) a run writes; any of them marks a folder as holding a run
RUN_FILES = (CONFIG, "command.txt", "environment.json", "metrics.jsonl", CHECKPOINT, WEIGHTS, "tensorboard")
#: settings ``--resume`` may change: where the run folder is, how long it runs (the cosine
#: schedule then ends at the new ``train.iters``) and how often it logs, validates and saves.
#: Any other change (learning rate, data, model, loss, method …) would be ignored by the
#: restored state or mix two recipes in one run, so it is refused.
RESUME_MAY_CHANGE = ("name", "output_dir", "train.iters", "train.log_every", "train.val_every",
                     "train.ckpt_every", "train.max_bad_steps", "data.num_workers",
                     "data.device_data")


def earlier_run_files(run_dir: Path) -> list[str]:
    """The files of a run in ``run_dir`` (config.yaml, metrics.jsonl, weights, checkpoint …)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name in RUN_FILES or (p.name.startswith("best_") and p.suffix == ".pth"))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.optimizer.lr": 0.001, "data.val[0].limit": 2, …}`` of nested plain data."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: data}


def config_changes(before: dict, after: dict) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between two configs (plain data), by dotted key: (before, after);
    a key missing on one side is ``None`` there."""
    a, b = _flatten(before), _flatten(after)
    keys = list(b) + [k for k in a if k not in b]  # in the order of the config
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(iters: int, warmup: int, min_ratio: float, kind: str) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` (or constant)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, iters - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def rng_state() -> dict[str, Any]:
    """RNG states in a form ``torch.load(weights_only=True)`` accepts (tensors and ints)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
