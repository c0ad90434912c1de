"""Registry of distillation methods and :func:`build_distiller`, their one constructor from a
:class:`~slkd.engine.config.DistillConfig`."""

from __future__ import annotations

from torch import nn

from slkd.distill.baselines import (
    ATDistiller,
    FAKDDistiller,
    FitNetDistiller,
    OutputKDDistiller,
    ScratchDistiller,
)
from slkd.distill.base import Distiller
from slkd.distill.slkd_method import SLKDDistiller
from slkd.engine.config import DistillConfig
from slkd.errors import SlkdError

__all__ = ["DISTILLERS", "build_distiller", "resolve_loss_weights"]

#: method name (``distill.method``) → class
DISTILLERS: dict[str, type[Distiller]] = {
    cls.method: cls
    for cls in (SLKDDistiller, ScratchDistiller, OutputKDDistiller, FitNetDistiller, ATDistiller, FAKDDistiller)
}

#: the terms each method adds to the total (besides always reporting ``pix``)
_METHOD_TERMS = {
    "slkd": ("pix", "kl", "nc", "et", "img"),
    "scratch": ("pix",),
    "output_kd": ("pix", "img", "kl"),
    "fitnet": ("pix", "feature"),
    "at": ("pix", "feature"),
    "fakd": ("pix", "feature"),
}


#: default weight of the feature term of each feature baseline [spec, measured]: at a weight of
#: 1.0 their gradient is 114× (FitNet), 248× (AT) and 183× (FAKD) the pixel gradient at a trained
#: student and they end 1.5-3.6 dB below scratch; these weights bring it to about 0.4× and put
#: them at or above scratch (BENCHMARKS.md §9, benchmarks/loss_balance.py). Other methods: 1.0
#: (unused).
FEATURE_WEIGHTS = {"fitnet": 0.003, "at": 0.0015, "fakd": 0.002}


def resolve_loss_weights(cfg: DistillConfig) -> dict[str, float]:
    """``cfg.loss_weights`` over the defaults of :class:`DistillConfig` and the method's feature
    weight (:data:`FEATURE_WEIGHTS`): a partial mapping (e.g. ``{img: 1.0}``) only changes the
    keys it names."""
    defaults = {**DistillConfig().loss_weights, "feature": FEATURE_WEIGHTS.get(cfg.method, 1.0)}
    weights = {**defaults, **cfg.loss_weights}
    unknown = sorted(set(weights) - set(defaults))
    if unknown:
        raise SlkdError(f"distill.loss_weights: unknown term(s) {', '.join(unknown)}; "
                        f"known: {', '.join(defaults)}")
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise SlkdError(f"distill.loss_weights.{name}: must be a number >= 0, got {value!r}")
    return {k: float(v) for k, v in weights.items()}


def _check_teacher_b(teacher_b: nn.Module) -> None:
    if getattr(teacher_b, "global_residual", False):
        raise SlkdError(
            "Teacher B has its global input-to-output residual enabled. Teacher B is trained "
            "clean → clean, and with the residual it learns the identity through the skip, so its "
            "decoder features carry nothing to distil (METHOD.md §2.1). Train it with "
            "model.options.global_residual: false (role teacher_b), or use distill.teacher_b: "
            "same_as_a or distill.irl: false."
        )


def build_distiller(
    cfg: DistillConfig,
    student: nn.Module,
    teacher_a: nn.Module | None = None,
    teacher_b: nn.Module | None = None,
    *,
    pixel_loss: str = "l1",
) -> Distiller:
    """The distiller of ``cfg.method`` (METHOD.md §2–3) for ``student`` and frozen teachers.

    Teachers a method does not use are not held (``scratch`` holds none; only SLKD with IRL on,
    et > 0 and ``teacher_b: separate`` holds Teacher B: :meth:`DistillConfig.uses_teacher_b`).
    ``pixel_loss`` is the pixel term L_pix: ``l1`` (default), ``mse`` or ``charbonnier``, as
    ``train.loss`` (:func:`slkd.engine.tasks.pixel_loss`). Raises :class:`SlkdError` for
    impossible combinations: an unknown method or pixel loss, a missing teacher, a Teacher B with
    its global residual on, a method whose distillation terms all have weight 0, wrong tap
    names, mismatched shapes.
    """
    distiller = _build(cfg, student, teacher_a, teacher_b)
    distiller.set_pixel_loss(pixel_loss)
    return distiller


def _build(cfg: DistillConfig, student: nn.Module, teacher_a: nn.Module | None,
           teacher_b: nn.Module | None) -> Distiller:
    method = cfg.method
    if method not in DISTILLERS:
        raise SlkdError(f"unknown distillation method {method!r}; known methods: {', '.join(DISTILLERS)}")
    w = resolve_loss_weights(cfg)
    if not any(w[t] > 0 for t in _METHOD_TERMS[method]):
        raise SlkdError(f"{method}: every loss weight it uses ({', '.join(_METHOD_TERMS[method])}) is 0")
    if cfg.temperature <= 0:
        raise SlkdError(f"distill.temperature must be > 0, got {cfg.temperature}")
    if cfg.uses_teacher_a() and teacher_a is None:
        raise SlkdError(f"method {method!r} needs Teacher A (teachers.a)")
    if method == "output_kd" and w["img"] == 0 and w["kl"] == 0:
        raise SlkdError("output_kd with loss_weights img and kl both 0 is scratch; set img (L1 to "
                        "Teacher A's output) and/or kl above 0, or use method scratch")
    if method in ("fitnet", "at", "fakd") and w["feature"] == 0:
        raise SlkdError(f"{method} with loss_weights.feature 0 is scratch; set it above 0 or use "
                        "method scratch")
    taps = [*cfg.encoder_taps, *cfg.decoder_taps]
    try:
        if method == "scratch":
            return ScratchDistiller(student, w)
        if method == "output_kd":
            return OutputKDDistiller(student, teacher_a, w, temperature=cfg.temperature)
        if method == "fitnet":
            return FitNetDistiller(student, teacher_a, w, taps, standardize=cfg.scm_standardize)
        if method == "at":
            return ATDistiller(student, teacher_a, w, taps)
        if method == "fakd":
            return FAKDDistiller(student, teacher_a, w, taps, pool=cfg.fakd_pool)
        uses_b = cfg.uses_teacher_b()
        if uses_b:
            if teacher_b is None:
                raise SlkdError("SLKD with IRL on needs Teacher B (teachers.b), or set "
                                "distill.irl: false, or distill.teacher_b: same_as_a")
            _check_teacher_b(teacher_b)
        return SLKDDistiller(
            student, teacher_a, teacher_b if uses_b else None, w,
            drl=cfg.drl, irl=cfg.irl, extractor_nc=cfg.extractor_nc, extractor_et=cfg.extractor_et,
            teacher_b_mode=cfg.teacher_b, encoder_taps=cfg.encoder_taps, decoder_taps=cfg.decoder_taps,
            gamma_stat=cfg.gamma_stat, temperature=cfg.temperature, scm_standardize=cfg.scm_standardize,
            brisque_scales=cfg.brisque_scales, mscn_c=cfg.mscn_c, piqe_block=cfg.piqe_block,
            piqe_tau=cfg.piqe_tau, piqe_temperature=cfg.piqe_temperature,
            compile_losses=cfg.compile_losses,
        )
    except ValueError as exc:  # parameter checks of the extractors, SCMs and loss weights
        raise SlkdError(f"distill ({method}): {exc}") from exc
