"""SLKD building blocks (METHOD.md §2.3–2.7): scale conversion, extractors and losses.

[paper] marks what Zhang & Yan state; [spec] marks this project's reconstruction. Every [spec]
choice is a constructor or function argument.
"""

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
from slkd.distill.scm import ScaleConversion, standardize_channels, teacher_constant

__all__ = [
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
