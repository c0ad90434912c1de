"""Named model presets: the official teacher, its SLKD students, and tiny pairs for CPU work.

``build_model(name, **overrides)`` is the one way the rest of slkd builds a network, so a
preset name in a config or on the command line always means the same architecture.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from torch import nn

from slkd.errors import SlkdError
from slkd.models.checkpoint import layer_norm_type
from slkd.models.restormer import Restormer


@dataclass(frozen=True)
class ModelPreset:
    name: str
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any]
    description: str
    #: for a student preset: the teacher preset it is sized against (≥ 80 % fewer params and MACs)
    teacher: str | None = None


_RESTORMER_DEFAULT: dict[str, Any] = dict(
    inp_channels=3,
    out_channels=3,
    dim=48,
    num_blocks=[4, 6, 6, 8],
    num_refinement_blocks=4,
    heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
    dual_pixel_task=False,
)


def _restormer(**changes: Any) -> dict[str, Any]:
    return {**_RESTORMER_DEFAULT, **changes}


_PRESETS: dict[str, ModelPreset] = {}


def _add(preset: ModelPreset) -> None:
    _PRESETS[preset.name] = preset


_add(ModelPreset(
    "restormer", Restormer, _restormer(),
    "official Restormer (26.1 M params); deraining / motion deblurring checkpoints (WithBias)",
))
_add(ModelPreset(
    "restormer-denoise", Restormer, _restormer(LayerNorm_type="BiasFree"),
    "official Restormer for colour Gaussian and real denoising checkpoints (BiasFree)",
))
_add(ModelPreset(
    "restormer-denoise-gray", Restormer,
    _restormer(inp_channels=1, out_channels=1, LayerNorm_type="BiasFree"),
    "official Restormer for grey Gaussian denoising checkpoints (1→1 channel, BiasFree)",
))
_add(ModelPreset(
    "restormer-dual-pixel", Restormer, _restormer(inp_channels=6, dual_pixel_task=True),
    "official Restormer for dual-pixel defocus deblurring (6→3 channels)",
))
_add(ModelPreset(
    "res-sl", Restormer,
    _restormer(dim=24, num_blocks=[2, 3, 3, 4], num_refinement_blocks=2),
    "Res-SL student: half the width, about half the blocks of restormer",
    teacher="restormer",
))
_add(ModelPreset(
    "restormer-tiny", Restormer,
    _restormer(dim=16, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2),
    "tiny Restormer teacher that trains on a CPU in minutes",
))
_add(ModelPreset(
    "res-sl-tiny", Restormer,
    _restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "tiny Res-SL student of restormer-tiny",
    teacher="restormer-tiny",
))


def list_models() -> list[str]:
    """Names of all presets, in registration order."""
    return list(_PRESETS)


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; an unknown name raises and lists the known ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise SlkdError(
            f"unknown model {name!r}; known models: {', '.join(_PRESETS)}"
        ) from None


def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor keywords of preset ``name`` with ``overrides`` applied and checked."""
    preset = get_preset(name)
    accepted = set(inspect.signature(preset.builder).parameters)
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise SlkdError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(accepted))}"
        )
    return {**preset.kwargs, **overrides}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name``, e.g. ``build_model("restormer", LayerNorm_type="BiasFree")``."""
    preset = get_preset(name)
    config = preset_config(name, **overrides)
    try:
        return preset.builder(**config)
    except (ValueError, TypeError) as exc:
        raise SlkdError(f"cannot build model {name!r} with {overrides}: {exc}") from None


def variant_overrides(name: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Official Restormer checkpoints come in variants of one architecture (LayerNorm type,
    grey or colour, dual-pixel input). Adapt the preset to the file instead of failing."""
    preset = get_preset(name).kwargs
    if "LayerNorm_type" not in preset:
        return {}
    found: dict[str, Any] = {}
    ln = layer_norm_type(state)
    if ln and ln != preset["LayerNorm_type"]:
        found["LayerNorm_type"] = ln
    embed, out = state.get("patch_embed.proj.weight"), state.get("output.weight")
    if embed is not None and embed.dim() == 4 and embed.shape[1] != preset["inp_channels"]:
        found["inp_channels"] = int(embed.shape[1])
    if out is not None and out.dim() == 4 and out.shape[0] != preset["out_channels"]:
        found["out_channels"] = int(out.shape[0])
    if ("skip_conv.weight" in state) != bool(preset["dual_pixel_task"]):
        found["dual_pixel_task"] = "skip_conv.weight" in state
    return found
