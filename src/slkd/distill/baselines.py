"""The baselines shipped beside SLKD (docs/spec.md §3): same student, data and iterations; only
the loss differs.

=========  ==================================================================================
method     loss (terms reported as ``loss_<name>``)
=========  ==================================================================================
scratch    pix·L_pix — no teacher is run
output_kd  pix·L_pix + img·L1(S(x), A(x)) + kl·L_KL (each only when its weight is > 0)
fitnet     pix·L_pix + feature·Σ_levels MSE(SCM(F_S), F_A)
at         pix·L_pix + feature·Σ_levels ‖a_S − a_T‖² (attention transfer, no adapters)
fakd       pix·L_pix + feature·Σ_levels mean|Aff_S − Aff_T| (feature affinity, no adapters)
=========  ==================================================================================

The feature baselines read the encoder AND decoder taps of the student and of Teacher A on the
degraded input x, level by level in tap order (by default the student's level names,
:func:`slkd.models.default_taps`).

Each method's options and default weights are its config dataclass below (``ScratchConfig`` …
``FAKDConfig``), registered with the distiller (:func:`slkd.distill.register_distiller`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slkd.distill.base import Distiller
from slkd.distill.config import DistillerConfig
from slkd.distill.losses import affinity_matrix, fakd_loss, image_l1, kl_loss
from slkd.distill.registry import register_distiller
from slkd.distill.scm import ScaleConversion, teacher_constant
from slkd.errors import ConfigError, SlkdError
from slkd.models.protocol import default_taps

__all__ = [
    "ATConfig",
    "ATDistiller",
    "FAKDConfig",
    "FAKDDistiller",
    "FeatureDistiller",
    "FeatureKDConfig",
    "FitNetConfig",
    "FitNetDistiller",
    "OutputKDConfig",
    "OutputKDDistiller",
    "ScratchConfig",
    "ScratchDistiller",
    "affinity_matrix",
    "at_loss",
    "attention_map",
    "fakd_loss",
]


# ---------------------------------------------------------------------------- loss functions


def attention_map(f: Tensor, size: Sequence[int] | None = None) -> Tensor:
    """Spatial attention of Zagoruyko & Komodakis: mean over channels of F², optionally
    bilinearly resized to ``size``, flattened and L2-normalised per image: B×(H·W)."""
    if f.dim() != 4:
        raise ValueError(f"expected a B×C×H×W feature map, got shape {tuple(f.shape)}")
    a = f.pow(2).mean(dim=1, keepdim=True)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    return F.normalize(a.flatten(1), dim=1)


def at_loss(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """Σ_levels mean_over_images ‖a_S − a_T‖², the student's map resized to the teacher's size.

    a_S, a_T are unit vectors, so each level lies in [0, 4] (= 2 − 2·cos).
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"at_loss: {len(student_feats)} student vs {len(teacher_feats)} teacher levels")
    total = None
    for s, t in zip(student_feats, teacher_feats):
        t = teacher_constant(t)
        a_t = attention_map(t)
        a_s = attention_map(s, t.shape[-2:])
        level = (a_s - a_t).pow(2).sum(dim=1).mean()
        total = level if total is None else total + level
    return total


# ---------------------------------------------------------------------------- configs


@dataclass
class ScratchConfig(DistillerConfig):
    """``scratch``: L_pix only, no teacher."""

    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0})
    TEACHERS = ()


@dataclass
class OutputKDConfig(DistillerConfig):
    """``output_kd``: L_pix + img·L1(S(x), A(x)) + kl·L_KL; λ_kl 0.5 as SLKD's, λ_img 0 [spec]."""

    #: softmax temperature of L_KL
    temperature: float = 1.0

    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "img": 0.0, "kl": 0.5})

    def validate(self, path: str = "distill") -> None:
        super().validate(path)
        if self.temperature <= 0:
            raise ConfigError(f"{path}.temperature: must be > 0 (it divides)")
        if self.loss_weights["img"] == 0 and self.loss_weights["kl"] == 0:
            raise ConfigError(f"{path}.loss_weights: output_kd with img and kl both 0 is scratch; set img "
                              "(L1 to Teacher A's output) and/or kl above 0, or use method scratch")


@dataclass
class FeatureKDConfig(DistillerConfig):
    """Options shared by the feature baselines: which levels they compare. Each also has an
    output-level term, ``img``·L1(S(x), A(x)) (0 by default for FitNet and AT; 0.5 for FAKD, as
    its paper has it), so that every method can be compared with the same teacher-output term
    [variant]."""

    #: student / Teacher A levels compared, encoder then decoder; null: the student's own level
    #: names (slkd.models.default_taps)
    encoder_taps: list[str] | None = None
    decoder_taps: list[str] | None = None

    def validate(self, path: str = "distill") -> None:
        super().validate(path)
        if self.loss_weights["feature"] == 0:
            raise ConfigError(f"{path}.loss_weights.feature: {self.method} with feature weight 0 is "
                              "scratch; set it above 0 or use method scratch")

    def levels(self, student: nn.Module) -> list[str]:
        """The levels compared, encoder then decoder (the student's own when the config says null)."""
        enc, dec = default_taps(student)
        return [*(enc if self.encoder_taps is None else self.encoder_taps),
                *(dec if self.decoder_taps is None else self.decoder_taps)]


# The feature baselines' default weights [spec, measured]: at a weight of 1.0 their feature
# gradient dwarfs the pixel gradient at a trained student and they end below scratch; these
# weights bring it under the pixel gradient and put them at or above scratch (BENCHMARKS.md §9,
# benchmarks/loss_balance.py).


@dataclass
class FitNetConfig(FeatureKDConfig):
    """``fitnet``: L_pix + feature·Σ_levels MSE(SCM(F_S), F_A)."""

    #: standardise both sides in the SCM as SLKD does (false: the classic 1×1 regressor)
    scm_standardize: bool = True

    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "feature": 0.003, "img": 0.0})


@dataclass
class ATConfig(FeatureKDConfig):
    """``at``: L_pix + feature·attention transfer."""

    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "feature": 0.0015, "img": 0.0})


@dataclass
class FAKDConfig(FeatureKDConfig):
    """``fakd``: L_pix + feature·feature-affinity distance + img·L1(S(x), A(x)).

    The library's default method. Its teacher-output term is on (0.5, as in FAKD's paper): with
    it, and a student cut from Teacher A, FAKD measured best of every method and variant the
    study screened (BENCHMARKS.md §12); without it (``img: 0``) it is the affinity term alone."""

    #: features are pooled to at most this size per side before the HW×HW affinity
    fakd_pool: int = 8

    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "feature": 0.002, "img": 0.5})

    def validate(self, path: str = "distill") -> None:
        super().validate(path)
        if self.fakd_pool < 1:
            raise ConfigError(f"{path}.fakd_pool: must be >= 1, got {self.fakd_pool}")


# ---------------------------------------------------------------------------- distillers


@register_distiller("scratch", ScratchConfig)
class ScratchDistiller(Distiller):
    """L_pix only: the honest reference. No teacher is held or run."""

    def compute_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out, _ = self.run_student(x)
        return {"pix": self.pixel_term(out, y)}


@register_distiller("output_kd", OutputKDConfig)
class OutputKDDistiller(Distiller):
    """L_pix + img·L1(S(x), A(x)) + kl·L_KL, each teacher term only when its weight is > 0."""

    def __init__(self, cfg: OutputKDConfig, student: nn.Module, teachers: Mapping[str, nn.Module],
                 pixel_loss: str = "l1") -> None:
        super().__init__(cfg, student, teachers, pixel_loss)
        self.temperature = float(cfg.temperature)
        with self.closing_on_error():
            self._check_same_output("a")

    def compute_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out, _ = self.run_student(x)
        terms = {"pix": self.pixel_term(out, y)}
        a_out, _ = self.run_teacher("a", x)
        if self.weights["img"] > 0:
            terms["img"] = image_l1(out, a_out)
        if self.weights["kl"] > 0:
            terms["kl"] = kl_loss(out, a_out, self.temperature)
        return terms


class FeatureDistiller(Distiller):
    """Base of the feature baselines: L_pix + feature·(a loss over the tapped levels of the
    student and of Teacher A, both on x)."""

    def __init__(self, cfg: FeatureKDConfig, student: nn.Module, teachers: Mapping[str, nn.Module],
                 pixel_loss: str = "l1") -> None:
        names = list(dict.fromkeys(cfg.levels(student)))
        if not names:
            raise SlkdError(f"{self.method} needs at least one tapped level (encoder_taps/decoder_taps)")
        super().__init__(cfg, student, teachers, pixel_loss, student_taps=names, teacher_taps={"a": names})
        self.levels = names
        if self.weights["img"] > 0:
            with self.closing_on_error():
                self._check_same_output("a")

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def compute_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out, s_feats = self.run_student(x)
        terms = {"pix": self.pixel_term(out, y)}
        a_out, t_feats = self.run_teacher("a", x, self.levels)
        if self.weights["img"] > 0:
            terms["img"] = image_l1(out, a_out)
        terms["feature"] = self.feature_loss_fp32(self.feature_loss, [s_feats[n] for n in self.levels],
                                                  [t_feats[n] for n in self.levels])
        return terms


@register_distiller("fitnet", FitNetConfig)
class FitNetDistiller(FeatureDistiller):
    """FitNet: Σ_levels MSE(SCM(F_S), F_A). With ``scm_standardize: false`` the SCM is the
    classic 1×1 regressor; by default both sides are standardised as in SLKD (§2.3)."""

    def __init__(self, cfg: FitNetConfig, student: nn.Module, teachers: Mapping[str, nn.Module],
                 pixel_loss: str = "l1") -> None:
        super().__init__(cfg, student, teachers, pixel_loss)
        with self.closing_on_error():
            self.adapters["features"] = ScaleConversion(
                self.probe["student"].channels(self.levels), self.probe["a"].channels(self.levels),
                standardize=cfg.scm_standardize,
            )

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
        s, t = self.adapters["features"](student_feats, teacher_feats)
        return torch.stack([F.mse_loss(a, b) for a, b in zip(s, t)]).sum()


@register_distiller("at", ATConfig)
class ATDistiller(FeatureDistiller):
    """Attention transfer (:func:`at_loss`); no adapters."""

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
        return at_loss(student_feats, teacher_feats)


@register_distiller("fakd", FAKDConfig)
class FAKDDistiller(FeatureDistiller):
    """Feature-affinity KD (:func:`fakd_loss`, pooled to ``pool``×``pool``); no adapters."""

    def feature_loss(self, student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
        return fakd_loss(student_feats, teacher_feats, int(self.cfg.fakd_pool))
