"""What each run of the study trains on and is tested on: the tasks, their data and schedules."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from benchmarks.study.settings import ROOT, Scale, StudyError
from slkd.engine.runconfigs import cosine_train_node, data_node


def cbsd432(degradation: dict) -> dict:
    """Training images of the synthetic tasks: CBSD432 (BSDS500 minus the 68 CBSD68 names),
    degraded on the fly."""
    return {"type": "degraded", "roots": ["BSDS500"], "recursive": True, "exclude": "CBSD68",
            "degradation": degradation}


def train_data(train: dict, scale: Scale, val=()) -> dict:
    """The ``data`` node of a run: ``train`` (``data.train`` without patch size and
    augmentation) cropped and batched at ``scale``, validated on ``val``."""
    return data_node({**train, "patch_size": scale.patch, "augment": True}, val, scale.batch)


def schedule(iters: int, lr: float) -> dict:
    """The ``train`` node of every study run: AdamW, a cosine schedule with a short warm-up,
    validated at the end and checkpointed six times."""
    return cosine_train_node(iters, lr, optimizer="adamw", weight_decay=1.0e-4, warmup_iters=max(1, iters // 24),
                             log_every=max(1, min(100, iters // 4)), val_every=iters, ckpt_every=max(1, iters // 6))


#: the key order of each study's run configs (:mod:`slkd.engine.runconfigs`), as its stored
#: config files have it: a rerun writes every run's config again, byte for byte the same
REPRODUCTION_KEYS = ("name", "output_dir", "role", "seed", "model", "data", "train", "eval", "teachers", "distill")
PAYS_KEYS = ("name", "output_dir", "role", "seed", "model", "distill", "data", "train", "eval", "teachers")


@dataclass(frozen=True)
class Task:
    """One restoration problem of a study, one vocabulary for both studies: the folder its runs
    live in, what they train and validate on, and the sets they are tested on. The reproduction
    study states its data here (``train``, ``val``, ``eval``); the pays study names the committed
    Teacher A's config instead (``config``), so that its students hold out exactly the images
    the teachers held out. :meth:`setting` gives either."""

    key: str                              # folder under --out (and benchmarks/weights)
    tests: tuple[tuple[str, str], ...]    # (data folder, slkd eval --task)
    train: dict | None = None             # data.train, without patch size and augmentation
    val: dict | None = None               # the validation set of the runs that validate
    #: the ``eval`` node of those runs (the reproduction: Teacher B's reconstruction check)
    eval: dict = field(default_factory=lambda: {"task": "reconstruct"})
    config: str | None = None             # a teacher config holding train, val and eval instead
    test_names: tuple[str, ...] = ()      # names of the test sets in results (default: the folders)
    #: real degradations without ground truth, scored by BRISQUE/PIQE: (data folder, --task)
    no_reference: tuple[tuple[str, str], ...] = ()

    @property
    def sets(self) -> tuple[str, ...]:
        """The test sets' names, in the order of :attr:`tests`."""
        return self.test_names or tuple(data for data, _ in self.tests)

    def setting(self) -> dict:
        """``data.train``, the validation set and ``eval``: as stated, or read from
        :attr:`config` (which must hold exactly one validation set)."""
        if self.config is None:
            return {"train": self.train, "val": self.val, "eval": self.eval}
        cfg = yaml.safe_load((ROOT / self.config).read_text())
        train = {k: v for k, v in cfg["data"]["train"].items() if k not in ("patch_size", "augment")}
        vals = cfg["data"].get("val") or []
        if len(vals) != 1:
            raise StudyError(f"{self.config}: expected one validation set, found {len(vals)}")
        return {"train": train, "val": vals[0], "eval": cfg.get("eval", {})}


#: Rain100L: 84 of the 200 standard training pairs; 10 held out (always the same, by name and
#: seed) to validate on, the other 74 trained on; the complete 100-pair test split for the tables.
#: Never CBSD432: it holds 75 of the Rain100L test backgrounds.
RAIN100L_TRAIN = {"type": "paired", "roots": ["Rain100L/train"], "holdout": {"count": 10, "take": "rest"}}
RAIN100L_VAL = {"name": "Rain100L-val10", "type": "paired", "roots": ["Rain100L/train"],
                "holdout": {"count": 10, "take": "held"}}

TASKS = {
    "denoise": Task("denoise25", (("CBSD68", "denoise"), ("Kodak24", "denoise")),
                    train=cbsd432({"name": "gaussian_noise", "params": {"sigma": 25}}),
                    val={"name": "CBSD68", "type": "degraded", "roots": ["CBSD68"], "limit": 20,
                         "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}),
    "derain": Task("derain", (("Rain100L/test", "derain"),), train=RAIN100L_TRAIN, val=RAIN100L_VAL,
                   eval={"task": "reconstruct", "y_channel": True}),
    "deblur": Task("deblur", (("Levin", "deblur"),), train=cbsd432({"name": "motion_blur"}),
                   val={"name": "Levin", "type": "paired", "roots": ["Levin"]}),
}

#: benchmark folders each study reads (checked before anything runs)
STUDY_DATA = {"derain": ("Rain100L",), "realworld": ("Rain100L", "RealRain20", "PolyU100", "CC15"),
              "deblur": ("Levin",)}
