"""Knowledge distillation (docs/spec.md §2–3): building blocks (scale conversion, extractors,
losses), the :class:`Distiller` base, and the methods — SLKD and the baselines — each a
config dataclass plus a distiller registered together (:func:`register_distiller`), built by
:func:`build_distiller`.

In a training loop of your own::

    kd = build_distiller("slkd", student, {"a": teacher_a, "b": teacher_b})
    loss, terms = kd(degraded, clean)      # the weighted total and each term
    save_weights(kd.student, "student.pth")

[paper] marks what Zhang & Yan state; [spec] marks this project's reconstruction. Every [spec]
choice is a field of the method's config. Nothing here depends on :mod:`slkd.engine`.
"""

from slkd.distill.base import Distiller, ProbeResult, RecordingTaps
from slkd.distill.config import DistillerConfig
from slkd.distill.registry import (
    DEFAULT_METHOD,
    build_distiller,
    config_class,
    distill_config,
    distiller_class,
    register_distiller,
    registered_methods,
)

# the built-in methods register themselves on import: SLKD first, then the baselines
from slkd.distill.slkd_method import SLKDConfig, SLKDDistiller, register_extractor  # noqa: E402  isort: skip
from slkd.distill.baselines import (  # noqa: E402  isort: skip
    ATConfig,
    ATDistiller,
    FAKDConfig,
    FAKDDistiller,
    FeatureDistiller,
    FeatureKDConfig,
    FitNetConfig,
    FitNetDistiller,
    OutputKDConfig,
    OutputKDDistiller,
    ScratchConfig,
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
from slkd.distill.losses import et_loss, image_l1, kl_loss, nc_loss, total_loss
from slkd.distill.scm import ScaleConversion, standardize_channels, teacher_constant

__all__ = [
    "ATConfig",
    "ATDistiller",
    "DEFAULT_METHOD",
    "Distiller",
    "DistillerConfig",
    "FAKDConfig",
    "FAKDDistiller",
    "FeatureDistiller",
    "FeatureKDConfig",
    "FitNetConfig",
    "FitNetDistiller",
    "OutputKDConfig",
    "OutputKDDistiller",
    "ProbeResult",
    "RecordingTaps",
    "SLKDConfig",
    "SLKDDistiller",
    "ScratchConfig",
    "ScratchDistiller",
    "affinity_matrix",
    "at_loss",
    "attention_map",
    "build_distiller",
    "config_class",
    "distill_config",
    "distiller_class",
    "fakd_loss",
    "register_distiller",
    "register_extractor",
    "registered_methods",
    "BRISQUE_STATS",
    "BrisqueExtractor",
    "IdentityExtractor",
    "NSSFeatures",
    "PIQE_CUES",
    "PiqeExtractor",
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
    "standardize_channels",
    "teacher_constant",
    "total_loss",
]
