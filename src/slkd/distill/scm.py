"""Scale Conversion Module (docs/spec.md §2.3) and the handling of teacher tensors.

Every tapped level gets one adapter that maps the student's feature into the teacher's
feature space:

1. a 1×1 convolution C_S → C_T                                   [paper: "SCM maps student
   features into the teacher's feature space"; the 1×1 conv is spec]
2. a bilinear resize to the teacher's H×W when the sizes differ   [spec]
   (``align_corners=False``; a 1×1 conv and a bilinear resize commute, so the order is free)
3. per-channel standardisation of BOTH sides over H×W: zero mean, unit variance, ``eps`` 1e-5
   inside the square root, no affine parameters                  [spec, ``standardize=True``]

Teacher tensors. Teachers run under ``torch.inference_mode()`` (METHOD §2.1), so their taps
are *inference tensors*: autograd refuses to save them for backward, e.g. ``student * teacher``
raises as soon as the student requires grad. :func:`teacher_constant` turns any teacher tensor
into an ordinary constant: it detaches it (so no gradient can ever reach a teacher, even one
run with grad enabled by mistake) and, if it is an inference tensor, clones it with inference
mode switched off (``with torch.inference_mode(False): t.clone()``), which yields a normal
tensor even when called from inside an ``inference_mode`` block. Every teacher input of this
package goes through it; the clone is only paid for inference tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slkd.errors import SlkdError

__all__ = ["ScaleConversion", "standardize_channels", "teacher_constant"]


def teacher_constant(t: Tensor) -> Tensor:
    """``t`` as a constant usable in autograd-tracked maths: detached, never an inference tensor."""
    t = t.detach()
    if torch.compiler.is_compiling():  # compiled steps run the teachers under no_grad: no inference tensors
        return t
    if t.is_inference():
        with torch.inference_mode(False):
            t = t.clone()
    return t


def standardize_channels(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Per image and channel, subtract the mean and divide by ``sqrt(var + eps)`` over H×W.

    The variance is the population variance (divide by H·W), as in instance normalisation.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a B×C×H×W tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] * x.shape[-1] > 1:
        # the same maths as below in one native kernel, forward and backward (faster on CPU)
        return F.instance_norm(x, eps=eps)
    mean = x.mean(dim=(-2, -1), keepdim=True)  # a 1×1 map (instance_norm refuses it): all zeros
    centred = x - mean
    var = centred.pow(2).mean(dim=(-2, -1), keepdim=True)
    return centred / torch.sqrt(var + eps)


class ScaleConversion(nn.Module):
    """One 1×1 conv adapter per tapped level (docs/spec.md §2.3).

    Args:
        student_channels: C_S of each tapped level, in tap order.
        teacher_channels: C_T of each tapped level, same order and length.
        standardize: per-channel standardisation of both sides over H×W [spec, default True].
        eps: added to the variance before the square root [spec, 1e-5].
        bias: whether the 1×1 convs have a bias [spec, True; it is cancelled by standardisation
            and only matters with ``standardize=False``].
        mode: interpolation used when spatial sizes differ [spec, "bilinear"].

    The adapters train with the student and are not part of the deployable student
    (:meth:`slkd.distill.Distiller.adapter_parameter_count` reports their size separately).
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        standardize: bool = True,
        eps: float = 1e-5,
        bias: bool = True,
        mode: str = "bilinear",
    ) -> None:
        super().__init__()
        student_channels = [int(c) for c in student_channels]
        teacher_channels = [int(c) for c in teacher_channels]
        if len(student_channels) != len(teacher_channels):
            raise SlkdError(
                f"student and teacher tap lists differ in length: {len(student_channels)} "
                f"student levels ({student_channels}) vs {len(teacher_channels)} teacher levels "
                f"({teacher_channels})"
            )
        if not student_channels:
            raise SlkdError("ScaleConversion needs at least one tapped level")
        if any(c < 1 for c in student_channels + teacher_channels):
            raise SlkdError(f"channel counts must be >= 1: {student_channels}, {teacher_channels}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.standardize = bool(standardize)
        self.eps = float(eps)
        self.mode = mode
        self.convs = nn.ModuleList(
            nn.Conv2d(cs, ct, kernel_size=1, bias=bias)
            for cs, ct in zip(student_channels, teacher_channels)
        )

    def __len__(self) -> int:
        return len(self.convs)

    def convert_level(self, index: int, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
        """Convert level ``index``: returns (converted student, processed teacher constant)."""
        if student.dim() != 4 or teacher.dim() != 4:
            raise SlkdError(
                f"level {index}: expected B×C×H×W features, got student {tuple(student.shape)} "
                f"and teacher {tuple(teacher.shape)}"
            )
        cs, ct = self.student_channels[index], self.teacher_channels[index]
        if student.shape[1] != cs or teacher.shape[1] != ct:
            raise SlkdError(
                f"level {index}: adapter maps {cs} → {ct} channels, but the student feature has "
                f"{student.shape[1]} and the teacher feature {teacher.shape[1]}"
            )
        if student.shape[0] != teacher.shape[0]:
            raise SlkdError(
                f"level {index}: batch sizes differ (student {student.shape[0]}, "
                f"teacher {teacher.shape[0]})"
            )
        teacher = teacher_constant(teacher)
        s = self.convs[index](student)
        if s.shape[-2:] != teacher.shape[-2:]:
            kwargs = {"align_corners": False} if self.mode in ("bilinear", "bicubic") else {}
            s = F.interpolate(s, size=tuple(teacher.shape[-2:]), mode=self.mode, **kwargs)
        if self.standardize:
            s = standardize_channels(s, self.eps)
            teacher = standardize_channels(teacher, self.eps)
        return s, teacher

    def forward(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Returns (converted student features, processed teacher features), one per level.

        Teacher features may be inference tensors or require grad; the processed teacher
        features are constants (see :func:`teacher_constant`).
        """
        if len(student_feats) != len(self.convs) or len(teacher_feats) != len(self.convs):
            raise SlkdError(
                f"ScaleConversion has {len(self.convs)} levels but got {len(student_feats)} "
                f"student and {len(teacher_feats)} teacher features"
            )
        pairs = [self.convert_level(i, s, t) for i, (s, t) in enumerate(zip(student_feats, teacher_feats))]
        return [p[0] for p in pairs], [p[1] for p in pairs]
