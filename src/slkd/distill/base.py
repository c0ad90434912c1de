"""The :class:`Distiller` base class shared by SLKD and the baselines (docs/spec.md §2–3).

A distiller is the trainer's *task* and its *trainable module* at once:

* ``student`` and the adapters (``adapters``, e.g. the SCMs) are registered submodules, so
  they are what ``parameters()``, ``state_dict()``, the optimiser, the checkpoint and
  DistributedDataParallel see;
* the frozen teachers are held in a plain dict, **not** registered: they never appear in
  ``parameters()`` / ``state_dict()`` / DDP, yet :meth:`_apply` moves and casts them with the
  distiller (``.to(device)``, ``.double()``), and :meth:`train` keeps them in ``eval()``;
* ``forward(batch) -> (loss, terms)`` computes the whole objective: the method's terms
  (:meth:`compute_terms`) weighted by its config's ``loss_weights``
  (:func:`~slkd.distill.losses.total_loss`), so that ``loss(network, batch)`` is just
  ``network(batch)`` and DDP sees the forward pass; in a loop of your own,
  ``distiller(degraded, clean)`` does the same;
* what the trainer asks of it is ``model`` (the student: evaluated and exported),
  ``trainable_module()`` (this module) and ``loss(network, batch)``.

Features are read with forward hooks created once, at construction, on the student and on each
teacher (a wrong module name fails there), and a probe forward on a zero image at construction
gives the channel counts and spatial sizes the adapters and extractors are built from.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from slkd.distill.config import DistillerConfig
from slkd.distill.losses import total_loss
from slkd.distill.probe import ProbeResult, RecordingTaps, probe
from slkd.distill.scm import teacher_constant
from slkd.errors import SlkdError
from slkd.losses import check_pixel_loss, pixel_loss

__all__ = ["Distiller", "ProbeResult", "RecordingTaps", "batch_pair"]


def _full_precision(t: Tensor) -> Tensor:
    """bfloat16 / float16 → float32; float32 and float64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def batch_pair(batch: Mapping[str, Tensor] | Tensor, clean: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(degraded, clean) from the trainer's ``{"lq": …, "gt": …}`` or from two tensors."""
    if isinstance(batch, Tensor):
        if clean is None:
            raise SlkdError("distiller(degraded, clean) needs the clean images as well")
        return batch, clean
    missing = [k for k in ("lq", "gt") if k not in batch]
    if missing:
        raise SlkdError(f"a distillation batch needs 'lq' and 'gt' tensors; missing {', '.join(missing)}")
    return batch["lq"], batch["gt"]


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


class Distiller(nn.Module):
    """Student + adapters (trained) and frozen teachers (held, not registered).

    Args:
        cfg: the method's config (:class:`~slkd.distill.DistillerConfig`), kept as ``self.cfg``;
            its ``loss_weights`` weigh the terms. A term whose weight is 0 is reported but not
            added (so a NaN there cannot leak into the total).
        student: the network being trained; exported alone (``distiller.student``).
        teachers: role → frozen teacher (``"a"``, ``"b"``); ``None`` entries are dropped. Each is
            put in ``eval()`` and ``requires_grad_(False)``.
        pixel_loss: L_pix between the student's output and the clean image: ``l1``, ``mse`` or
            ``charbonnier`` (``train.loss``; :func:`slkd.losses.pixel_loss`).
        student_taps: module names of the student whose outputs the method reads.
        teacher_taps: role → module names of that teacher the method reads.

    A registered method is built as ``cls(cfg, student, teachers, pixel_loss)``. Subclasses
    build their adapters into ``self.adapters`` (an ``nn.ModuleDict``) from ``self.probe`` and
    implement :meth:`compute_terms`.
    """

    #: name under which the method is registered (set by :func:`slkd.distill.register_distiller`)
    method: str = ""

    def __init__(
        self,
        cfg: DistillerConfig,
        student: nn.Module,
        teachers: Mapping[str, nn.Module | None],
        pixel_loss: str = "l1",
        *,
        student_taps: Sequence[str] = (),
        teacher_taps: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.pixel_loss = check_pixel_loss(pixel_loss)
        self.student = student
        self.adapters = nn.ModuleDict()
        self.weights = {str(k): float(v) for k, v in cfg.loss_weights.items()}
        held = {role: t for role, t in teachers.items() if t is not None}
        for role, teacher in held.items():
            if teacher is student:
                raise SlkdError(f"Teacher {role.upper()} is the student itself; pass separate networks")
            teacher.requires_grad_(False)
            teacher.eval()
        # A plain dict: nn.Module.__setattr__ registers only modules, parameters and buffers,
        # so the teachers stay out of parameters(), state_dict() and DDP.
        self._teachers: dict[str, nn.Module] = held
        teacher_taps = dict(teacher_taps or {})
        unknown = sorted(set(teacher_taps) - set(held))
        if any(teacher_taps[r] for r in unknown):
            raise SlkdError(f"taps requested on teacher(s) {', '.join(unknown)} that were not given")
        self._student_taps: RecordingTaps | None = None
        self._teacher_taps: dict[str, RecordingTaps | None] = {}
        with self.closing_on_error():
            student_names = _unique(student_taps)
            self._student_taps = RecordingTaps(student, student_names) if student_names else None
            for role, teacher in held.items():
                names = _unique(teacher_taps.get(role, ()))
                self._teacher_taps[role] = RecordingTaps(teacher, names) if names else None
            #: role ("student", "a", "b") → shapes seen in the probe forward (empty without teachers)
            self.probe: dict[str, ProbeResult] = probe(
                {"student": (student, self._student_taps),
                 **{role: (t, self._teacher_taps[role]) for role, t in held.items()}}) if held else {}

    # ------------------------------------------------------------------ what the trainer asks
    @property
    def model(self) -> nn.Module:
        """The network that is evaluated and exported: the student."""
        return self.student

    def trainable_module(self) -> nn.Module:
        """The module the trainer optimises, checkpoints and wraps in DDP: student + adapters."""
        return self

    def loss(self, network: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``network`` is this module or its DDP wrapper."""
        return network(batch)

    # ------------------------------------------------------------------ teachers and modes
    def _distinct_teachers(self) -> list[nn.Module]:
        seen: dict[int, nn.Module] = {}
        for teacher in self._teachers.values():
            seen.setdefault(id(teacher), teacher)
        return list(seen.values())

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()``, ``.double()`` … reach the unregistered teachers as well."""
        super()._apply(fn, recurse)
        if recurse:
            for teacher in self._distinct_teachers():
                teacher._apply(fn)
        return self

    def train(self, mode: bool = True) -> "Distiller":
        """Student and adapters follow ``mode``; teachers always stay in ``eval()``."""
        super().train(mode)
        for teacher in self._distinct_teachers():
            teacher.eval()
        return self

    def close(self) -> None:
        """Remove every forward hook this distiller put on the student and the teachers."""
        for taps in [self._student_taps, *self._teacher_taps.values()]:
            if taps is not None:
                taps.remove()
        self._student_taps = None
        self._teacher_taps = {role: None for role in self._teacher_taps}

    @contextmanager
    def closing_on_error(self) -> Iterator[None]:
        """Set-up code inside this block removes the hooks again if it raises, so a failed
        construction leaves the caller's student and teachers as they were."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def adapter_parameter_count(self) -> int:
        """Parameters trained with the student but not exported (the SCMs / regressors)."""
        return sum(p.numel() for p in self.adapters.parameters())

    def extra_repr(self) -> str:
        held = ", ".join(f"{role}={type(t).__name__}" for role, t in self._teachers.items())
        weights = ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
        return (f"method={self.method!r}, teachers(frozen, not registered)=[{held}], weights=[{weights}], "
                f"pixel_loss={self.pixel_loss!r}")

    # ------------------------------------------------------------------ forward passes
    def _check_same_output(self, role: str) -> None:
        """Output-level terms (KL, L1 to the teacher) need equal output shapes."""
        s, t = self.probe["student"].output_shape, self.probe[role].output_shape
        if s != t:
            raise SlkdError(f"the student outputs {s} but Teacher {role.upper()} outputs {t} on the "
                            "same image; output-level distillation needs equal shapes")

    def run_student(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Student output on ``x`` and its tapped features (with autograd history)."""
        taps = self._student_taps
        if taps is None:
            return self.student(x), {}
        with taps.recording():
            out = self.student(x)
        feats = {n: taps[n] for n in taps.names}
        taps.clear()
        return out, feats

    def run_teacher(self, role: str, x: Tensor, names: Sequence[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher ``role`` on ``x`` under ``inference_mode``: its output and the features
        ``names``, all as ordinary constants (:func:`teacher_constant`)."""
        teacher = self._teachers[role]
        taps = self._teacher_taps.get(role)
        # a compiled step traces no_grad (inference mode is opaque to the compiler): the same values
        frozen = torch.no_grad() if torch.compiler.is_compiling() else torch.inference_mode()
        with frozen, (taps.recording() if taps else nullcontext()):
            out = teacher(x)
        feats = {n: teacher_constant(taps[n]) for n in names} if names else {}
        if taps:
            taps.clear()
        return teacher_constant(out), feats

    # ------------------------------------------------------------------ the objective
    def compute_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Loss terms by short name (``pix``, ``kl``, ``nc``, ``et``, ``img``, ``feature``)."""
        raise NotImplementedError

    def pixel_term(self, out: Tensor, y: Tensor) -> Tensor:
        return pixel_loss(self.pixel_loss, out, y.detach())

    @staticmethod
    def feature_loss_fp32(fn, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        """``fn(student, teacher)`` in float32 (or the features' own wider type) with autocast off.

        Under ``train.bf16`` the tapped features come out of autocast's convolutions and
        matmuls in bfloat16; the adapters and the feature losses (MSCN variances, moment
        ratios, block statistics) are computed in float32 from them, as mixed precision keeps
        losses in full precision. Without autocast the features are float32 already and this is
        a plain call."""
        s = [_full_precision(f) for f in student]
        t = [_full_precision(f) for f in teacher]
        if not torch.is_autocast_enabled(s[0].device.type):
            return fn(s, t)
        with torch.autocast(s[0].device.type, enabled=False):
            return fn(s, t)

    def forward(self, batch: Mapping[str, Tensor] | Tensor,
                clean: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``distiller(batch)`` with ``batch["lq"]`` degraded and ``batch["gt"]`` clean images
        (the trainer's form), or ``distiller(degraded, clean)``; N×C×H×W.

        Returns the weighted total and the detached terms as ``loss_<name>``.
        """
        terms = self.compute_terms(*batch_pair(batch, clean))
        return total_loss(terms, self.weights), {f"loss_{name}": value.detach() for name, value in terms.items()}
