"""Trained networks from files: :func:`load_pretrained`, the one loader of the engine's teachers,
``slkd restore/eval/export`` and scripts.

It takes a preset name and a weights file, or a run folder of ``slkd train``/``slkd distill``
(its deployable ``weights.pth``), and adapts the preset to official checkpoints: a Restormer
file with BiasFree norms, grey or dual-pixel channels, a DRSformer without MEFC, a Uformer
without the modulator build that variant instead of failing (:func:`variant_overrides`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from slkd.errors import CheckpointError
from slkd.models.checkpoint import load_state, read_state_dict
from slkd.models.registry import build_model, get_preset, preset_config, variant_overrides

__all__ = ["RUN_WEIGHTS", "load_pretrained", "weights_path"]

#: the deployable weights a run folder holds
RUN_WEIGHTS = "weights.pth"


def weights_path(spec: str | Path) -> Path:
    """A weights file, or a run folder of ``slkd train`` (its deployable ``weights.pth``)."""
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        path = path / RUN_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    return path


def load_pretrained(
    name: str,
    weights: str | Path | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    note: Callable[[str], None] | None = None,
    strict: bool = True,
) -> nn.Module:
    """Preset ``name`` built with ``options`` and holding ``weights``, in ``eval()`` mode.

    ``weights`` is a file (``.pth``/``.pt`` with ``params_ema``/``params``/``state_dict`` or
    bare, or ``.safetensors``; read without running code) or a run folder; ``None`` leaves the
    preset's initial weights. Official checkpoints of another variant of the preset adapt the
    build (``note`` is told which, e.g. ``note=print``); ``options`` the caller gives win.

    Raises :class:`~slkd.errors.SlkdError` for an unknown preset or option and
    :class:`~slkd.errors.CheckpointError` for a missing, unsafe or non-matching file.
    """
    options = dict(options or {})
    get_preset(name)  # an unknown name lists the known ones
    if weights is None:
        return build_model(name, **options).eval()
    path = weights_path(weights)
    state, source = read_state_dict(path)
    preset_config(name, **options)  # an unknown option is named before the file is blamed
    adapted = {k: v for k, v in variant_overrides(name, state).items() if k not in options}
    if adapted and note:
        note(f"note: {path.name} needs {name} with "
             + ", ".join(f"{k}={v!r}" for k, v in adapted.items()) + "; building it that way")
    model = build_model(name, **{**adapted, **options})
    load_state(model, state, path, strict=strict, source_key=source)
    return model.eval()
