"""Read intermediate features by module name, without editing the model.

Distillation needs the outputs of named stages (``encoder_level1``, ``decoder_level2`` …) of
teachers and students. Forward hooks keep the architectures untouched, so official checkpoints
keep loading and the same code serves every network.

>>> taps = FeatureTaps(model, ["encoder_level1", "latent"])
>>> out = model(x)
>>> taps.features["latent"].shape

Level names across architectures. The distiller taps the student and its teachers with the same
names, Restormer's module names of docs/spec.md §2.2 (``encoder_level1`` … ``refinement``,
:data:`ENCODER_LEVELS` and :data:`DECODER_LEVELS`). Other architectures name their stages
differently; each maps the level names to its stage at the same depth and resolution in its
``level_modules()`` (the model protocol, :mod:`slkd.models.protocol`), so any teacher–student
pair works, also across architectures (the SCM resizes where resolutions still differ):

==============  ==========  ====================  ==================  =====================
level           resolution  Restormer, DRSformer  Uformer             NAFNet (L = 4 levels)
==============  ==========  ====================  ==================  =====================
encoder_level1  1           encoder_level1        encoderlayer_0      encoders.0
encoder_level2  1/2         encoder_level2        encoderlayer_1      encoders.1
encoder_level3  1/4         encoder_level3        encoderlayer_2      encoders.2
latent          1/8         latent                encoderlayer_3      encoders.3
decoder_level3  1/4         decoder_level3        decoderlayer_1      decoders.1
decoder_level2  1/2         decoder_level2        decoderlayer_2      decoders.2
decoder_level1  1           decoder_level1        decoderlayer_3      decoders.3
refinement      1           refinement (*)        decoderlayer_3 (*)  decoders.3 (*)
==============  ==========  ====================  ==================  =====================

(*) Uformer and NAFNet have no refinement stage after the last decoder stage, nor has
DRSformer without MEFC: there ``refinement`` reads the last full-resolution decoder stage, the
same tensor as ``decoder_level1``. Uformer's and NAFNet's 1/16 bottleneck (``conv``,
``middle_blks``) and their first decoder stage (1/8) have no level name; tap them by module
name. With L levels NAFNet's stage at 1/2^i is ``encoders.i`` / ``decoders.(L-1-i)``
(``middle_blks`` at 1/2^L). A name that is a module of the model always means that module.
"""

from __future__ import annotations

import difflib
from typing import Iterable

import torch
from torch import nn

from slkd.errors import SlkdError


class FeatureTaps:
    """Forward hooks that record the outputs of named sub-modules.

    Names are checked when the taps are created, so a typo fails at set-up rather than at the
    first training step. ``features`` maps each name to the output of the latest forward pass;
    tensors are not detached, so gradients flow through a student's taps, and a teacher run
    under ``torch.inference_mode()`` records inference tensors at no extra cost. Use as a
    context manager (or call :meth:`remove`) to detach the hooks.
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise SlkdError(f"feature tap names repeat: {self.names}")
        modules = dict(model.named_modules())
        levels = level_modules(model)
        #: tap name → the module path it reads (differs from the name for level names)
        self.paths = {n: n if n in modules else levels.get(n, n) for n in self.names}
        missing = [n for n in self.names if self.paths[n] not in modules or n == ""]
        if missing:
            hints = []
            for n in missing:
                close = difflib.get_close_matches(n, [m for m in modules if m] + list(levels), n=3)
                hints.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            top = [m for m in modules if m and "." not in m]
            raise SlkdError(
                f"{type(model).__name__} has no module named {', '.join(hints)}; "
                f"top-level modules: {', '.join(top)}"
                + (f"; level names: {', '.join(levels)}" if levels else "")
            )
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [
            modules[self.paths[name]].register_forward_hook(self._recorder(name))
            for name in self.names
        ]

    def _recorder(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise SlkdError(f"module {name!r} returns {type(output).__name__}, not a tensor")
            self.features[name] = output

        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.features[name]
        except KeyError:
            if name in self.names:
                raise SlkdError(f"no feature recorded for {name!r} yet: run the model first") from None
            raise SlkdError(f"{name!r} is not tapped; tapped: {', '.join(self.names)}") from None

    def ordered(self) -> list[torch.Tensor]:
        """Recorded features in the order the names were given."""
        return [self[name] for name in self.names]

    def clear(self) -> None:
        """Drop recorded tensors (frees memory between steps)."""
        self.features.clear()

    def remove(self) -> None:
        """Detach every hook; the model is as it was before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.features.clear()

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


#: encoder and decoder level names of docs/spec.md §2.2 in tap order (Restormer's module names):
#: the default taps of every family here (the model protocol's ``encoder_taps``/``decoder_taps``)
ENCODER_LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
DECODER_LEVELS = ("decoder_level3", "decoder_level2", "decoder_level1", "refinement")
LEVEL_NAMES = ENCODER_LEVELS + DECODER_LEVELS


def levels_by_resolution(
    encoder_at: dict[int, str], decoder_at: dict[int, str]
) -> dict[str, str]:
    """Level names from the stage at each resolution 1/2^i: encoder levels 1-3 at i = 0-2 and
    ``latent`` at i = 3, decoder levels 3-1 at i = 2-0 and ``refinement`` at i = 0."""
    wanted = {
        "encoder_level1": encoder_at.get(0), "encoder_level2": encoder_at.get(1),
        "encoder_level3": encoder_at.get(2), "latent": encoder_at.get(3),
        "decoder_level3": decoder_at.get(2), "decoder_level2": decoder_at.get(1),
        "decoder_level1": decoder_at.get(0), "refinement": decoder_at.get(0),
    }
    return {name: path for name, path in wanted.items() if path is not None}


def level_modules(model: nn.Module) -> dict[str, str]:
    """Level name → module path of ``model`` for the level names that are not module names of
    its architecture: the model's own ``level_modules()`` (empty for Restormer, or for a model
    that has none). See the module docstring for the table."""
    own = getattr(model, "level_modules", None)
    return dict(own()) if callable(own) and not isinstance(own, nn.Module) else {}
