"""SLKD (METHOD.md §2–3): building blocks (scale conversion, extractors, losses) and the
distillers — SLKD and the baselines on one :class:`Distiller` base, built by
:func:`build_distiller` from a :class:`~slkd.engine.config.DistillConfig`.

[paper] marks what Zhang & Yan state; [spec] marks this project's reconstruction. Every [spec]
choice is a constructor or function argument.
"""

from slkd.distill.base import Distiller, ProbeResult, RecordingTaps
from slkd.distill.baselines import (
    ATDistiller,
    FAKDDistiller,
    FeatureDistiller,
    FitNetDistiller,
    OutputKDDistiller,
    ScratchDistiller,
    affinity_matrix,
    at_loss,
    attention_map,
    fakd_loss,
)
from slkd.distill.extractors import (
    BRISQUE_STATS,
    PIQE_CUES,
    BrisqueExtractor,
    IdentityExtractor,
    NSSFeatures,
    PiqeExtractor,
    aggd_stats,
    block_cues,
    gaussian_window,
    ggd_stats,
    level_indices_from_sizes,
    mscn,
    pairwise_products,
    piqe_extractors,
)
from slkd.distill.losses import (
    LOSS_TERMS,
    SLKDLossWeights,
    et_loss,
    image_l1,
    kl_loss,
    nc_loss,
    pixel_l1,
    total_loss,
)
from slkd.distill.methods import DISTILLERS, build_distiller, resolve_loss_weights
from slkd.distill.scm import ScaleConversion, standardize_channels, teacher_constant
from slkd.distill.slkd_method import SLKDDistiller

__all__ = [
    "ATDistiller",
    "DISTILLERS",
    "Distiller",
    "FAKDDistiller",
    "FeatureDistiller",
    "FitNetDistiller",
    "OutputKDDistiller",
    "ProbeResult",
    "RecordingTaps",
    "SLKDDistiller",
    "ScratchDistiller",
    "affinity_matrix",
    "at_loss",
    "attention_map",
    "build_distiller",
    "fakd_loss",
    "resolve_loss_weights",
    "BRISQUE_STATS",
    "BrisqueExtractor",
    "IdentityExtractor",
    "LOSS_TERMS",
    "NSSFeatures",
    "PIQE_CUES",
    "PiqeExtractor",
    "SLKDLossWeights",
    "ScaleConversion",
    "aggd_stats",
    "block_cues",
    "et_loss",
    "gaussian_window",
    "ggd_stats",
    "image_l1",
    "kl_loss",
    "level_indices_from_sizes",
    "mscn",
    "nc_loss",
    "pairwise_products",
    "piqe_extractors",
    "pixel_l1",
    "standardize_channels",
    "teacher_constant",
    "total_loss",
]
