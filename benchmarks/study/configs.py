"""What each run of the study trains on and is tested on: the tasks, their data and schedules."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.study.settings import Scale


def cbsd432(degradation: dict) -> dict:
    """Training images of the synthetic tasks: CBSD432 (BSDS500 minus the 68 CBSD68 names),
    degraded on the fly."""
    return {"type": "degraded", "roots": ["BSDS500"], "recursive": True, "exclude": "CBSD68",
            "degradation": degradation}


def train_data(task: "Task", scale: Scale) -> dict:
    return {"train": {**task.train, "patch_size": scale.patch, "augment": True},
            "val": [], "batch_size": scale.batch}


def schedule(iters: int, lr: float) -> dict:
    return {"iters": iters, "optimizer": {"type": "adamw", "lr": lr, "weight_decay": 1.0e-4},
            "scheduler": {"type": "cosine", "warmup_iters": max(1, iters // 24), "min_lr": lr / 100},
            "loss": "l1", "log_every": max(1, min(100, iters // 4)), "val_every": iters,
            "ckpt_every": max(1, iters // 6)}


@dataclass(frozen=True)
class Task:
    key: str                              # folder under --out
    train: dict                           # data.train, without patch size and augmentation
    tests: tuple[tuple[str, str], ...]    # (data folder, slkd eval --task)
    val: dict                             # Teacher B's reconstruction check (a validation set)
    teacher_b_eval: dict = field(default_factory=lambda: {"task": "reconstruct"})


#: Rain100L: 84 of the 200 standard training pairs; 10 held out (always the same, by name and
#: seed) to validate on, the other 74 trained on; the complete 100-pair test split for the tables.
#: Never CBSD432: it holds 75 of the Rain100L test backgrounds.
RAIN100L_TRAIN = {"type": "paired", "roots": ["Rain100L/train"], "holdout": {"count": 10, "take": "rest"}}
RAIN100L_VAL = {"name": "Rain100L-val10", "type": "paired", "roots": ["Rain100L/train"],
                "holdout": {"count": 10, "take": "held"}}

TASKS = {
    "denoise": Task("denoise25", cbsd432({"name": "gaussian_noise", "params": {"sigma": 25}}),
                    (("CBSD68", "denoise"), ("Kodak24", "denoise")),
                    {"name": "CBSD68", "type": "degraded", "roots": ["CBSD68"], "limit": 20,
                     "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}),
    "derain": Task("derain", RAIN100L_TRAIN, (("Rain100L/test", "derain"),), RAIN100L_VAL,
                   {"task": "reconstruct", "y_channel": True}),
    "deblur": Task("deblur", cbsd432({"name": "motion_blur"}), (("Levin", "deblur"),),
                   {"name": "Levin", "type": "paired", "roots": ["Levin"]}),
}

#: benchmark folders each study reads (checked before anything runs)
STUDY_DATA = {"derain": ("Rain100L",), "realworld": ("Rain100L", "RealRain20", "PolyU100", "CC15"),
              "deblur": ("Levin",)}
