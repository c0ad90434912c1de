"""Turn a validated config into models and datasets (the only place that knows both)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import nn

from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.degrade import build_degradation
from slkd.engine.config import ConfigError, DatasetConfig, TeacherConfig, TrainRunConfig
from slkd.errors import CheckpointError, DatasetError, SlkdError
from slkd.models import build_model, get_preset, list_models, load_pretrained, load_weights, weights_path
from slkd.models.slicing import init_from_teacher


def data_root(cfg: TrainRunConfig) -> Path:
    """``data.root``, else ``$SLKD_DATA``, else ``../shared/data`` (relative to the cwd)."""
    root = cfg.data.root or os.environ.get("SLKD_DATA") or "../shared/data"
    return Path(os.path.expanduser(root))


def _resolve(root: Path, folder: str) -> Path:
    path = Path(os.path.expanduser(folder))
    return path if path.is_absolute() else root / path


def _build(name: str, options: dict, where: str) -> nn.Module:
    """``build_model`` with errors naming the config key (``<where>.name`` / ``.options``)."""
    if name not in list_models():
        try:
            get_preset(name)
        except SlkdError as exc:
            raise ConfigError(f"{where}.name: {exc}") from None
    try:
        return build_model(name, **options)
    except SlkdError as exc:
        raise ConfigError(f"{where}.options: {exc}") from None


def build_model_for_run(cfg: TrainRunConfig, log: Callable[[str], None] | None = None) -> nn.Module:
    model = _build(cfg.model.name, cfg.model.options, "model")
    if cfg.model.init_from:
        try:
            path = weights_path(cfg.model.init_from)
            load_weights(model, path)
        except SlkdError as exc:
            raise ConfigError(f"model.init_from: {exc}") from None
        if log:
            log(f"initialised {cfg.model.name} from {path}")
    elif cfg.model.init_from_teacher:
        teacher = build_teacher(cfg.model.init_from_teacher, "model.init_from_teacher")
        try:
            counts = init_from_teacher(model, teacher)
        except SlkdError as exc:
            raise ConfigError(f"model.init_from_teacher: {exc}") from None
        if log:
            log(f"initialised {cfg.model.name} from a cut of {cfg.model.init_from_teacher.name} "
                f"({counts['cut']} tensors cut, {counts['copied']} copied whole)")
    elif cfg.role == "teacher_b" and log:
        log("note: Teacher B is usually initialised from Teacher A (model.init_from)")
    return model


def build_teacher(spec: TeacherConfig, where: str, log: Callable[[str], None] | None = None) -> nn.Module:
    """A frozen teacher from a weights file or run folder (:func:`slkd.models.load_pretrained`:
    official variants are recognised from the file), errors naming the config key.

    The preset is first built as named, without options, to check the name: that build also
    advances the random generator before the distiller initialises its adapters, so it stays
    (without it every distilled run — the demo, the study — would start from other SCMs)."""
    _build(spec.name, {}, where)
    try:
        path = weights_path(spec.weights)
        model = load_pretrained(spec.name, path, options=spec.options, note=log)
    except CheckpointError as exc:  # missing, unsafe or non-matching file
        raise ConfigError(f"{where}.weights: {exc}") from None
    except SlkdError as exc:  # the preset refuses an option
        raise ConfigError(f"{where}.options: {exc}") from None
    if log:
        log(f"{where}: {spec.name} from {path}")
    return model.requires_grad_(False)


def build_dataset(spec: DatasetConfig, root: Path, *, train: bool, where: str):
    folders = [_resolve(root, r) for r in spec.roots]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise ConfigError(f"{where}.roots: folder not found: {', '.join(missing)}")
    exclude = spec.exclude
    if isinstance(exclude, str):
        exclude = _resolve(root, exclude)
        if not exclude.is_dir():
            raise ConfigError(f"{where}.exclude: folder not found: {exclude}")
    common = dict(patch_size=spec.patch_size, augment=spec.augment and train, names=spec.names,
                  exclude=exclude, channels=spec.channels, cache=spec.cache, limit=spec.limit,
                  holdout=None if spec.holdout is None else (spec.holdout.count, spec.holdout.seed, spec.holdout.take))
    try:
        if spec.type == "paired":
            return PairedImageDataset(folders[0], **common)
        try:
            degradation = build_degradation(spec.degradation.name, **spec.degradation.params)
        except SlkdError as exc:
            raise ConfigError(f"{where}.degradation: {exc}") from None
        return DegradedImageDataset(folders, degradation, recursive=spec.recursive, eval_seed=0, **common)
    except DatasetError as exc:  # unreadable files, pairs of different sizes, images < patch …
        raise DatasetError(f"{where}: {exc}") from None


def build_train_set(cfg: TrainRunConfig):
    return build_dataset(cfg.data.train, data_root(cfg), train=True, where="data.train")


def build_val_sets(cfg: TrainRunConfig) -> dict:
    sets = {}
    for i, spec in enumerate(cfg.data.val):
        name = spec.name or Path(spec.roots[0]).name
        if name in sets:
            raise ConfigError(f"data.val[{i}].name: {name!r} is used twice")
        sets[name] = build_dataset(spec, data_root(cfg), train=False, where=f"data.val[{i}]")
    return sets
