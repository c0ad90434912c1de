"""The pixel loss L_pix between a network's output and the clean image, by name.

One home for ``train.loss``: :class:`slkd.engine.tasks.SupervisedTask` (teachers, scratch
students) and every distiller's ``pix`` term (:meth:`slkd.distill.Distiller.pixel_term`) call
:func:`pixel_loss`, so ``train.loss: charbonnier`` means the same function in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slkd.errors import SlkdError

__all__ = ["CHARBONNIER_EPS", "PIXEL_LOSSES", "check_pixel_loss", "pixel_loss"]

#: names accepted by :func:`pixel_loss` (and by ``train.loss``)
PIXEL_LOSSES = ("l1", "mse", "charbonnier")
#: ε of the Charbonnier loss sqrt((x − y)² + ε²)
CHARBONNIER_EPS = 1e-3


def pixel_loss(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1, MSE or Charbonnier (ε = 1e-3) between output and target, mean over all elements."""
    if name == "l1":
        return F.l1_loss(output, target)
    if name == "mse":
        return F.mse_loss(output, target)
    if name == "charbonnier":
        return torch.sqrt((output - target).pow(2) + CHARBONNIER_EPS**2).mean()
    raise SlkdError(f"unknown loss {name!r}; known: {', '.join(PIXEL_LOSSES)}")


def check_pixel_loss(name: str) -> str:
    """``name`` if :func:`pixel_loss` knows it; an unknown name fails here, not at step 1."""
    if name not in PIXEL_LOSSES:
        raise SlkdError(f"unknown loss {name!r}; known: {', '.join(PIXEL_LOSSES)}")
    return name
