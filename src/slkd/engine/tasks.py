"""What a training step computes. The trainer owns the loop; a task owns the loss.

:class:`SupervisedTask` trains one network from pairs (Teacher A and scratch students:
degraded → clean; Teacher B: clean → clean). Distillation methods plug into the same trainer
as other tasks, so every method gets the same loop, logging, checkpoints and ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slkd.errors import SlkdError


def pixel_loss(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1, MSE or Charbonnier (ε = 1e-3) between output and target, mean over all elements."""
    if name == "l1":
        return F.l1_loss(output, target)
    if name == "mse":
        return F.mse_loss(output, target)
    if name == "charbonnier":
        return torch.sqrt((output - target).pow(2) + 1e-6).mean()
    raise SlkdError(f"unknown loss {name!r}; known: l1, mse, charbonnier")


class SupervisedTask:
    """One network, one pixel loss.

    ``clean_input=True`` (Teacher B) feeds the clean image as the input: the network learns to
    reconstruct it, which only teaches something when its global residual is disabled.
    """

    def __init__(self, model: nn.Module, loss: str = "l1", *, clean_input: bool = False) -> None:
        self.model = model
        self.loss_name = loss
        self.clean_input = clean_input
        pixel_loss(loss, torch.zeros(1), torch.zeros(1))  # fail now on an unknown name

    def inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["gt"] if self.clean_input else batch["lq"]

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``network`` is ``self.model`` or its DistributedDataParallel wrapper."""
        out = network(self.inputs(batch))
        loss = pixel_loss(self.loss_name, out, batch["gt"])
        return loss, {f"loss_{self.loss_name}": loss.detach()}


@torch.no_grad()
def feature_spread(model: nn.Module, x: torch.Tensor, names) -> dict[str, float]:
    """Standard deviation of each tapped feature map on ``x``: a Teacher B whose decoder
    features are near-constant carries nothing to distil (METHOD.md §2.1)."""
    from slkd.models.taps import FeatureTaps

    was_training = model.training
    model.eval()
    with FeatureTaps(model, names) as taps:
        model(x)
        spread = {name: taps[name].float().std().item() for name in names}
    model.train(was_training)
    return spread
