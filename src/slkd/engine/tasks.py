"""What a training step computes. The trainer owns the loop; a task owns the loss.

:class:`SupervisedTask` trains one network from pairs (Teacher A and scratch students:
degraded → clean; Teacher B: clean → clean). Distillation methods plug into the same trainer
as other tasks (a :class:`slkd.distill.Distiller` is one), so every method gets the same loop,
logging, checkpoints and ranks. :func:`task_for_run` builds the task of a run config.

What the trainer asks of a task is :class:`TrainingTask`: ``model`` (evaluated and exported),
``trainable_module()`` and ``loss(network, batch)``; and, where a task has them,
``clean_input`` (validation feeds the clean image), ``set_progress(step, total)`` (called before
every step) and ``feature_check(model, item, device)`` (run after every validation, see
:class:`FeatureCheck`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from slkd.distill import Distiller, build_distiller
from slkd.engine.builders import build_teacher
from slkd.engine.config import TrainRunConfig
from slkd.losses import check_pixel_loss, pixel_loss
from slkd.models.protocol import decoder_taps, size_multiple
from slkd.models.taps import FeatureTaps

__all__ = ["FeatureCheck", "SupervisedTask", "TrainingTask", "distiller_task", "feature_spread",
           "supervised_task", "task_for_run"]

#: a decoder feature map whose standard deviation is below this carries nothing to distil
FLAT_FEATURE_STD = 1e-3


class TrainingTask(Protocol):
    """What the trainer talks to (:class:`SupervisedTask`, :class:`slkd.distill.Distiller`)."""

    #: the network that is evaluated and exported
    model: nn.Module

    def trainable_module(self) -> nn.Module:
        """The module whose parameters are optimised, checkpointed and wrapped in DDP."""

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total and the detached terms of ``batch``; ``network`` is the trainable module or
        its DDP wrapper."""


@dataclass(frozen=True)
class FeatureCheck:
    """What a task reports after a validation: an event for metrics.jsonl and a warning."""

    event: str
    values: dict[str, float]
    warning: str | None = None


class SupervisedTask:
    """One network, one pixel loss.

    ``clean_input=True`` (Teacher B) feeds the clean image as the input: the network learns to
    reconstruct it, which only teaches something when its global residual is disabled.
    """

    def __init__(self, model: nn.Module, loss: str = "l1", *, clean_input: bool = False) -> None:
        self.model = model
        self.loss_name = check_pixel_loss(loss)  # an unknown name fails now
        self.clean_input = clean_input

    def trainable_module(self) -> nn.Module:
        return self.model

    def inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["gt"] if self.clean_input else batch["lq"]

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``network`` is ``self.model`` or its DistributedDataParallel wrapper."""
        out = network(self.inputs(batch))
        loss = pixel_loss(self.loss_name, out, batch["gt"])
        return loss, {f"loss_{self.loss_name}": loss.detach()}

    def feature_check(self, model: nn.Module, item: Mapping[str, torch.Tensor],
                      device: torch.device) -> FeatureCheck | None:
        """For a clean → clean network (Teacher B): the spread of each decoder level of the model
        (its ``decoder_taps``, the model protocol) on the clean image of a validation item, and
        a warning when one is near-constant. Nothing for other tasks or models without levels."""
        names = decoder_taps(model)
        if not self.clean_input or not names:
            return None
        gt = item["gt"][None].to(device)
        m = size_multiple(model)
        gt = F.pad(gt, (0, (-gt.shape[-1]) % m, 0, (-gt.shape[-2]) % m), mode="replicate")
        spread = feature_spread(model, gt, names)
        flat = [name for name, value in spread.items() if value < FLAT_FEATURE_STD]
        warning = (f"Teacher B decoder features are near-constant at {', '.join(flat)}: it carries "
                   "nothing to distil (is the global residual disabled?)") if flat else None
        return FeatureCheck("teacher_b_features", {f"std_{k}": v for k, v in spread.items()}, warning)


@torch.no_grad()
def feature_spread(model: nn.Module, x: torch.Tensor, names) -> dict[str, float]:
    """Standard deviation of each tapped feature map on ``x``: a Teacher B whose decoder
    features are near-constant carries nothing to distil (docs/spec.md §2.1)."""
    was_training = model.training
    model.eval()
    with FeatureTaps(model, names) as taps:
        model(x)
        spread = {name: taps[name].float().std().item() for name in names}
    model.train(was_training)
    return spread


Log = Callable[[str], None] | None


def supervised_task(cfg: TrainRunConfig, model: nn.Module, log: Log = None) -> tuple[SupervisedTask, dict]:
    """The task of roles teacher_a, teacher_b (clean input) and scratch: ``train.loss``."""
    return SupervisedTask(model, cfg.train.loss, clean_input=cfg.role == "teacher_b"), {}


def distiller_task(cfg: TrainRunConfig, student: nn.Module, log: Log = None) -> tuple[Distiller, dict]:
    """The task of role distill: the distiller of ``cfg.distill`` over the teachers its method
    runs with these settings (``teacher_roles()``: a teacher whose terms all have weight 0 is
    not loaded), with ``train.loss`` as its pixel term."""
    method_cfg = cfg.distill
    method = method_cfg.method
    if log and method_cfg.ignored_options:
        log(f"note: distill.method {method} does not use distill.{', distill.'.join(method_cfg.ignored_options)} "
            "(options of other methods); ignored")
    teachers = {role: build_teacher(getattr(cfg.teachers, role), f"teachers.{role}", log)
                for role in method_cfg.teacher_roles()}
    distiller = build_distiller(method_cfg, student, teachers, pixel_loss=cfg.train.loss)
    if log:
        log(f"{method}: adapters {distiller.adapter_parameter_count():,} parameters "
            "(trained with the student, not exported)")
    return distiller, {"method": method}


def task_for_run(cfg: TrainRunConfig, model: nn.Module, log: Log = None):
    """:func:`distiller_task` for role distill, :func:`supervised_task` for the others."""
    return (distiller_task if cfg.role == "distill" else supervised_task)(cfg, model, log)
