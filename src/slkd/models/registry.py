"""Named model presets: official teachers, their SLKD students, and tiny pairs for CPU work.

Families: Restormer (``restormer*``, ``res-sl*``), Uformer (``uformer-*``, ``ufor-sl*``),
DRSformer (``drsformer*``, ``drs-sl*``) and NAFNet (``nafnet-*``, ``nafnet-sl*``). Every
student names the teacher it is sized against (≥ 80 % fewer parameters and MACs); see
docs/models.md for the table.

``build_model(name, **overrides)`` is the one way the rest of slkd builds a network, so a
preset name in a config or on the command line always means the same architecture.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from torch import nn

from slkd.errors import SlkdError
from slkd.models.checkpoint import layer_norm_type
from slkd.models.drsformer import DRSformer
from slkd.models.nafnet import NAFNet
from slkd.models.restormer import Restormer
from slkd.models.uformer import Uformer


@dataclass(frozen=True)
class ModelPreset:
    name: str
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any]
    description: str
    #: for a student preset: the teacher preset it is sized against (≥ 80 % fewer params and MACs)
    teacher: str | None = None
    #: for a teacher preset: the student preset ``slkd compress`` distils it into by default
    #: (:func:`default_student`); ≥ 80 % fewer params and MACs than this teacher (tested)
    student: str | None = None


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
    student="res-sl",
))
_add(ModelPreset(
    "restormer-denoise", Restormer, _restormer(LayerNorm_type="BiasFree"),
    "official Restormer for colour Gaussian and real denoising checkpoints (BiasFree)",
    student="res-sl",
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
    "res-sl-hw", Restormer,
    _restormer(dim=32, num_blocks=[1, 2, 2, 3], num_refinement_blocks=1, ffn_expansion_factor=2.0),
    "Res-SL shaped for CPU kernels: every channel count a multiple of 16 (feed-forward hidden "
    "widths included), fewer and wider blocks, no more MACs than res-sl; cut from restormer like it",
    teacher="restormer",
))
_add(ModelPreset(
    "restormer-tiny", Restormer,
    _restormer(dim=16, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2),
    "tiny Restormer teacher that trains on a CPU in minutes",
    student="res-sl-tiny",
))
_add(ModelPreset(
    "res-sl-tiny", Restormer,
    _restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "tiny Res-SL student of restormer-tiny",
    teacher="restormer-tiny",
))
_add(ModelPreset(
    "res-sl-tiny-deep", Restormer,
    _restormer(dim=6, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2),
    "student of restormer-tiny cut in width only (dim 6, the teacher's depth): the same >= 80 % "
    "cut as res-sl-tiny without removing blocks, the student shape MiPKD finds KD works for",
    teacher="restormer-tiny",
))



# ------------------------------------------------------------------------------- Uformer
# the release's get_arch(): win_size 8, linear token projection, LeFF, modulator on; img_size
# is the training patch size of the checkpoint (GoPro 256, SIDD 128), see slkd.models.uformer
_UFORMER_DEFAULT: dict[str, Any] = dict(
    img_size=256,
    in_chans=3,
    dd_in=3,
    embed_dim=32,
    depths=[2, 2, 2, 2, 2, 2, 2, 2, 2],
    num_heads=[1, 2, 4, 8, 16, 16, 8, 4, 2],
    win_size=8,
    mlp_ratio=4.0,
    token_projection="linear",
    token_mlp="leff",
    modulator=True,
)


def _uformer(**changes: Any) -> dict[str, Any]:
    return {**_UFORMER_DEFAULT, **changes}


_UFORMER_B_DEPTHS = [1, 2, 8, 8, 2, 8, 8, 2, 1]

_add(ModelPreset(
    "uformer-t", Uformer, _uformer(embed_dim=16),
    "Uformer-T of the official release (embed_dim 16, 5.29 M params)",
))
_add(ModelPreset(
    "uformer-s", Uformer, _uformer(embed_dim=32),
    "Uformer-S of the official release (embed_dim 32, 20.75 M params)",
))
_add(ModelPreset(
    "uformer-b", Uformer, _uformer(depths=_UFORMER_B_DEPTHS),
    "Uformer-B (50.88 M params), as the released GoPro deblurring checkpoint (img_size 256)",
    student="ufor-sl",
))
_add(ModelPreset(
    "uformer-b-sidd", Uformer, _uformer(depths=_UFORMER_B_DEPTHS, img_size=128),
    "Uformer-B as the released SIDD denoising checkpoint (img_size 128: no shift in the bottleneck)",
    student="ufor-sl",
))
_add(ModelPreset(
    "ufor-sl", Uformer, _uformer(embed_dim=16, depths=[1, 1, 4, 4, 1, 4, 4, 1, 1]),
    "Ufor-SL student: half the width and about half the blocks of uformer-b",
    teacher="uformer-b",
))
_add(ModelPreset(
    "uformer-tiny", Uformer, _uformer(embed_dim=8, img_size=32, win_size=4),
    "tiny Uformer teacher (embed_dim 8, 4×4 windows, img_size 32) for CPU runs",
    student="ufor-sl-tiny",
))
_add(ModelPreset(
    "ufor-sl-tiny", Uformer,
    _uformer(embed_dim=4, img_size=32, win_size=4, depths=[1, 1, 1, 1, 1, 1, 1, 1, 1]),
    "tiny Ufor-SL student of uformer-tiny",
    teacher="uformer-tiny",
))

# ----------------------------------------------------------------------------- DRSformer
# the release's Options/Deraining.yml and test.py
_DRSFORMER_DEFAULT: dict[str, Any] = dict(
    inp_channels=3,
    out_channels=3,
    dim=48,
    num_blocks=[4, 6, 6, 8],
    heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
    mefc=True,
)


def _drsformer(**changes: Any) -> dict[str, Any]:
    return {**_DRSFORMER_DEFAULT, **changes}


_add(ModelPreset(
    "drsformer", DRSformer, _drsformer(),
    "official DRSformer for deraining (33.66 M params, with the MEFC compensators)",
    student="drs-sl",
))
_add(ModelPreset(
    "drsformer-no-mefc", DRSformer, _drsformer(mefc=False),
    "official DRSformer without MEFC (the release's Rain200L / SPA-Data variant)",
))
_add(ModelPreset(
    "drs-sl", DRSformer, _drsformer(dim=24, num_blocks=[2, 3, 3, 4]),
    "DRS-SL student: half the width, half the blocks of drsformer (MEFC kept)",
    teacher="drsformer",
))
_add(ModelPreset(
    "drsformer-tiny", DRSformer, _drsformer(dim=16, num_blocks=[2, 2, 2, 2]),
    "tiny DRSformer teacher (with MEFC) for CPU runs",
    student="drs-sl-tiny",
))
_add(ModelPreset(
    "drs-sl-tiny", DRSformer, _drsformer(dim=6, num_blocks=[1, 1, 1, 1]),
    "tiny DRS-SL student of drsformer-tiny (dim 6: the MEFC cost scales with width²)",
    teacher="drsformer-tiny",
))

# -------------------------------------------------------------------------------- NAFNet
# the release's options/test/{SIDD,GoPro}/NAFNet-width{32,64}.yml
_NAFNET_SIDD: dict[str, Any] = dict(
    img_channel=3, width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2],
)
_NAFNET_GOPRO: dict[str, Any] = dict(
    img_channel=3, width=32, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1],
)

_add(ModelPreset(
    "nafnet-sidd-32", NAFNet, dict(_NAFNET_SIDD),
    "official NAFNet width 32 for SIDD denoising (29.16 M params)",
    student="nafnet-sl",
))
_add(ModelPreset(
    "nafnet-sidd-64", NAFNet, {**_NAFNET_SIDD, "width": 64},
    "official NAFNet width 64 for SIDD denoising (115.98 M params)",
    student="nafnet-sl",
))
_add(ModelPreset(
    "nafnet-gopro-32", NAFNet, dict(_NAFNET_GOPRO),
    "official NAFNet width 32 for GoPro deblurring (17.11 M params; released for NAFNetLocal)",
))
_add(ModelPreset(
    "nafnet-gopro-64", NAFNet, {**_NAFNET_GOPRO, "width": 64},
    "official NAFNet width 64 for GoPro deblurring (67.89 M params; released for NAFNetLocal)",
    student="nafnet-sl",
))
_add(ModelPreset(
    "nafnet-sl", NAFNet,
    dict(img_channel=3, width=16, enc_blk_nums=[1, 1, 2, 4], middle_blk_num=6, dec_blk_nums=[1, 1, 1, 1]),
    "NAFNet-SL student: half the width, half the blocks of nafnet-sidd-32; also a CNN student "
    "for restormer",
    teacher="nafnet-sidd-32",
))
_add(ModelPreset(
    "nafnet-tiny", NAFNet,
    dict(img_channel=3, width=16, enc_blk_nums=[2, 2, 2, 2], middle_blk_num=2, dec_blk_nums=[2, 2, 2, 2]),
    "tiny NAFNet teacher for CPU runs",
    student="nafnet-sl-tiny",
))
_add(ModelPreset(
    "nafnet-sl-tiny", NAFNet,
    dict(img_channel=3, width=8, enc_blk_nums=[1, 1, 1, 1], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1]),
    "tiny NAFNet-SL student of nafnet-tiny (also of restormer-tiny, across architectures)",
    teacher="nafnet-tiny",
))


def list_models() -> list[str]:
    """Names of all presets, in registration order."""
    return list(_PRESETS)


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; an unknown name raises and lists the known ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SlkdError(
            f"unknown model {name!r}{hint}; known models: {', '.join(_PRESETS)}"
        ) from None


def default_student(teacher: str) -> str:
    """The student preset a teacher preset is distilled into by default (``slkd compress``):
    the ``student`` its preset names. A teacher without one (a grey or dual-pixel variant, a
    small official model no student preset is ≥ 80 % smaller than) raises, naming the
    students there are."""
    preset = get_preset(teacher)
    if preset.student is not None:
        return preset.student
    if preset.teacher is not None:
        raise SlkdError(f"{teacher!r} is itself a student preset (of {preset.teacher!r}); give "
                        "the teacher it should be distilled from")
    students = ", ".join(p.name for p in _PRESETS.values() if p.teacher)
    raise SlkdError(f"no student preset is sized against {teacher!r} (>= 80 % fewer parameters "
                    f"and MACs); choose one with --student ({students})")


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
    """Official checkpoints come in variants of one architecture. Adapt the preset to the file
    instead of failing: Restormer and DRSformer (LayerNorm type, grey or colour, dual-pixel
    input), DRSformer with or without MEFC, Uformer with or without the modulator."""
    preset = get_preset(name).kwargs
    found: dict[str, Any] = {}
    if "LayerNorm_type" in preset:
        ln = layer_norm_type(state)
        if ln and ln != preset["LayerNorm_type"]:
            found["LayerNorm_type"] = ln
        embed, out = state.get("patch_embed.proj.weight"), state.get("output.weight")
        if embed is not None and embed.dim() == 4 and embed.shape[1] != preset["inp_channels"]:
            found["inp_channels"] = int(embed.shape[1])
        if out is not None and out.dim() == 4 and out.shape[0] != preset["out_channels"]:
            found["out_channels"] = int(out.shape[0])
    if "dual_pixel_task" in preset and ("skip_conv.weight" in state) != bool(preset["dual_pixel_task"]):
        found["dual_pixel_task"] = "skip_conv.weight" in state
    if "mefc" in preset:
        has_mefc = any(k.startswith("encoder_level0.") for k in state)
        if has_mefc != bool(preset["mefc"]):
            found["mefc"] = has_mefc
    if "modulator" in preset:
        has_modulator = any(k.endswith(".modulator.weight") for k in state)
        if has_modulator != bool(preset["modulator"]):
            found["modulator"] = has_modulator
    return found
