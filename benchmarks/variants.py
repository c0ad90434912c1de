"""The variants of SLKD that the distillation study tried and that lost (BENCHMARKS.md), kept
out of the library and registered into its registries from here, as a user's own method or
extractor would be (``slkd distill --plugin benchmarks.variants``):

* ``distill.extractor_nc: mscn`` — Φ_N is the MSCN map alone, compared densely;
* ``distill.extractor_et: edge`` — L_ET compares the decoder features densely, weighted by the
  teacher's edges;
* method ``slkd_decay`` — SLKD whose teacher terms are scheduled over training
  (``teacher_decay: linear | step`` from ``teacher_decay_start``).

Importing this module registers them; :mod:`benchmarks.study.pays` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import benchmarks.families  # noqa: F401  (--plugin benchmarks.variants also registers res-sl-tiny-deep)
from slkd.distill import SLKDConfig, SLKDDistiller, register_distiller, register_extractor
from slkd.distill.base import batch_pair
from slkd.distill.extractors import NSSFeatures, gaussian_window, mscn
from slkd.distill.losses import total_loss
from slkd.errors import ConfigError

__all__ = ["EdgeWeightExtractor", "MSCNExtractor", "SLKDDecayConfig", "SLKDDecayDistiller"]


class MSCNExtractor(nn.Module):
    """``extractor_nc: mscn`` [spec, variant]: Φ_N keeps only the MSCN map N, compared densely
    (position by position) — BRISQUE's normalisation without its summary statistics, which keep
    18 numbers per channel of a whole map and so let very different maps match.

    ``forward(x)`` returns :class:`NSSFeatures` with ``maps = [N]`` and no statistics."""

    def __init__(self, window: int = 7, sigma: float = 7 / 6, c: float = 1e-2, eps: float = 1e-8) -> None:
        super().__init__()
        gaussian_window(window, sigma)  # validates
        self.window, self.sigma, self.c, self.eps = window, sigma, c, eps

    def forward(self, x: Tensor) -> NSSFeatures:
        return NSSFeatures([mscn(x, self.window, self.sigma, self.c, self.eps)], None)


class EdgeWeightExtractor(nn.Module):
    """``extractor_et: edge`` [spec, variant]: instead of comparing PIQE block statistics, L_ET
    compares the decoder features themselves, position by position, weighted by where the
    *teacher's* features have edges and texture — PIQE's cue (activity) as a soft spatial weight.

    The weight of a position is ``1 + g/mean(g)`` with g the Sobel gradient magnitude of the
    channel-mean of the teacher's (standardised) features, so flat regions weigh 1 and edges
    several times that; :meth:`distance` divides by the mean weight."""

    def weight(self, t: Tensor, eps: float = 1e-8) -> Tensor:
        """B×1×H×W weights from teacher features ``t`` (no gradient flows into them)."""
        if t.dim() != 4:
            raise ValueError(f"expected a B×C×H×W feature map, got shape {tuple(t.shape)}")
        m = t.mean(dim=1, keepdim=True)
        if min(m.shape[-2:]) < 2:  # a 1×1 map has no gradient: uniform weights
            return torch.ones_like(m)
        k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=t.dtype, device=t.device)
        padded = F.pad(m, (1, 1, 1, 1), mode="replicate")
        gx = F.conv2d(padded, k.view(1, 1, 3, 3))
        gy = F.conv2d(padded, k.t().contiguous().view(1, 1, 3, 3))
        g = torch.sqrt(gx * gx + gy * gy + eps)
        return 1.0 + g / (g.mean(dim=(-2, -1), keepdim=True) + eps)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def distance(self, s: Tensor, t: Tensor, eps: float = 1e-8) -> Tensor:
        """One level of L_ET: mean(w ⊙ |S − T|)/mean(w), w from the teacher's edges, broadcast
        over channels."""
        with torch.no_grad():
            w = self.weight(t)
        return (w * (s - t).abs()).mean() / (w.mean() + eps)


register_extractor("nc", "mscn")(lambda cfg, levels: MSCNExtractor(c=cfg.mscn_c))
register_extractor("et", "edge")(lambda cfg, levels: EdgeWeightExtractor())


@dataclass
class SLKDDecayConfig(SLKDConfig):
    """``slkd_decay``: SLKD with a schedule of every term but ``pix`` (the teacher terms) over
    training."""

    #: ``none`` keeps their weights; ``linear`` decays them linearly from
    #: ``teacher_decay_start`` (a fraction of the iterations) to 0 at the end; ``step`` switches
    #: them off at ``teacher_decay_start`` (as CSD switches its teacher term off late in training)
    teacher_decay: Literal["none", "linear", "step"] = "none"
    teacher_decay_start: float = 0.75

    def validate(self, path: str = "distill") -> None:
        super().validate(path)
        if self.teacher_decay not in ("none", "linear", "step"):
            raise ConfigError(f"{path}.teacher_decay: 'none', 'linear' or 'step', got {self.teacher_decay!r}")
        if not (isinstance(self.teacher_decay_start, (int, float)) and 0 <= self.teacher_decay_start < 1):
            raise ConfigError(f"{path}.teacher_decay_start: a fraction of the training in [0, 1), "
                              f"got {self.teacher_decay_start!r}")

    def teacher_factor(self, progress: float) -> float:
        """The multiplier of the teacher terms' weights at ``progress`` (fraction done)."""
        if self.teacher_decay == "none" or progress < self.teacher_decay_start:
            return 1.0
        if self.teacher_decay == "step":
            return 0.0
        return max(0.0, (1.0 - progress) / (1.0 - self.teacher_decay_start))


@register_distiller("slkd_decay", SLKDDecayConfig)
class SLKDDecayDistiller(SLKDDistiller):
    """SLKD whose teacher terms follow :meth:`SLKDDecayConfig.teacher_factor`. The trainer calls
    :meth:`set_progress` before every step; once the factor is 0 no teacher runs."""

    #: fraction of the training done before the current step, in [0, 1]
    progress: float = 0.0

    def set_progress(self, step: int, total_steps: int) -> None:
        self.progress = min(1.0, max(0.0, step / total_steps)) if total_steps > 0 else 1.0

    def forward(self, batch: Mapping[str, Tensor] | Tensor,
                clean: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        degraded, clean = batch_pair(batch, clean)
        factor = self.cfg.teacher_factor(self.progress)
        if factor != 0.0:
            terms = self.compute_terms(degraded, clean)
            weights = {k: (v if k == "pix" else v * factor) for k, v in self.weights.items()}
            return total_loss(terms, weights), {f"loss_{k}": v.detach() for k, v in terms.items()}
        # the teacher terms are switched off: no teacher forward, no feature term; the adapters
        # join the graph with a zero gradient (DDP needs every parameter used)
        out, _ = self.run_student(degraded)
        pix = self.pixel_term(out, clean)
        total = self.weights.get("pix", 1.0) * pix
        for p in self.adapters.parameters():
            total = total + 0.0 * p.sum()
        return total, {"loss_pix": pix.detach()}
