"""Every image-quality metric by name: :func:`create_metric` (``psnr``, ``ssim``, ``brisque``,
``piqe``), each with the direction that is good and whether it needs a reference image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from slkd.metrics.brisque_metric import brisque
from slkd.metrics.fullref import MetricInputError, psnr, ssim
from slkd.metrics.piqe_metric import piqe

__all__ = ["METRIC_NAMES", "NOREF_METRICS", "Metric", "create_metric"]

MetricFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Metric:
    """A metric by name: call it like the function it wraps.

    ``lower_better`` says which direction is good; ``needs_reference`` whether it takes
    ``(img, ref)`` (PSNR, SSIM) or only ``img`` (BRISQUE, PIQE).
    """

    name: str
    fn: MetricFn
    lower_better: bool
    needs_reference: bool

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.fn(*args, **kwargs)


#: No-reference metrics by name, all with the signature of :func:`brisque`.
NOREF_METRICS: dict[str, MetricFn] = {"brisque": brisque, "piqe": piqe}

_REGISTRY: dict[str, Metric] = {
    "psnr": Metric("psnr", psnr, lower_better=False, needs_reference=True),
    "ssim": Metric("ssim", ssim, lower_better=False, needs_reference=True),
    "brisque": Metric("brisque", brisque, lower_better=True, needs_reference=False),
    "piqe": Metric("piqe", piqe, lower_better=True, needs_reference=False),
}

#: Names accepted by :func:`create_metric`.
METRIC_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def create_metric(name: str) -> Metric:
    """The metric called ``name`` (case-insensitive): one of ``psnr``, ``ssim``, ``brisque``,
    ``piqe``. Raises :class:`MetricInputError` (a ``ValueError``) for an unknown name."""
    if not isinstance(name, str):
        raise MetricInputError(f"metric name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise MetricInputError(
            f"unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}"
        )
    return _REGISTRY[key]
