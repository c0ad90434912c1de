"""Image-quality metrics, computed as image-restoration papers report them (see :mod:`.fullref`)."""

from slkd.metrics.fullref import (
    FULLREF_METRICS,
    MetricInputError,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
    to_uint8_levels,
)

__all__ = [
    "FULLREF_METRICS",
    "MetricInputError",
    "psnr",
    "quantize",
    "rgb_to_y",
    "ssim",
    "to_uint8_levels",
]
