"""SLKD (METHOD.md §2): dual teachers, one student, DRL and IRL run simultaneously.

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

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from slkd.distill.base import Distiller
from slkd.distill.extractors import (
    BrisqueExtractor,
    IdentityExtractor,
    level_indices_from_sizes,
    piqe_extractors,
)
from slkd.distill.losses import SLKDLossWeights, et_loss, image_l1, kl_loss, nc_loss, total_loss
from slkd.distill.scm import ScaleConversion
from slkd.engine.config import slkd_teachers
from slkd.errors import SlkdError

__all__ = ["SLKDDistiller"]


class SLKDDistiller(Distiller):
    """SLKD with the ablation switches of METHOD.md §2.7.

    Args:
        student, teacher_a, teacher_b: networks; ``teacher_b`` is only needed (and only held)
            when IRL is active with ``teacher_b="separate"``.
        weights: pix, kl, nc, et, img.
        drl, irl, extractor_nc ("brisque"/"identity"), extractor_et ("piqe"/"identity"),
        teacher_b_mode ("separate"/"same_as_a"), encoder_taps, decoder_taps, gamma_stat,
        temperature, scm_standardize, brisque_scales, mscn_c, piqe_block, piqe_tau,
        piqe_temperature: see :class:`slkd.engine.config.DistillConfig`.
        compile_losses: run the feature terms (SCMs, extractors, L_NC, L_ET) through
            ``torch.compile`` (Inductor, one graph per input shape); student and teachers stay
            eager. The same numbers to float rounding; with the allocator tuned as ``slkd``
            tunes it, the step is 1.13× faster on CPU at the tiny pair and 1.03× at the paper's
            pair (BENCHMARKS.md §8); the first step pays the compilation (50–100 s on 2 cores).
    """

    method = "slkd"

    def __init__(
        self,
        student: nn.Module,
        teacher_a: nn.Module | None,
        teacher_b: nn.Module | None,
        weights: Mapping[str, float],
        *,
        drl: bool = True,
        irl: bool = True,
        extractor_nc: str = "brisque",
        extractor_et: str = "piqe",
        teacher_b_mode: str = "separate",
        encoder_taps: Sequence[str] = (),
        decoder_taps: Sequence[str] = (),
        gamma_stat: float = 1.0,
        temperature: float = 1.0,
        scm_standardize: bool = True,
        brisque_scales: int = 1,
        mscn_c: float = 1e-2,
        piqe_block: int = 8,
        piqe_tau: float = 0.1,
        piqe_temperature: float = 0.02,
        compile_losses: bool = False,
    ) -> None:
        if extractor_nc not in ("brisque", "identity"):
            raise SlkdError(f"extractor_nc must be 'brisque' or 'identity', got {extractor_nc!r}")
        if extractor_et not in ("piqe", "identity"):
            raise SlkdError(f"extractor_et must be 'piqe' or 'identity', got {extractor_et!r}")
        if teacher_b_mode not in ("separate", "same_as_a"):
            raise SlkdError(f"teacher_b must be 'separate' or 'same_as_a', got {teacher_b_mode!r}")
        w = {k: float(weights[k]) for k in ("pix", "kl", "nc", "et", "img")}
        loss_weights = SLKDLossWeights(
            lambda_kl=w["kl"], lambda_nc=w["nc"], lambda_et=w["et"], lambda_img=w["img"],
            lambda_pix=w["pix"], gamma_stat=gamma_stat, temperature=temperature,
        )
        use_drl = bool(drl) and w["nc"] > 0
        use_irl = bool(irl) and w["et"] > 0
        irl_role = "b" if teacher_b_mode == "separate" else "a"
        a_on_x = use_drl or w["kl"] > 0 or w["img"] > 0
        # the same rule as the config check and `slkd distill` (DistillConfig.uses_teacher_*)
        needs_a, needs_b = slkd_teachers(drl, irl, teacher_b_mode, w["nc"], w["et"], w["kl"], w["img"])
        enc = list(dict.fromkeys(encoder_taps)) if use_drl else []
        dec = list(dict.fromkeys(decoder_taps)) if use_irl else []
        if use_drl and not enc:
            raise SlkdError("DRL needs at least one encoder tap (distill.encoder_taps)")
        if use_irl and not dec:
            raise SlkdError("IRL needs at least one decoder tap (distill.decoder_taps)")
        if needs_a and teacher_a is None:
            raise SlkdError("SLKD with DRL, KL, img or IRL via same_as_a needs Teacher A")
        if needs_b and teacher_b is None:
            raise SlkdError("SLKD with IRL on needs Teacher B (or set distill.irl: false, or "
                            "distill.teacher_b: same_as_a)")
        super().__init__(
            student,
            {"a": teacher_a if needs_a else None, "b": teacher_b if needs_b else None},
            w,
            student_taps=enc + dec,
            teacher_taps={"a": (enc if a_on_x else []) + (dec if irl_role == "a" else []),
                          "b": dec if needs_b else []},
        )
        self.loss_weights = loss_weights
        self.drl, self.irl = use_drl, use_irl
        self.a_on_x = a_on_x
        self.irl_role = irl_role
        self.encoder_taps, self.decoder_taps = enc, dec
        with self.closing_on_error():
            self._build_adapters(extractor_nc, extractor_et, scm_standardize, brisque_scales, mscn_c,
                                 piqe_block, piqe_tau, piqe_temperature)
        self.compile_losses = bool(compile_losses)
        self._nc_fn, self._et_fn = self._nc_term, self._et_term
        if self.compile_losses:
            # dynamic=False: one specialised graph per patch size (training uses one); the
            # dynamic-shape path of Inductor 2.13 fails on the block reshapes of PIQE
            self._nc_fn = torch.compile(self._nc_term, dynamic=False)
            self._et_fn = torch.compile(self._et_term, dynamic=False)

    def _build_adapters(self, extractor_nc, extractor_et, scm_standardize, brisque_scales, mscn_c,
                        piqe_block, piqe_tau, piqe_temperature) -> None:
        enc, dec, w, irl_role = self.encoder_taps, self.decoder_taps, self.weights, self.irl_role
        if w["kl"] > 0 or w["img"] > 0:
            self._check_same_output("a")
        if self.drl:
            self.adapters["encoder"] = ScaleConversion(
                self.probe["student"].channels(enc), self.probe["a"].channels(enc),
                standardize=scm_standardize,
            )
            self.extractor_nc = (BrisqueExtractor(scales=brisque_scales, c=mscn_c)
                                 if extractor_nc == "brisque" else IdentityExtractor())
        if self.irl:
            teacher_probe = self.probe[irl_role]
            self.adapters["decoder"] = ScaleConversion(
                self.probe["student"].channels(dec), teacher_probe.channels(dec),
                standardize=scm_standardize,
            )
            if extractor_et == "piqe":
                levels = level_indices_from_sizes(teacher_probe.sizes(dec), teacher_probe.image_size)
                self.extractors_et = nn.ModuleList(piqe_extractors(
                    levels, block=piqe_block, tau=piqe_tau, temperature=piqe_temperature, c=mscn_c))
            else:
                self.extractors_et = IdentityExtractor()

    def compute_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        out, s_feats = self.run_student(x)
        w = self.weights
        terms = {"pix": self.pixel_term(out, y)}
        if self.a_on_x:
            a_out, a_feats = self.run_teacher("a", x, self.encoder_taps)
            if w["kl"] > 0:
                terms["kl"] = kl_loss(out, a_out, self.loss_weights.temperature)
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
        s, t = self.adapters["encoder"](student, teacher)
        return nc_loss(s, t, self.extractor_nc, self.loss_weights.gamma_stat)

    def _et_term(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
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

    def combine(self, terms: Mapping[str, Tensor]) -> Tensor:
        return total_loss(terms, self.loss_weights)
