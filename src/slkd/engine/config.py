"""The schema of a training run (``slkd train`` / ``slkd distill`` configs), validated at
start-up with every error naming its key; read with :func:`load_config`.

Reading YAML, overrides and the generic dataclass checks are :mod:`slkd.engine.typed_yaml`
(re-exported here). The ``distill:`` node is the config dataclass that the distillation method
registered (:mod:`slkd.distill`), read by :func:`_distill_node`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slkd.data.tasks import task_names
from slkd.distill import DEFAULT_METHOD, DistillerConfig, config_class, distill_config, registered_methods
from slkd.distill.config import check_weight
from slkd.distill.registry import option_names
from slkd.engine.typed_yaml import (
    ConfigLoader,
    _join,
    apply_overrides,
    from_dict,
    load_yaml,
    parse_yaml,
    register_node_reader,
    to_dict,
)
from slkd.errors import ConfigError
from slkd.losses import PIXEL_LOSSES


# --------------------------------------------------------------------------------------------
# The training schema
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name: str
    #: constructor overrides for the preset, e.g. {global_residual: false}
    options: dict[str, Any] = field(default_factory=dict)
    #: weights file, or a run folder of `slkd train` (its weights.pth), to start from
    init_from: str | None = None
    #: start from a cut of a larger teacher's weights ({name, weights}: the teacher's first
    #: blocks and channels, slkd.models.slicing) — offered to every role, scratch included, so
    #: that comparisons of methods can give all of them the same start
    init_from_teacher: TeacherConfig | None = None

    def validate(self, path: str) -> None:
        if self.init_from and self.init_from_teacher:
            raise ConfigError(f"{_join(path, 'init_from_teacher')}: give init_from or init_from_teacher, not both")


@dataclass
class DegradationConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class HoldoutConfig:
    """A validation split carved out of a training folder: ``count`` images (for pairs, clean
    images) drawn by ``seed`` from the sorted file stems that ``names``/``exclude`` kept. The
    training set takes ``take: rest`` and the validation set the same block with ``take: held``,
    so the two never overlap (slkd.data.datasets.holdout_split)."""

    count: int
    take: Literal["held", "rest"]
    seed: int = 0

    def validate(self, path: str) -> None:
        if self.count < 1:
            raise ConfigError(f"{_join(path, 'count')}: must be >= 1")


@dataclass
class DatasetConfig:
    #: "degraded": clean images degraded on the fly; "paired": degraded/clean folders
    type: Literal["degraded", "paired"]
    #: folders, relative to data.root unless absolute
    roots: list[str]
    name: str | None = None
    degradation: DegradationConfig | None = None
    recursive: bool = False
    #: keep only these file stems
    names: list[str] | None = None
    #: file stems to leave out, or a folder whose image stems are left out (e.g. CBSD68)
    exclude: str | list[str] | None = None
    patch_size: int | None = None
    augment: bool = False
    channels: int = 3
    cache: Literal["auto", "memory", "none"] = "auto"
    #: first N images only (validation sets)
    limit: int | None = None
    #: a validation split carved out of the folder (see HoldoutConfig)
    holdout: HoldoutConfig | None = None

    def validate(self, path: str) -> None:
        if not self.roots:
            raise ConfigError(f"{_join(path, 'roots')}: at least one folder is needed")
        if self.type == "degraded" and self.degradation is None:
            raise ConfigError(f"{_join(path, 'degradation')}: required for type 'degraded'")
        if self.type == "paired" and len(self.roots) != 1:
            raise ConfigError(f"{_join(path, 'roots')}: a paired dataset has exactly one root")
        if self.patch_size is not None and (self.patch_size < 8 or self.patch_size % 8):
            raise ConfigError(f"{_join(path, 'patch_size')}: must be a multiple of 8, got {self.patch_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"{_join(path, 'channels')}: must be 1 or 3")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{_join(path, 'limit')}: must be >= 1 (or null for all images)")


@dataclass
class DataConfig:
    train: DatasetConfig
    val: list[DatasetConfig] = field(default_factory=list)
    #: folder the dataset roots are relative to; default $SLKD_DATA, else ../shared/data
    root: str | None = None
    batch_size: int = 8
    num_workers: int = 0
    #: where training batches are made: auto — on the training device (the images decoded once
    #: into its memory; crops, flips/rotations and Gaussian noise made there in batch:
    #: slkd.data.device) when the data allows it and fits, else by a DataLoader; true — there or
    #: an error saying why not; false — always the DataLoader. On the CPU both give the same
    #: batches bit for bit; on a GPU the noise comes from the GPU's own generator.
    device_data: bool | Literal["auto"] = "auto"

    def validate(self, path: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{_join(path, 'batch_size')}: must be >= 1")
        if self.num_workers < 0:
            raise ConfigError(f"{_join(path, 'num_workers')}: must be >= 0")
        if self.train.patch_size is None:
            raise ConfigError(f"{_join(path, 'train.patch_size')}: training needs a patch size")


@dataclass
class OptimizerConfig:
    type: Literal["adam", "adamw"] = "adamw"
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4

    def validate(self, path: str) -> None:
        if self.lr <= 0:
            raise ConfigError(f"{_join(path, 'lr')}: must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{_join(path, 'betas')}: two numbers in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"{_join(path, 'weight_decay')}: must be >= 0")


@dataclass
class SchedulerConfig:
    type: Literal["cosine", "constant"] = "cosine"
    warmup_iters: int = 0
    min_lr: float = 1e-6

    def validate(self, path: str) -> None:
        if self.warmup_iters < 0:
            raise ConfigError(f"{_join(path, 'warmup_iters')}: must be >= 0")
        if self.min_lr < 0:
            raise ConfigError(f"{_join(path, 'min_lr')}: must be >= 0")


@dataclass
class TrainConfig:
    iters: int
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    #: the pixel loss (slkd.losses.pixel_loss), also the distillers' L_pix
    loss: Literal[PIXEL_LOSSES] = "l1"
    #: clip the global gradient norm to this value; null = no clipping (logged either way)
    grad_clip: float | None = None
    #: EMA decay of the weights (e.g. 0.999); null = no EMA
    ema: float | None = None
    #: bf16 autocast of the networks' forward passes (adapters and feature losses stay float32):
    #: faster steps at the same PSNR on a CPU with AVX512-BF16 (measured: BENCHMARKS.md §8,
    #: §9.6). Off by default: without native bf16 (older CPUs, pre-Ampere GPUs) it is emulated
    #: and slower, and results then depend on the machine.
    bf16: bool = False
    #: compile the training step's forward (student, teachers, distillation terms; CUDA graphs on
    #: a GPU) with torch.compile: auto (where it measured faster: slkd.engine.compiled), true or
    #: false. The same outputs to float rounding; the first step pays the compilation
    compile: bool | Literal["auto"] = "auto"
    #: stop after this many consecutive steps with a non-finite loss or gradient
    max_bad_steps: int = 5
    log_every: int = 20
    val_every: int = 500
    ckpt_every: int = 500

    def validate(self, path: str) -> None:
        if self.iters < 1:
            raise ConfigError(f"{_join(path, 'iters')}: must be >= 1")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"{_join(path, 'ema')}: a decay in (0, 1), e.g. 0.999")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{_join(path, 'grad_clip')}: must be > 0 (or null for no clipping)")
        for key in ("log_every", "val_every", "ckpt_every", "max_bad_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{_join(path, key)}: must be >= 1")
        if self.scheduler.type == "cosine" and self.scheduler.min_lr > self.optimizer.lr:
            raise ConfigError(f"{_join(path, 'scheduler.min_lr')}: the cosine schedule decays from "
                              f"optimizer.lr ({self.optimizer.lr:g}) to min_lr, so min_lr "
                              f"({self.scheduler.min_lr:g}) must not exceed it")


@dataclass
class EvalConfig:
    #: a task of the task table (slkd.data.tasks), which sets the metric convention: derain → Y
    #: channel, others RGB (docs/spec.md §6)
    task: str = "denoise"
    y_channel: bool | None = None
    crop_border: int = 0
    tile: int | None = None
    overlap: int = 32

    def validate(self, path: str) -> None:
        # checked now: a bad value would otherwise stop the run at its first validation
        if self.task not in task_names():
            raise ConfigError(f"{_join(path, 'task')}: expected {' or '.join(map(repr, task_names()))}, "
                              f"got {self.task!r}")
        if self.crop_border < 0:
            raise ConfigError(f"{_join(path, 'crop_border')}: must be >= 0")
        if self.tile is not None and (self.tile < 8 or self.tile % 8):
            raise ConfigError(f"{_join(path, 'tile')}: a positive multiple of 8 (or null), got {self.tile}")
        if self.tile is not None and not 0 <= self.overlap < self.tile:
            raise ConfigError(f"{_join(path, 'overlap')}: must be >= 0 and smaller than eval.tile "
                              f"({self.tile}), got {self.overlap}")


@dataclass
class TeacherConfig:
    name: str
    #: weights file, or a run folder of `slkd train` (its weights.pth); official checkpoints work
    weights: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeachersConfig:
    a: TeacherConfig
    b: TeacherConfig | None = None


#: the ``distill:`` node in Python: ``DistillConfig(method="fitnet", …)`` is
#: :func:`slkd.distill.distill_config`, the registered config dataclass of the method
DistillConfig = distill_config


def _distill_node(value: Any, path: str) -> DistillerConfig:
    """The ``distill:`` node: the config dataclass registered for ``distill.method``
    (:func:`slkd.distill.register_distiller`), each key checked by that class with its path.

    One node serves every method, so that ``distill.method=fitnet`` on an SLKD config works: a
    key that only another registered method has (``drl``, ``fakd_pool`` …) and a loss term of
    another method are checked as that method checks them, then left out (recorded in
    ``ignored_options`` and reported when the distiller is built). Anything else is unknown."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    methods = registered_methods()
    method = value.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method not in methods:
        raise ConfigError(f"{_join(path, 'method')}: expected {' or '.join(map(repr, methods))}, got {method!r}")
    cls = config_class(method)
    own = option_names(cls)
    others = {name: config_class(name) for name in methods if name != method}
    data: dict[str, Any] = {}
    ignored: list[str] = []
    for key, item in value.items():
        if key in own:
            data[key] = item
            continue
        owner = next((c for c in others.values() if key in option_names(c)), None)
        if owner is None:
            known = set(own).union(*(option_names(c) for c in others.values()))
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys of {method}: {', '.join(own)}"
            raise ConfigError(f"{_join(path, key)}: unknown key{hint}")
        from_dict(owner, {key: item}, path)  # checked as the method that has it checks it
        ignored.append(str(key))
    weights = data.get("loss_weights")
    if isinstance(weights, dict):
        terms = cls.DEFAULT_WEIGHTS
        known_terms = list(dict.fromkeys(t for m in methods for t in config_class(m).DEFAULT_WEIGHTS))
        unknown = [str(t) for t in weights if t not in known_terms]
        if unknown:
            raise ConfigError(f"{_join(path, 'loss_weights')}: unknown term(s) {', '.join(unknown)}; "
                              f"known: {', '.join(known_terms)}")
        for term, w in weights.items():
            check_weight(term, w, path)
        data["loss_weights"] = {t: w for t, w in weights.items() if t in terms}
        ignored += [f"loss_weights.{t}" for t in weights if t not in terms]
    cfg = from_dict(cls, data, path)
    cfg.ignored_options = tuple(ignored)
    return cfg


register_node_reader(DistillerConfig, _distill_node)


@dataclass
class TrainRunConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    #: teacher_a: degraded → clean; teacher_b: clean → clean (docs/spec.md §2.1); scratch: a
    #: student trained degraded → clean without distillation
    role: Literal["teacher_a", "teacher_b", "scratch", "distill"] = "teacher_a"
    seed: int = 0
    output_dir: str = "runs"
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: for role "distill": the frozen teachers and the method
    teachers: TeachersConfig | None = None
    #: the method's registered config (slkd.distill), read by _distill_node
    distill: DistillerConfig | None = None

    def validate(self, path: str) -> None:
        # the run folder is output_dir/name and a run writes nowhere else: a name that is a
        # path could replace the files of another folder
        name = self.name
        if (not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~")
                or Path(name).is_absolute() or Path(name).name != name):
            raise ConfigError(f"name: {name!r} is not a plain folder name; the run folder is "
                              f"output_dir/name, so name must not be empty, '.', '..', absolute, "
                              "start with '~' or contain '/' or '\\'")
        if not 0 <= self.seed < 2**63:  # torch, NumPy and the sampler's hashes take 63 bits
            raise ConfigError(f"seed: must be from 0 to 2**63 - 1, got {self.seed}")
        if self.role == "distill":
            if self.distill is None:
                raise ConfigError("distill: role 'distill' needs a distill section (and the teachers its "
                                  "method runs)")
            for role in self.distill.teacher_roles():  # the method's own rule (scratch runs none)
                if role not in ("a", "b"):
                    raise ConfigError(f"distill.method: {self.distill.method} runs a teacher {role!r}; "
                                      "a config has teachers.a and teachers.b only")
                if self.teachers is None:
                    raise ConfigError(f"teachers: distill.method {self.distill.method} needs a teachers "
                                      f"section (teachers.{role}: {self.distill.missing_teacher(role)})")
                if getattr(self.teachers, role) is None:
                    raise ConfigError(f"teachers.{role}: {self.distill.missing_teacher(role)}")
        elif self.teachers is not None or self.distill is not None:
            raise ConfigError(f"role: {self.role!r} trains without teachers; use role 'distill' "
                              "for the teachers/distill sections")
        if self.role == "teacher_b" and self.model.options.get("global_residual", True):
            raise ConfigError(
                "model.options.global_residual: Teacher B (role teacher_b) must disable the global "
                "residual (set it to false), otherwise it learns the identity through the skip"
            )


def load_config(path: str | Path, overrides: list[str] | None = None, schema: type = TrainRunConfig):
    """Read, override and validate a config file."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return from_dict(schema, data)


__all__ = [
    "ConfigError",
    "ConfigLoader",
    "DataConfig",
    "DatasetConfig",
    "DegradationConfig",
    "DistillConfig",
    "EvalConfig",
    "HoldoutConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TeacherConfig",
    "TeachersConfig",
    "TrainConfig",
    "TrainRunConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_yaml",
    "to_dict",
]
