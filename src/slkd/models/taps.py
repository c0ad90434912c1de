"""Read intermediate features by module name, without editing the model.

Distillation needs the outputs of named stages (``encoder_level1``, ``decoder_level2`` …) of
teachers and students. Forward hooks keep the architectures untouched, so official checkpoints
keep loading and the same code serves every network.

>>> taps = FeatureTaps(model, ["encoder_level1", "latent"])
>>> out = model(x)
>>> taps.features["latent"].shape
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
        missing = [n for n in self.names if n not in modules or n == ""]
        if missing:
            hints = []
            for n in missing:
                close = difflib.get_close_matches(n, [m for m in modules if m], n=3)
                hints.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            top = [m for m in modules if m and "." not in m]
            raise SlkdError(
                f"{type(model).__name__} has no module named {', '.join(hints)}; "
                f"top-level modules: {', '.join(top)}"
            )
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [
            modules[name].register_forward_hook(self._recorder(name)) for name in self.names
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


#: taps of METHOD.md §2.2 for Restormer-family models
RESTORMER_ENCODER_TAPS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
RESTORMER_DECODER_TAPS = ("decoder_level3", "decoder_level2", "decoder_level1", "refinement")
