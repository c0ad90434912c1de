"""Named model presets: official teachers, their SLKD students, and tiny pairs for CPU work.

Each model family registers its own presets beside its architecture (:func:`register_preset`
at the end of ``slkd/models/restormer.py``, ``uformer.py``, ``drsformer.py``, ``nafnet.py``):
Restormer (``restormer*``, ``res-sl*``), Uformer (``uformer-*``, ``ufor-sl*``), DRSformer
(``drsformer*``, ``drs-sl*``) and NAFNet (``nafnet-*``, ``nafnet-sl*``). Adding a family is its
own file plus one import line in ``slkd/models/__init__.py``; code outside slkd registers presets
the same way. Every student names the teacher it is sized against (≥ 80 % fewer parameters and
MACs); see docs/models.md for the table.

``build_model(name, **overrides)`` is the one way the rest of slkd builds a network, so a
preset name in a config or on the command line always means the same architecture.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from slkd.errors import SlkdError

#: a family's reading of an official checkpoint: the options of the preset (its constructor
#: keywords, first argument) that the file's tensors (second) need, e.g. another LayerNorm type
VariantReader = Callable[[dict[str, Any], Mapping[str, torch.Tensor]], dict[str, Any]]


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
    #: the family's checkpoint-variant reader (:func:`variant_overrides`); None: none adapt
    variants: VariantReader | None = None


_PRESETS: dict[str, ModelPreset] = {}


def register_preset(preset: ModelPreset) -> ModelPreset:
    """Add ``preset`` under its name (listed in registration order); a name registered twice is
    an error."""
    if preset.name in _PRESETS:
        raise SlkdError(f"model preset {preset.name!r} is registered already")
    _PRESETS[preset.name] = preset
    return preset


def preset_family(builder: Callable[..., nn.Module], variants: VariantReader | None = None):
    """The registering function of one family: its builder and checkpoint-variant reader given
    once, then ``register(name, kwargs, description, teacher=..., student=...)`` per preset."""

    def register(name: str, kwargs: dict[str, Any], description: str, *, teacher: str | None = None,
                 student: str | None = None) -> ModelPreset:
        return register_preset(ModelPreset(name, builder, kwargs, description, teacher=teacher, student=student,
                                           variants=variants))

    return register


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


def variant_overrides(name: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Official checkpoints come in variants of one architecture. Adapt the preset to the file
    instead of failing: each family's reader (:attr:`ModelPreset.variants`) names the options the
    file needs (Restormer and DRSformer: LayerNorm type, grey or colour, dual-pixel input;
    DRSformer with or without MEFC; Uformer with or without the modulator)."""
    preset = get_preset(name)
    return preset.variants(preset.kwargs, state) if preset.variants is not None else {}
