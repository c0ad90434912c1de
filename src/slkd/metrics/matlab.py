"""MATLAB-exact building blocks shared by BRISQUE (:mod:`.brisque_metric`) and PIQE (:mod:`.piqe_metric`).

Published BRISQUE and PIQE numbers come from MATLAB code, so these helpers follow that code
step by step rather than the papers' prose; every choice that moves a score is listed here.

Input (both metrics)
    A float tensor in [0, 1], ``N x C x H x W`` (one score per image, float64 tensor ``(N,)``)
    or ``C x H x W`` (0-dim float64 tensor), with ``C`` = 1 (grey) or 3 (RGB). With
    ``quantize=True`` (default) the image is first clamped and rounded to the 256 levels of an
    8-bit file (:func:`slkd.metrics.to_uint8_levels`), because the references read 8-bit files.
    RGB is converted to grey as MATLAB ``rgb2gray`` does on ``uint8`` data:
    ``Y = 0.298936 R + 0.587043 G + 0.114021 B`` on 0..255, rounded to an integer (halves up).
    A 1-channel image is taken as that grey image already. Images must be at least 16 x 16
    (:func:`prepare_grey`).

MSCN coefficients (:func:`matlab_mscn`)
    ``(I - mu) / (sigma + 1)`` on the 0..255 scale with a 7 x 7 Gaussian window (sigma 7/6,
    normalised): zero padding for BRISQUE (MATLAB ``filter2(..., 'same')``), replicate padding
    for PIQE (``imgaussfilt``). Not to be confused with the differentiable MSCN map of the
    distillation extractors (:func:`slkd.distill.extractors.mscn`), which works on standardised
    feature maps with a small constant instead of 1.

Half-size resize (:func:`imresize_half`)
    MATLAB ``imresize(I, 0.5)``: bicubic (a = -0.5) with antialiasing, i.e. the cubic kernel
    widened by 2 (8 taps), symmetric padding at the borders, as exact resampling matrices.

Round-off
    Inside a perfectly flat region (a 7 x 7 window of one grey level, e.g. saturated sky) the
    MSCN coefficient is ``c - mu`` with ``mu`` the filtered constant: 0 in exact arithmetic,
    but +-1e-14 or exactly 0 in floating point depending on the level and on the order of the
    operations. BRISQUE's AGGD fit counts the *signs* of the paired products, so those
    round-off values move its score by several points on a largely flat image (BENCHMARKS.md
    §4). The release's code has the same ill-conditioning. Here the Gaussian filter and the
    half-scale resize are written as fixed-order sequences of element-wise IEEE
    multiplications and additions (no BLAS, no convolution kernels, no fused multiply-add), so
    the MSCN coefficients and their signs are bit-for-bit the same for any thread count and
    batch composition, and should be on CUDA, which performs the same IEEE operations (checked
    on the CPU only); only the final means may differ in their last bits (~1e-11 on the
    score). How close this order lands to the MATLAB references: BENCHMARKS.md §4.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from slkd.metrics.fullref import MetricInputError, to_uint8_levels

__all__ = [
    "MIN_SIZE",
    "PEAK",
    "as_float64",
    "finish",
    "imresize_half",
    "matlab_mscn",
    "prepare_grey",
    "rgb_to_gray",
    "round_half_up",
]

PEAK = 255.0
MIN_SIZE = 16
# MATLAB rgb2gray: first row of the inverse of the NTSC YIQ matrix.
_GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)

MSCN_WINDOW = 7
MSCN_SIGMA = 7.0 / 6.0
MSCN_C = 1.0


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    # MATLAB rounds halves away from zero; values here are non-negative.
    return torch.floor(x + 0.5)


def as_float64(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "mps":  # no float64 on MPS
        x = x.cpu()
    return x.to(torch.float64)


def rgb_to_gray(levels: torch.Tensor, *, round_result: bool = True) -> torch.Tensor:
    """MATLAB ``rgb2gray`` of RGB values on the 0..255 scale: ``(..., 3, H, W) -> (..., 1, H, W)``.

    ``0.298936 R + 0.587043 G + 0.114021 B``, rounded to integers (halves up) as MATLAB does
    for ``uint8`` images when ``round_result`` is true. float64.
    """
    if levels.dim() < 3 or levels.shape[-3] != 3:
        raise MetricInputError(
            f"rgb_to_gray needs 3 (RGB) channels in dimension -3, got shape {tuple(levels.shape)}"
        )
    r, g, b = as_float64(levels).unbind(dim=-3)
    wr, wg, wb = _GRAY_WEIGHTS
    y = (wr * r + wg * g + wb * b).unsqueeze(-3)
    return round_half_up(y) if round_result else y


def prepare_grey(img: torch.Tensor, metric: str, quantize: bool) -> tuple[torch.Tensor, bool]:
    """Validate and convert to grey levels: returns ``N x 1 x H x W`` float64 on 0..255."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{metric}: img must be a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(
            f"{metric}: img must be a floating-point tensor with values in [0, 1], got dtype "
            f"{img.dtype} (divide 8-bit images by 255 first)"
        )
    shape = tuple(img.shape)
    if img.dim() not in (3, 4):
        raise MetricInputError(
            f"{metric}: expected a C x H x W or N x C x H x W tensor, got {img.dim()}-D shape "
            f"{shape}"
        )
    unbatched = img.dim() == 3
    if unbatched:
        img = img.unsqueeze(0)
    n, c, h, w = img.shape
    if n == 0:
        raise MetricInputError(f"{metric}: empty batch, shape {shape}")
    if c not in (1, 3):
        raise MetricInputError(
            f"{metric}: needs 1 (grey) or 3 (RGB) channels, got {c} in shape {shape}"
        )
    if h < MIN_SIZE or w < MIN_SIZE:
        raise MetricInputError(
            f"{metric}: needs images of at least {MIN_SIZE} x {MIN_SIZE} pixels, got {h} x {w} "
            f"(shape {shape})"
        )
    if quantize:
        levels = to_uint8_levels(img)
    else:
        levels = as_float64(img) * PEAK
    if not torch.isfinite(levels).all():
        raise MetricInputError(f"{metric}: img contains NaN or infinite values")
    grey = rgb_to_gray(levels, round_result=quantize) if c == 3 else levels
    return grey, unbatched


def finish(values: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return values[0] if unbatched else values


# --------------------------------------------------------------------------------------------
# MSCN coefficients
# --------------------------------------------------------------------------------------------


def _gaussian_1d(device: torch.device) -> torch.Tensor:
    # fspecial('gaussian', 7, 7/6) is separable: the outer product of this normalised vector.
    radius = MSCN_WINDOW // 2
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(t**2) / (2.0 * MSCN_SIGMA**2))
    return g / g.sum()


def _gauss_filter(x: torch.Tensor, padding: str) -> torch.Tensor:
    """Separable 7 x 7 Gaussian of ``... x H x W`` images, output the size of the input.

    Written as weighted sums of shifted views, one rounded multiplication and one rounded
    addition per tap in a fixed order, so that the result is bit-for-bit the same on every
    device and thread count (see "Round-off" in the module docstring). It is also several
    times faster than ``conv2d`` in float64 on the CPU.
    """
    g = _gaussian_1d(x.device).tolist()
    r = MSCN_WINDOW // 2
    h, w = x.shape[-2:]
    if padding == "zeros":
        xp = F.pad(x, (r, r, r, r))
    elif padding == "replicate":
        lead = x.shape[:-2]
        xp = F.pad(x.reshape(-1, 1, h, w), (r, r, r, r), mode="replicate").reshape(
            *lead, h + 2 * r, w + 2 * r
        )
    else:
        raise ValueError(f"unknown padding {padding!r} (use 'zeros' or 'replicate')")
    rows = xp[..., 0:h, :] * g[0]
    for k in range(1, MSCN_WINDOW):
        rows = rows + xp[..., k : k + h, :] * g[k]
    out = rows[..., 0:w] * g[0]
    for k in range(1, MSCN_WINDOW):
        out = out + rows[..., k : k + w] * g[k]
    return out


def matlab_mscn(x: torch.Tensor, *, padding: str = "zeros") -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients ``(x - mu) / (sigma + 1)``.

    ``x`` is ``N x C x H x W`` on the 0..255 scale; ``mu`` and ``sigma`` are the local mean and
    standard deviation under a 7 x 7 Gaussian window (sigma 7/6), ``sigma = sqrt(|E[x^2] - mu^2|)``.
    ``padding="zeros"`` is MATLAB ``filter2(..., 'same')`` (BRISQUE); ``"replicate"`` is
    ``imgaussfilt``'s default (PIQE). float64, same shape as ``x``.
    """
    x = as_float64(x)
    mu = _gauss_filter(x, padding)
    var = (_gauss_filter(x * x, padding) - mu * mu).abs()
    return (x - mu) / (var.sqrt() + MSCN_C)


# --------------------------------------------------------------------------------------------
# imresize(x, 0.5)
# --------------------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic convolution kernel with a = -0.5 (MATLAB imresize 'bicubic').
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))


@functools.lru_cache(maxsize=64)
def _resize_taps(in_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Taps of MATLAB ``imresize`` along one axis (bicubic, antialiased): ``(index, weight)``,
    both ``out x P``, with 0-based input indices.

    For ``scale < 1`` the kernel is ``scale * cubic(scale * x)`` of width ``4 / scale``; output
    sample ``j`` (1-based) sits at input position ``j / scale + (1 - 1/scale) / 2``; weights are
    normalised to sum 1, out-of-range taps are mirrored (``symmetric``: edge repeated) and taps
    whose weight is 0 for every output are dropped, as MATLAB's ``contributions`` does.
    """
    out_len = int(math.ceil(in_len * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    kernel_scale = scale if scale < 1 else 1.0
    j = np.arange(1, out_len + 1, dtype=np.float64)
    u = j / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    weights = kernel_scale * _cubic(kernel_scale * (u[:, None] - idx))
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)] - 1
    keep = np.any(weights != 0, axis=0)
    return idx[:, keep], weights[:, keep]


def _resize_axis(x: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    idx, weights = _resize_taps(x.shape[dim], scale)
    idx_t = torch.from_numpy(idx).to(x.device)
    shape = [1] * x.dim()
    shape[dim] = idx.shape[0]
    out = None
    for t in range(idx.shape[1]):  # fixed tap order: sum_t w_t * x[idx_t]
        term = x.index_select(dim, idx_t[:, t]) * torch.from_numpy(weights[:, t]).to(
            x.device
        ).view(shape)
        out = term if out is None else out + term
    return out


def imresize_half(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic, antialiasing on) of ``... x H x W`` images.

    The output is ``ceil(H/2) x ceil(W/2)``: rows first, then columns (MATLAB's order for
    equal scales), 8 taps per output sample, in float64 without rounding (MATLAB keeps double
    input double).
    """
    x = as_float64(x)
    return _resize_axis(_resize_axis(x, x.dim() - 2, 0.5), x.dim() - 1, 0.5)
