"""What the engine and the distillers need from an architecture: :class:`RestorationModel`.

Every family of :mod:`slkd.models` (Restormer, DRSformer, Uformer, NAFNet) satisfies it; a new
architecture that does is trained, evaluated, exported and distilled without any other change.
The functions below read it with fallbacks, so a plain ``nn.Module`` (no attributes) still
works where the fallback makes sense. docs/models.md describes each member.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from slkd.models.taps import DECODER_LEVELS, ENCODER_LEVELS

__all__ = ["RestorationModel", "decoder_taps", "default_taps", "input_channels", "size_multiple"]


@runtime_checkable
class RestorationModel(Protocol):
    """An image-restoration network as slkd uses it.

    * ``forward(x)``: N×``inp_channels``×H×W in [0, 1] → N×C×H×W, same H and W;
    * ``size_multiple``: H and W must be multiples of it (callers pad by reflection and crop
      back: :func:`slkd.engine.restore`, the distillers' probe, ONNX export);
    * ``inp_channels``: channels of the input image (teachers and student of one distillation
      must agree: they see the same images);
    * ``global_residual``: whether the output adds the input; SLKD's Teacher B (clean → clean)
      must have it off, or it learns the identity through the skip;
    * ``encoder_taps`` / ``decoder_taps``: the level names a distiller reads by default (DRL and
      the feature baselines read the encoder levels, IRL the decoder ones; the trainer checks a
      Teacher B's decoder levels), in order from full resolution down and back up;
    * ``level_modules()``: level name → module path, for the level names that are not module
      names of the architecture (empty when they all are), so that taps with the same names work
      across architectures (:class:`slkd.models.FeatureTaps`).
    """

    size_multiple: int
    inp_channels: int
    global_residual: bool
    encoder_taps: tuple[str, ...]
    decoder_taps: tuple[str, ...]

    def level_modules(self) -> dict[str, str]: ...

    def __call__(self, x: Tensor) -> Tensor: ...


def size_multiple(model: nn.Module) -> int:
    """``model.size_multiple`` (1 when the model does not say)."""
    return int(getattr(model, "size_multiple", 1) or 1)


def input_channels(model: nn.Module, default: int = 3) -> int:
    """``model.inp_channels`` (``default`` when the model does not say)."""
    return int(getattr(model, "inp_channels", default))


def default_taps(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(encoder, decoder) level names a distiller reads from ``model`` by default: the model's
    own ``encoder_taps``/``decoder_taps``, else the level names of docs/spec.md §2.2."""
    return (tuple(getattr(model, "encoder_taps", ENCODER_LEVELS)),
            tuple(getattr(model, "decoder_taps", DECODER_LEVELS)))


def decoder_taps(model: nn.Module) -> tuple[str, ...]:
    """The decoder level names of ``model`` (empty for a model that declares none)."""
    return tuple(getattr(model, "decoder_taps", ()))
