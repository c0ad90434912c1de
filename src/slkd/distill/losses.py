"""SLKD loss terms (docs/spec.md §2.4–2.6) and their weighted sum.

All feature losses take features that already went through the
:class:`~slkd.distill.scm.ScaleConversion` (student converted, teacher processed). Teacher
tensors are always treated as constants (:func:`~slkd.distill.scm.teacher_constant`): they may be
inference tensors, and no gradient ever reaches them. Reductions, precisely:

* ``nc_loss``  Σ_levels [ mean_over_maps( mean|Φ_N map(S) − Φ_N map(T)| )
  + γ_stat · mean|stats(S) − stats(T)| ]; every map counts equally (N and each product map,
  each scale), each mean is over all of that map's elements (batch, channels, positions).
* ``et_loss``  Σ_levels Σ_blocks w·mean_cues|Φ_E(S) − Φ_E(T)| / Σ_blocks w, i.e.
  mean(w ⊙ |ΔΦ_E|)/mean(w) with w broadcast over the 6 cues; w from the teacher only.
* ``kl_loss``  T² · (1/(B·C)) Σ_{b,c} Σ_{hw} p_T log(p_T/p_S), p = softmax over the H×W
  positions of output/T for each image b and channel c ("batchmean" over the B·C
  distributions).
* ``image_l1``  mean absolute difference over all elements.

L_pix is :func:`slkd.losses.pixel_loss` (``train.loss``); the default weights of every term are
:class:`slkd.distill.SLKDConfig`'s.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slkd.distill.scm import teacher_constant

__all__ = [
    "affinity_matrix",
    "et_loss",
    "fakd_loss",
    "image_l1",
    "kl_loss",
    "nc_loss",
    "total_loss",
]


def _pairs(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], what: str):
    if len(student_feats) != len(teacher_feats):
        raise ValueError(
            f"{what}: {len(student_feats)} student levels vs {len(teacher_feats)} teacher levels"
        )
    if not student_feats:
        raise ValueError(f"{what}: no feature levels given")
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        if s.shape != t.shape:
            raise ValueError(
                f"{what}: level {i} shapes differ (student {tuple(s.shape)}, teacher "
                f"{tuple(t.shape)}); pass the features through ScaleConversion first"
            )
        yield i, s, teacher_constant(t)


def _per_level(extractor, n: int, what: str) -> list[nn.Module]:
    if isinstance(extractor, (list, tuple, nn.ModuleList)):
        if len(extractor) != n:
            raise ValueError(f"{what}: {len(extractor)} extractors for {n} levels")
        return list(extractor)
    return [extractor] * n


def nc_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    extractor,
    gamma_stat: float = 1.0,
) -> Tensor:
    """L_NC (docs/spec.md §2.4) between converted student and Teacher A encoder features.

    ``extractor`` is a :class:`BrisqueExtractor` (or a list, one per level) or an
    :class:`IdentityExtractor` (ablation: Σ_levels mean|S − T|). ``gamma_stat`` weighs the
    statistics term [spec, 1.0].
    """
    extractors = _per_level(extractor, len(student_feats), "nc_loss")
    total = None
    for i, s, t in _pairs(student_feats, teacher_feats, "nc_loss"):
        ext = extractors[i]
        fs = ext(s)
        with torch.no_grad():
            ft = ext(t)
        maps = torch.stack([(ms - mt).abs().mean() for ms, mt in zip(fs.maps, ft.maps)]).mean()
        level = maps
        if fs.stats is not None and gamma_stat != 0:
            level = level + gamma_stat * (fs.stats - ft.stats).abs().mean()
        total = level if total is None else total + level
    return total


def et_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    extractors_per_level,
    eps: float = 1e-8,
) -> Tensor:
    """L_ET (docs/spec.md §2.5) between converted student and Teacher B decoder features:
    Σ_levels ``extractor.distance(S, T, eps)``.

    ``extractors_per_level``: one :class:`PiqeExtractor` per level (its ``level_index`` sets
    the block size; the activity weight comes from the TEACHER's block variance, ``eps`` guards
    the division by mean(w)), a single extractor for all levels, or
    :class:`IdentityExtractor` (ablation: Σ_levels mean|S − T|); any module with that
    ``distance`` method will do.
    """
    extractors = _per_level(extractors_per_level, len(student_feats), "et_loss")
    total = None
    for i, s, t in _pairs(student_feats, teacher_feats, "et_loss"):
        level = extractors[i].distance(s, t, eps)
        total = level if total is None else total + level
    return total


def affinity_matrix(f: Tensor, size: Sequence[int]) -> Tensor:
    """FAKD's spatial affinity: adaptive average pool to ``size``, L2-normalise over channels
    at each position, then A = FᵀF: B×(h·w)×(h·w) cosine similarities between positions."""
    if f.dim() != 4:
        raise ValueError(f"expected a B×C×H×W feature map, got shape {tuple(f.shape)}")
    p = F.adaptive_avg_pool2d(f, tuple(size))
    p = F.normalize(p.flatten(2), dim=1)  # B×C×hw
    return p.transpose(1, 2) @ p


def fakd_loss(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], pool: int = 8) -> Tensor:
    """Σ_levels mean|Aff_S − Aff_T|. Both maps are pooled to the same h×w: ``pool`` per side,
    or less where either map is smaller (pooling never up-samples)."""
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"fakd_loss: {len(student_feats)} student vs {len(teacher_feats)} teacher levels")
    total = None
    for s, t in zip(student_feats, teacher_feats):
        t = teacher_constant(t)
        size = (min(pool, s.shape[-2], t.shape[-2]), min(pool, s.shape[-1], t.shape[-1]))
        level = (affinity_matrix(s, size) - affinity_matrix(t, size)).abs().mean()
        total = level if total is None else total + level
    return total


def kl_loss(student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0) -> Tensor:
    """L_KL = KL(p_T ‖ p_S)·T² (docs/spec.md §2.6), spatial softmax per image and channel.

    Summed over the H×W positions, averaged over the B·C (image, channel) distributions.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_out.shape != teacher_out.shape or student_out.dim() != 4:
        raise ValueError(
            f"kl_loss needs equal B×C×H×W outputs, got {tuple(student_out.shape)} and "
            f"{tuple(teacher_out.shape)}"
        )
    teacher_out = teacher_constant(teacher_out)
    log_ps = F.log_softmax(student_out.flatten(2) / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_out.flatten(2) / temperature, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)  # B×C
    return kl.mean() * temperature**2


def image_l1(out: Tensor, teacher_out: Tensor) -> Tensor:
    """L_img = mean|S(x) − A(x)|, the teacher output treated as a constant."""
    return F.l1_loss(out, teacher_constant(teacher_out))


def total_loss(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Σ weights[name]·term over the given terms (every name must have a weight).

    Missing terms are simply absent (e.g. ``drl: off`` gives no ``nc``); terms whose weight is
    0 are skipped, so a NaN in a disabled term cannot leak into the total; with every weight 0
    the total is 0.
    """
    if not terms:
        raise ValueError("total_loss needs at least one term")
    total = None
    for name, value in terms.items():
        if name not in weights:
            raise ValueError(f"unknown loss term {name!r}; weighted terms: {', '.join(weights)}")
        w = float(weights[name])
        if w == 0:
            continue
        total = w * value if total is None else total + w * value
    if total is None:
        ref = next(iter(terms.values()))
        return ref.new_zeros(())
    return total
