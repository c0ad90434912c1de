"""SLKD (docs/spec.md §2): dual teachers, one student, DRL and IRL run simultaneously.

    L = pix·L_pix + kl·L_KL + nc·L_NC + et·L_ET + img·L_img

* **DRL** (``drl: on`` and weight nc > 0): Teacher A on the degraded x; the student's encoder
  taps go through one SCM per level into Teacher A's encoder space; L_NC compares them through
  the BRISQUE extractor Φ_N (or plain L1 with ``extractor_nc: identity``).
* **IRL** (``irl: on`` and weight et > 0): Teacher B on the clean y (or Teacher A on y with
  ``teacher_b: same_as_a``); the student's decoder taps (student on x) go through one SCM per
  level; L_ET compares them through per-level PIQE extractors Φ_E whose block size follows the
  level's resolution (or plain L1 with ``extractor_et: identity``).
* L_KL and L_img compare S(x) with A(x); L_pix compares S(x) with y.

A term whose weight is 0 is not computed, and a teacher forward whose result is unused is not
run: Teacher A runs on x only for DRL, KL or img; on y only for IRL with ``same_as_a``; Teacher B
only for IRL. Without DRL no encoder SCM exists, without IRL no decoder SCM, so every adapter
parameter receives a gradient at every step (DDP needs no ``find_unused_parameters``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Literal, Mapping

import torch
from torch import Tensor, nn

from slkd.distill.base import Distiller
from slkd.distill.config import DistillerConfig
from slkd.distill.extractors import BrisqueExtractor, IdentityExtractor, level_indices_from_sizes, piqe_extractors
from slkd.distill.losses import et_loss, fakd_loss, image_l1, kl_loss, nc_loss
from slkd.distill.registry import register_distiller
from slkd.distill.scm import ScaleConversion
from slkd.errors import ConfigError, SlkdError
from slkd.models.protocol import default_taps

__all__ = ["SLKDConfig", "SLKDDistiller", "register_extractor"]

#: Φ_N and Φ_E by name: name → factory(cfg, level_indices) of the extractor (the resolution
#: level of each tapped feature, 0 at full size). Φ_N returns :class:`NSSFeatures`; Φ_E has
#: ``distance(student, teacher, eps)``, or is a list of such, one per level
#: (:func:`~slkd.distill.losses.et_loss`)
_EXTRACTORS: dict[str, dict[str, Callable]] = {"nc": {}, "et": {}}
#: the distance of ``extractor_nc/et: affinity``: FAKD's on the raw features, no SCM
AFFINITY = "affinity"


def register_extractor(part: Literal["nc", "et"], name: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``factory(cfg, level_indices)`` as ``distill.extractor_<part>: name``."""
    if part not in _EXTRACTORS or not name.isidentifier() or name == AFFINITY:
        raise ValueError(f"register_extractor: part 'nc' or 'et' and a plain word other than "
                         f"{AFFINITY!r}, got {part!r}, {name!r}")

    def decorate(factory: Callable) -> Callable:
        if _EXTRACTORS[part].get(name, factory) is not factory:
            raise ValueError(f"an extractor_{part} named {name!r} is already registered")
        _EXTRACTORS[part][name] = factory
        return factory

    return decorate


@dataclass
class SLKDConfig(DistillerConfig):
    """SLKD's options (docs/spec.md §2), every [spec] choice a key, and its default weights.

    Loss weights: the paper's three trade-off weights are 0.5, 0.1, 0.1 [paper]; which belongs
    to which term is [spec] (λ_kl 0.5, λ_nc 0.1, λ_et 0.1). Our L_NC and L_ET are
    reconstructions whose scale the paper's weights were not tuned for, so the defaults here
    (``DEFAULT_WEIGHTS``) weigh them less [spec; why, as measured: BENCHMARKS.md §9,
    docs/method.md]. λ_img 0, λ_pix 1 [spec].
    ``loss_weights: {kl: 0.5, nc: 0.1, et: 0.1}`` gives the paper's.
    """

    #: ablation switches (docs/spec.md §2.7)
    drl: bool = True
    irl: bool = True
    #: Φ_N: BRISQUE maps + statistics; ``identity``: plain L1 on the SCM's standardised
    #: features (ablation; FitNet's normalised distance); ``affinity``: FAKD's spatial-affinity
    #: distance on the raw features, no SCM (the dual-teacher split with a distance that works,
    #: [variant]); or a name registered with :func:`register_extractor`
    extractor_nc: str = "brisque"
    #: Φ_E: PIQE block cues; ``identity``: plain L1 (ablation); ``affinity``: as for
    #: ``extractor_nc``; or a registered name
    extractor_et: str = "piqe"
    #: IRL's teacher: a separate clean → clean Teacher B, or Teacher A run on the clean image
    teacher_b: Literal["separate", "same_as_a"] = "separate"
    #: levels read by DRL (encoder) and IRL (decoder); null: the student's own level names
    #: (slkd.models.default_taps: docs/spec.md §2.2's encoder_level1 … refinement)
    encoder_taps: list[str] | None = None
    decoder_taps: list[str] | None = None
    #: weight of the statistics part of L_NC
    gamma_stat: float = 1.0
    #: softmax temperature of L_KL
    temperature: float = 1.0
    #: SCMs standardise student and teacher features per channel
    scm_standardize: bool = True
    #: BRISQUE scales of Φ_N (1 or 2)
    brisque_scales: int = 1
    #: MSCN stabiliser
    mscn_c: float = 1e-2
    #: PIQE block size at full resolution, activity threshold and soft-count temperature
    piqe_block: int = 8
    piqe_tau: float = 0.1
    piqe_temperature: float = 0.02
    #: ``affinity`` extractors pool features to at most this size per side (FAKD's ``fakd_pool``)
    affinity_pool: int = 8
    #: run the feature terms (SCMs, extractors, L_NC, L_ET) through ``torch.compile``; the
    #: networks stay eager. The same numbers to float rounding and somewhat faster steps on CPU
    #: (BENCHMARKS.md §8); the first step pays the compilation
    compile_losses: bool = False

    #: pix: L_pix to the clean image; kl: L_KL to Teacher A's output; nc: L_NC, natural-statistics
    #: consistency (DRL, Φ_N); et: L_ET, edge-texture (IRL, Φ_E); img: L1 to Teacher A's output
    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "kl": 0.5, "nc": 0.01, "et": 0.03, "img": 0.0})

    def validate(self, path: str = "distill") -> None:
        super().validate(path)
        if self.brisque_scales not in (1, 2):
            raise ConfigError(f"{path}.brisque_scales: 1 or 2")
        for key in ("temperature", "piqe_temperature"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{path}.{key}: must be > 0 (it divides)")
        if self.mscn_c <= 0:
            raise ConfigError(f"{path}.mscn_c: must be > 0 (the MSCN stabiliser divides)")
        for key in ("gamma_stat", "piqe_tau"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{path}.{key}: must be >= 0, got {getattr(self, key)}")
        if self.piqe_block < 1:
            raise ConfigError(f"{path}.piqe_block: must be >= 1, got {self.piqe_block}")
        if self.affinity_pool < 1:
            raise ConfigError(f"{path}.affinity_pool: must be >= 1, got {self.affinity_pool}")
        for part in ("nc", "et"):
            known = [*_EXTRACTORS[part], AFFINITY]
            if getattr(self, f"extractor_{part}") not in known:
                raise ConfigError(f"{path}.extractor_{part}: expected {' or '.join(map(repr, known))}, "
                                  f"got {getattr(self, f'extractor_{part}')!r}")

    # ------------------------------------------------------------------ which parts run
    @property
    def uses_drl(self) -> bool:
        """DRL computes L_NC: switched on and nc > 0."""
        return self.drl and self.loss_weights["nc"] > 0

    @property
    def uses_irl(self) -> bool:
        """IRL computes L_ET: switched on and et > 0."""
        return self.irl and self.loss_weights["et"] > 0

    @property
    def teacher_a_on_degraded(self) -> bool:
        """Teacher A runs on x for DRL, L_KL or L_img."""
        w = self.loss_weights
        return self.uses_drl or w["kl"] > 0 or w["img"] > 0

    @property
    def irl_teacher(self) -> str:
        """The teacher IRL runs on the clean image: B, or A with ``teacher_b: same_as_a``."""
        return "b" if self.teacher_b == "separate" else "a"

    def teacher_roles(self) -> tuple[str, ...]:
        """Teacher A for DRL, KL, img, and for IRL with ``teacher_b: same_as_a``; Teacher B only
        for IRL (et > 0) with ``teacher_b: separate``. A term whose weight is 0 is not computed,
        so its teacher is neither needed nor loaded."""
        roles = {"a"} if self.teacher_a_on_degraded else set()
        if self.uses_irl:
            roles.add(self.irl_teacher)
        return tuple(r for r in ("a", "b") if r in roles)

    def missing_teacher(self, role: str) -> str:
        if role == "b":
            return ("SLKD with IRL on needs Teacher B (or set distill.irl: false, distill.teacher_b: "
                    "same_as_a, or distill.loss_weights.et: 0)")
        return "SLKD with DRL, KL, img or IRL via same_as_a needs Teacher A (teachers.a)"

    def drl_irl_taps(self, student: nn.Module) -> tuple[list[str], list[str]]:
        """(encoder, decoder) levels actually read: none for a part that does not run."""
        enc, dec = default_taps(student)
        enc = list(dict.fromkeys(enc if self.encoder_taps is None else self.encoder_taps))
        dec = list(dict.fromkeys(dec if self.decoder_taps is None else self.decoder_taps))
        return (enc if self.uses_drl else []), (dec if self.uses_irl else [])


def _check_teacher_b(teacher_b: nn.Module) -> None:
    if getattr(teacher_b, "global_residual", False):
        raise SlkdError(
            "Teacher B has its global input-to-output residual enabled. Teacher B is trained "
            "clean → clean, and with the residual it learns the identity through the skip, so its "
            "decoder features carry nothing to distil (docs/spec.md §2.1). Train it with "
            "model.options.global_residual: false (role teacher_b), or use distill.teacher_b: "
            "same_as_a or distill.irl: false."
        )


@register_distiller("slkd", SLKDConfig)
class SLKDDistiller(Distiller):
    """SLKD with the ablation switches of docs/spec.md §2.7, configured by :class:`SLKDConfig`.

    ``teachers`` holds the roles of ``cfg.teacher_roles()``: Teacher B only when IRL is active
    with ``teacher_b: separate``.
    """

    def __init__(self, cfg: SLKDConfig, student: nn.Module, teachers: Mapping[str, nn.Module],
                 pixel_loss: str = "l1") -> None:
        enc, dec = cfg.drl_irl_taps(student)
        if cfg.uses_drl and not enc:
            raise SlkdError("DRL needs at least one encoder tap (distill.encoder_taps)")
        if cfg.uses_irl and not dec:
            raise SlkdError("IRL needs at least one decoder tap (distill.decoder_taps)")
        if "b" in teachers:
            _check_teacher_b(teachers["b"])
        reads: dict[str, list[str]] = {role: [] for role in teachers}
        if cfg.teacher_a_on_degraded:
            reads["a"] += enc
        if cfg.uses_irl:
            reads[cfg.irl_teacher] += dec
        super().__init__(cfg, student, teachers, pixel_loss, student_taps=enc + dec, teacher_taps=reads)
        self.gamma_stat, self.temperature = float(cfg.gamma_stat), float(cfg.temperature)
        self.drl, self.irl = cfg.uses_drl, cfg.uses_irl
        self.a_on_x = cfg.teacher_a_on_degraded
        self.irl_role = cfg.irl_teacher
        self.encoder_taps, self.decoder_taps = enc, dec
        with self.closing_on_error():
            self._build_adapters(cfg)
        self.compile_losses = bool(cfg.compile_losses)
        self._nc_fn, self._et_fn = self._nc_term, self._et_term
        if self.compile_losses:
            # dynamic=False: one specialised graph per patch size (training uses one); the
            # dynamic-shape path of Inductor 2.13 fails on the block reshapes of PIQE
            self._nc_fn = torch.compile(self._nc_term, dynamic=False)
            self._et_fn = torch.compile(self._et_term, dynamic=False)

    def _build_adapters(self, cfg: SLKDConfig) -> None:
        enc, dec, w = self.encoder_taps, self.decoder_taps, self.weights
        if w["kl"] > 0 or w["img"] > 0:
            self._check_same_output("a")
        self.affinity_pool = int(cfg.affinity_pool)
        # an affinity distance compares positions with positions (HW×HW), whatever the channel
        # counts: it needs no SCM, as in FAKD
        for part, key, names, role in (("nc", "encoder", enc, "a"), ("et", "decoder", dec, self.irl_role)):
            name = getattr(cfg, f"extractor_{part}")
            if not names or name == AFFINITY:
                continue
            teacher = self.probe[role]
            self.adapters[key] = ScaleConversion(self.probe["student"].channels(names), teacher.channels(names),
                                                 standardize=cfg.scm_standardize)
            levels = level_indices_from_sizes(teacher.sizes(names), teacher.image_size)
            setattr(self, f"extractor_{part}" if part == "nc" else "extractors_et",
                    _EXTRACTORS[part][name](cfg, levels))

    def compute_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out, s_feats = self.run_student(x)
        w = self.weights
        terms = {"pix": self.pixel_term(out, y)}
        if self.a_on_x:
            a_out, a_feats = self.run_teacher("a", x, self.encoder_taps)
            if w["kl"] > 0:
                terms["kl"] = kl_loss(out, a_out, self.temperature)
            if self.drl:
                terms["nc"] = self._feature_term(self._nc_fn, [s_feats[n] for n in self.encoder_taps],
                                                 [a_feats[n] for n in self.encoder_taps])
        if self.irl:
            _, t_feats = self.run_teacher(self.irl_role, y, self.decoder_taps)
            terms["et"] = self._feature_term(self._et_fn, [s_feats[n] for n in self.decoder_taps],
                                             [t_feats[n] for n in self.decoder_taps])
        if w["img"] > 0:
            terms["img"] = image_l1(out, a_out)
        return terms

    def _nc_term(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        if "encoder" not in self.adapters:  # extractor_nc: affinity
            return fakd_loss(student, teacher, self.affinity_pool)
        s, t = self.adapters["encoder"](student, teacher)
        return nc_loss(s, t, self.extractor_nc, self.gamma_stat)

    def _et_term(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        if "decoder" not in self.adapters:  # extractor_et: affinity
            return fakd_loss(student, teacher, self.affinity_pool)
        s, t = self.adapters["decoder"](student, teacher)
        return et_loss(s, t, self.extractors_et)

    def _feature_term(self, fn, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        try:
            return self.feature_loss_fp32(fn, student, teacher)
        except Exception as exc:  # noqa: BLE001 - Dynamo/Inductor failures have many types
            if self.compile_losses and type(exc).__module__.startswith("torch._"):
                raise SlkdError(f"distill.compile_losses: torch.compile failed ({type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); on CPU "
                                "Inductor needs a working C++ compiler. Set distill.compile_losses: "
                                "false to train eagerly") from exc
            raise


# the built-in Φ_N and Φ_E (a variant registers its own the same way, e.g. benchmarks/variants.py)
register_extractor("nc", "brisque")(lambda cfg, levels: BrisqueExtractor(scales=cfg.brisque_scales, c=cfg.mscn_c))
register_extractor("nc", "identity")(lambda cfg, levels: IdentityExtractor())
register_extractor("et", "piqe")(lambda cfg, levels: nn.ModuleList(piqe_extractors(
    levels, block=cfg.piqe_block, tau=cfg.piqe_tau, temperature=cfg.piqe_temperature, c=cfg.mscn_c)))
register_extractor("et", "identity")(lambda cfg, levels: IdentityExtractor())
