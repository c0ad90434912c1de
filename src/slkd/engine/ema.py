"""Exponential moving average of a model's weights (evaluated and exported instead of the raw
weights when enabled, as most restoration papers do)."""

from __future__ import annotations

import copy

import torch
from torch import nn


#: the share of the starting weights an EMA may still hold at the end of a run before a note says so
START_SHARE_NOTE = 0.05


def start_share(decay: float, iters: int) -> float:
    """The weight the starting weights keep in the EMA after ``iters`` updates: decay^iters."""
    return decay**iters


def short_run_note(decay: float | None, iters: int) -> str | None:
    """A note when the run is too short for its EMA: the EMA weights (the ones validated and
    saved) would still hold more than :data:`START_SHARE_NOTE` of the starting weights — for a
    run initialised from another network's weights, a different function altogether."""
    if not decay:
        return None
    share = start_share(decay, iters)
    if share <= START_SHARE_NOTE:
        return None
    suggest = 0.01 ** (1 / iters)
    return (f"note: train.ema {decay:g} averages over about {1 / (1 - decay):.0f} steps: after {iters} "
            f"iterations the EMA weights, which are validated and saved, still hold {100 * share:.0f} % of "
            f"the starting weights; for a run this short use train.ema <= {suggest:.4f} or none")


class ModelEMA:
    """``ema = decay · ema + (1 − decay) · weights`` after every optimiser step; buffers copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, skip: torch.Tensor | None = None) -> None:
        """One EMA step; ``skip`` (a bool tensor on the weights' device) leaves the average as it
        was when true, decided on the device (the step whose update the optimiser skipped)."""
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        if skip is None:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        elif ema_params:
            rate = torch.full((), 1.0 - self.decay, dtype=ema_params[0].dtype, device=ema_params[0].device)
            torch._foreach_lerp_(ema_params, params, torch.where(skip, 0.0, rate))
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
