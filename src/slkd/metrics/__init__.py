"""Image-quality metrics, computed as image-restoration papers report them.

Full-reference PSNR/SSIM in :mod:`.fullref`; no-reference BRISQUE in :mod:`.brisque_metric` and PIQE in
:mod:`.piqe_metric`, on the MATLAB-exact helpers of :mod:`.matlab`; :func:`create_metric` (in
:mod:`.registry`) looks any of them up by name; :mod:`.conventions` says which convention each
task is reported with.
"""

from slkd.metrics.brisque_metric import brisque, brisque_features
from slkd.metrics.conventions import BENCHMARK_TASKS, TASKS, task_uses_y_channel
from slkd.metrics.fullref import (
    FULLREF_METRICS,
    MetricInputError,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
    to_uint8_levels,
)
from slkd.metrics.piqe_metric import piqe
from slkd.metrics.registry import METRIC_NAMES, NOREF_METRICS, Metric, create_metric

__all__ = [
    "BENCHMARK_TASKS",
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
