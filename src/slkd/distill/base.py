"""The :class:`Distiller` base class shared by SLKD and the baselines (docs/spec.md §2–3).

A distiller is the trainer's *task* and its *trainable module* at once:

* ``student`` and the adapters (``adapters``, e.g. the SCMs) are registered submodules, so
  they are what ``parameters()``, ``state_dict()``, the optimiser, the checkpoint and
  DistributedDataParallel see;
* the frozen teachers are held in a plain dict, **not** registered: they never appear in
  ``parameters()`` / ``state_dict()`` / DDP, yet :meth:`_apply` moves and casts them with the
  distiller (``.to(device)``, ``.double()``), and :meth:`train` keeps them in ``eval()``;
* ``forward(batch) -> (loss, terms)`` computes the whole objective, so that
  ``loss(network, batch)`` is just ``network(batch)`` and DDP sees the forward pass; in a
  loop of your own, ``distiller(degraded, clean)`` does the same;
* ``progress`` is the fraction of training done before the current step (0 at the first, set
  by the trainer before every step through :meth:`set_progress`, so it is right after
  ``--resume``): what a schedule over training reads.

Features are read with forward hooks created once, at construction, on the student and on each
teacher (a wrong module name fails there), and a probe forward on a zero image at construction
gives the channel counts and spatial sizes the adapters and extractors are built from.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from slkd.distill.scm import teacher_constant
from slkd.errors import SlkdError
from slkd.losses import check_pixel_loss, pixel_loss
from slkd.models.protocol import input_channels, size_multiple
from slkd.models.taps import FeatureTaps

__all__ = ["Distiller", "ProbeResult", "RecordingTaps"]

#: side of the zero image used to probe channel counts and feature sizes (rounded up to the
#: models' ``size_multiple``)
PROBE_SIZE = 32


def _full_precision(t: Tensor) -> Tensor:
    """bfloat16 / float16 → float32; float32 and float64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class RecordingTaps(FeatureTaps):
    """:class:`FeatureTaps` that record only inside :meth:`recording`.

    The student is also the exported / evaluated network (and the EMA copy deep-copies its
    hooks); gating keeps validation and inference from filling the tap dict with features
    nobody reads.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.active = False
        super().__init__(model, names)

    def _recorder(self, name: str):
        record = super()._recorder(name)

        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self.active:
                record(module, inputs, output)

        return hook

    @contextmanager
    def recording(self) -> Iterator["RecordingTaps"]:
        self.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = False


@dataclass(frozen=True)
class ProbeResult:
    """Shapes seen in the probe forward of one model: its output and each tapped feature."""

    image_size: tuple[int, int]
    output_shape: tuple[int, ...]
    feature_shapes: dict[str, tuple[int, ...]]

    def channels(self, names: Sequence[str]) -> list[int]:
        return [self.feature_shapes[n][1] for n in names]

    def sizes(self, names: Sequence[str]) -> list[tuple[int, int]]:
        return [tuple(self.feature_shapes[n][-2:]) for n in names]


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _first_tensor(model: nn.Module) -> Tensor | None:
    for t in model.parameters():
        return t
    for t in model.buffers():
        return t
    return None


class Distiller(nn.Module):
    """Student + adapters (trained) and frozen teachers (held, not registered).

    Args:
        student: the network being trained; exported alone (:meth:`student_state_dict`).
        teachers: role → frozen teacher (``"a"``, ``"b"``); ``None`` entries are dropped. Each is
            put in ``eval()`` and ``requires_grad_(False)``.
        weights: term name (without the ``loss_`` prefix) → weight of the total. A term whose
            weight is 0 is reported but not added (so a NaN there cannot leak into the total).
        student_taps: module names of the student whose outputs the method reads.
        teacher_taps: role → module names of that teacher the method reads.

    Subclasses build their adapters into ``self.adapters`` (an ``nn.ModuleDict``) from
    ``self.probe`` and implement :meth:`compute_terms`.
    """

    #: name under which the method is registered (set by :func:`slkd.distill.register_distiller`)
    method: str = ""
    #: L_pix between the student's output and the clean image: "l1", "mse" or "charbonnier"
    #: (``train.loss``; :func:`slkd.losses.pixel_loss`, as for the teachers' training)
    pixel_loss: str = "l1"
    #: fraction of the training done before the current step, in [0, 1] (:meth:`set_progress`)
    progress: float = 0.0
    #: the method's config, when built by :func:`slkd.distill.build_distiller` (its
    #: ``teacher_factor`` schedules the teacher terms)
    config = None

    def __init__(
        self,
        student: nn.Module,
        teachers: Mapping[str, nn.Module | None],
        weights: Mapping[str, float],
        *,
        student_taps: Sequence[str] = (),
        teacher_taps: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleDict()
        self.weights = {str(k): float(v) for k, v in weights.items()}
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
            self.probe: dict[str, ProbeResult] = self._probe() if held else {}

    # ------------------------------------------------------------------ teachers and modes
    @property
    def teachers(self) -> dict[str, nn.Module]:
        """Role → frozen teacher (a copy of the dict; the modules themselves)."""
        return dict(self._teachers)

    @property
    def model(self) -> nn.Module:
        """The network that is evaluated and exported: the student."""
        return self.student

    def trainable_module(self) -> nn.Module:
        """The module the trainer optimises, checkpoints and wraps in DDP: student + adapters."""
        return self

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

    # ------------------------------------------------------------------ reporting / export
    def adapter_parameter_count(self) -> int:
        """Parameters trained with the student but not exported (the SCMs / regressors)."""
        return sum(p.numel() for p in self.adapters.parameters())

    def student_state_dict(self) -> dict[str, Tensor]:
        """The deployable student's weights, without adapters (keys as ``student.state_dict()``)."""
        return self.student.state_dict()

    def extra_repr(self) -> str:
        held = ", ".join(f"{role}={type(t).__name__}" for role, t in self._teachers.items())
        weights = ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
        return (f"method={self.method!r}, teachers(frozen, not registered)=[{held}], weights=[{weights}], "
                f"pixel_loss={self.pixel_loss!r}")

    # ------------------------------------------------------------------ forward passes
    def _probe(self) -> dict[str, ProbeResult]:
        """One forward of a zero image through the student and each teacher, with their taps."""
        models = {"student": (self.student, self._student_taps)}
        models.update({role: (t, self._teacher_taps[role]) for role, t in self._teachers.items()})
        multiple = 1
        for model, _ in models.values():
            multiple = math.lcm(multiple, size_multiple(model))
        size = multiple * math.ceil(PROBE_SIZE / multiple)
        channels = input_channels(self.student)
        results = {}
        for role, (model, taps) in models.items():
            who = "the student" if role == "student" else f"Teacher {role.upper()}"
            wanted = input_channels(model, channels)
            if wanted != channels:
                raise SlkdError(
                    f"{who} takes {wanted}-channel images but the student takes {channels}; "
                    "distillation feeds them the same images"
                )
            ref = _first_tensor(model)
            x = torch.zeros(1, channels, size, size, device=ref.device if ref is not None else None,
                            dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
            was_training = model.training
            model.eval()  # no batch-norm statistics may see the probe
            try:
                with torch.inference_mode(), (taps.recording() if taps else nullcontext()):
                    out = model(x)
                    shapes = {n: tuple(taps.features[n].shape) for n in taps.names
                              if n in taps.features} if taps else {}
            except Exception as exc:  # noqa: BLE001 - report which network failed, and why
                raise SlkdError(f"probe forward of {who} on a {channels}×{size}×{size} zero image "
                                f"failed: {exc}") from exc
            finally:
                model.train(was_training and role == "student")
                if taps:
                    taps.clear()
            if taps:
                silent = [n for n in taps.names if n not in shapes]
                if silent:
                    raise SlkdError(f"{who}: tapped module(s) {', '.join(silent)} did not run in a forward pass")
                flat = [n for n, s in shapes.items() if len(s) != 4]
                if flat:
                    raise SlkdError(f"{who}: tapped module(s) {', '.join(flat)} do not output B×C×H×W maps")
            results[role] = ProbeResult((size, size), tuple(out.shape), shapes)
        return results

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

    def set_pixel_loss(self, name: str) -> None:
        """Use ``name`` (l1, mse, charbonnier) for L_pix; an unknown name fails here."""
        self.pixel_loss = check_pixel_loss(name)

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by the trainer before every step: ``step`` steps of ``total_steps`` are done.
        Sets :attr:`progress` = step / total_steps (clamped to [0, 1]) for schedules."""
        self.progress = min(1.0, max(0.0, step / total_steps)) if total_steps > 0 else 1.0

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

    def teacher_factor(self) -> float:
        """Multiplier of every term but ``pix`` now (the config's ``teacher_decay`` schedule)."""
        return 1.0 if self.config is None else self.config.teacher_factor(self.progress)

    def scheduled_weights(self) -> dict[str, float]:
        """The loss weights at the current progress: ``pix`` as configured, the teacher terms
        times :meth:`teacher_factor`."""
        factor = self.teacher_factor()
        return {k: (v if k == "pix" else v * factor) for k, v in self.weights.items()}

    def combine(self, terms: Mapping[str, Tensor]) -> Tensor:
        """Σ weight·term over the terms with a non-zero weight (weights as scheduled)."""
        weights = self.scheduled_weights()
        total = None
        for name, value in terms.items():
            w = weights.get(name, 0.0)
            if w == 0:
                continue
            total = w * value if total is None else total + w * value
        if total is None:
            raise SlkdError(f"{self.method}: no loss term has a positive weight ({self.weights})")
        return total

    def forward(self, batch: Mapping[str, Tensor] | Tensor,
                clean: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``distiller(batch)`` with ``batch["lq"]`` degraded and ``batch["gt"]`` clean images
        (the trainer's form), or ``distiller(degraded, clean)``; N×C×H×W.

        Returns the weighted total and the detached terms as ``loss_<name>``.
        """
        if isinstance(batch, Tensor):
            if clean is None:
                raise SlkdError("distiller(degraded, clean) needs the clean images as well")
            degraded = batch
        else:
            missing = [k for k in ("lq", "gt") if k not in batch]
            if missing:
                raise SlkdError(f"a distillation batch needs 'lq' and 'gt' tensors; missing {', '.join(missing)}")
            degraded, clean = batch["lq"], batch["gt"]
        if self.teacher_factor() == 0.0:
            # the teacher terms are switched off: no teacher forward, no feature term; the
            # adapters join the graph with a zero gradient (DDP needs every parameter used)
            out, _ = self.run_student(degraded)
            terms = {"pix": self.pixel_term(out, clean)}
            total = self.weights.get("pix", 1.0) * terms["pix"]
            for p in self.adapters.parameters():
                total = total + 0.0 * p.sum()
        else:
            terms = self.compute_terms(degraded, clean)
            total = self.combine(terms)
        return total, {f"loss_{name}": value.detach() for name, value in terms.items()}

    def loss(self, network: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The trainer's interface: ``network`` is this module or its DDP wrapper."""
        return network(batch)
