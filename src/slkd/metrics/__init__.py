"""Image-quality metrics, computed as image-restoration papers report them.

Full-reference PSNR/SSIM in :mod:`.fullref`; no-reference BRISQUE/PIQE in :mod:`.noref`;
:func:`create_metric` looks any of them up by name.
"""

from slkd.metrics.conventions import TASKS, task_uses_y_channel
from slkd.metrics.fullref import (
    FULLREF_METRICS,
    MetricInputError,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
    to_uint8_levels,
)
from slkd.metrics.noref import (
    METRIC_NAMES,
    NOREF_METRICS,
    Metric,
    brisque,
    brisque_features,
    create_metric,
    piqe,
)

__all__ = [
    "TASKS",
    "task_uses_y_channel",
    "FULLREF_METRICS",
    "METRIC_NAMES",
    "Metric",
    "MetricInputError",
    "NOREF_METRICS",
    "brisque",
    "brisque_features",
    "create_metric",
    "piqe",
    "psnr",
    "quantize",
    "rgb_to_y",
    "ssim",
    "to_uint8_levels",
]
