"""No-reference image quality: BRISQUE and PIQE, computed as their reference implementations.

Both metrics look at one image (no ground truth) and give a *distortion* score: lower is better.
Published numbers come from MATLAB code, so this module follows that code step by step rather
than the papers' prose; every choice that moves the score is listed here.

Input (both metrics)
    A float tensor in [0, 1], ``N x C x H x W`` (one score per image, float64 tensor ``(N,)``)
    or ``C x H x W`` (0-dim float64 tensor), with ``C`` = 1 (grey) or 3 (RGB). With
    ``quantize=True`` (default) the image is first clamped and rounded to the 256 levels of an
    8-bit file (:func:`slkd.metrics.to_uint8_levels`), because the references read 8-bit files.
    RGB is converted to grey as MATLAB ``rgb2gray`` does on ``uint8`` data:
    ``Y = 0.298936 R + 0.587043 G + 0.114021 B`` on 0..255, rounded to an integer (halves up).
    A 1-channel image is taken as that grey image already. Images must be at least 16 x 16.

BRISQUE (Mittal, Moorthy and Bovik, IEEE TIP 2012), the original LIVE release
    ``brisquescore.m`` / ``brisque_feature.m``: 36 features, 18 at full scale and 18 at half
    scale. Per scale: MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7 x 7 Gaussian window
    (sigma 7/6, normalised) applied with *zero* padding (MATLAB ``filter2(..., 'same')``); a
    generalised Gaussian fitted to the MSCN coefficients (shape, variance) and an asymmetric
    generalised Gaussian fitted to the products of each coefficient with its neighbour along
    4 orientations, taken with wrap-around (MATLAB ``circshift`` by ``[0 1]``, ``[1 0]``,
    ``[1 1]``, ``[-1 1]``) (shape, mean, left variance, right variance). Both fits are moment
    matching against a table of shapes ``0.2:0.001:10``. The half scale is MATLAB
    ``imresize(I, 0.5)``: bicubic (a = -0.5) with antialiasing, i.e. the cubic kernel widened
    by 2 (8 taps), symmetric padding at the borders; implemented here as exact resampling
    matrices (:func:`imresize_half`). Features are scaled to [-1, 1] with the release's
    range file (``svm-scale -r allrange``) and scored by its epsilon-SVR (RBF kernel,
    ``gamma = 0.05``): the score is the SVR output (nominally 0..100, can leave that range).
    The SVR parameters are bundled in ``data/`` (see ``data/BRISQUE_LICENSE.md``).

PIQE (Venkatanath et al., NCC 2015), MATLAB ``piqe``
    The grey image is padded at the bottom/right to a multiple of 16 (symmetric, as the public
    ports of MATLAB's code do; the padded blocks count like the others), rescaled to
    ``round(255 * I / max(I))``, normalised to MSCN with a 7 x 7 Gaussian window (sigma 7/6,
    replicate padding), and cut into 16 x 16 blocks. A block is *active* when the variance of
    its MSCN values (unbiased) exceeds 0.1. An active block shows a *noticeable artifact* when
    any 6-pixel segment along one of its 4 borders (11 overlapping segments per border) has a
    standard deviation below 0.1, and *noise* when ``sigma > 2 * beta``, with ``sigma`` the
    block's standard deviation and ``beta = |sigma - r| / max(sigma, r)``, ``r`` the ratio of the
    standard deviations of the block's 2 centre columns (8 and 9, 1-based) and of its
    "surround". As MATLAB computes it, the surround is the block without columns 8 and *10*
    (it deletes column 8, then column 9 of what is left); this quirk is reproduced, it moves
    scores by up to 0.3. Block distortion ``D = [artifact] (1 - var) + [noise] var``; score
    ``100 (sum of D over active blocks + 1) / (number of active blocks + 1)``.

Degenerate images
    A flat image has no active block, so PIQE = 100, as MATLAB documents. BRISQUE stays
    finite where the release's code would divide 0 by 0 (a side of the AGGD with no samples,
    all-zero coefficients): the missing standard deviation is taken as 0 and the shape as the
    table's first entry 0.2 (what MATLAB's ``min`` returns on NaN). The score of a flat image
    is then finite but meaningless, on the "very poor" side: 116.08 for a black image; for
    other levels it depends on level and size because the zero padding of the MSCN filter
    makes the border non-flat (106.76 for a 512 x 384 mid-grey image, 79.98 at 64 x 64).

Round-off (BRISQUE)
    Inside a perfectly flat region (a 7 x 7 window of one grey level, e.g. saturated sky) the
    MSCN coefficient is ``c - mu`` with ``mu`` the filtered constant: 0 in exact arithmetic,
    but +-1e-14 or exactly 0 in floating point depending on the level and on the order of the
    operations. The AGGD fit counts the *signs* of the paired products, so those round-off
    values move the left/right variances and hence the score -- by up to ~10 points on an
    image that is 30% flat (I19 of the calibration set gives anything from 64 to 74 under
    equally valid evaluation orders; the MATLAB reference is 72.26). The release's code
    has the same ill-conditioning. Here the Gaussian filter and the half-scale resize are
    written as fixed-order sequences of element-wise IEEE multiplications and additions
    (no BLAS, no convolution kernels, no fused multiply-add), so the MSCN coefficients and
    their signs are bit-for-bit the same for any thread count and batch composition, and
    should be on CUDA, which performs the same IEEE operations (checked on the CPU only); only
    the final means may differ in their last bits (~1e-11 on the score). This order
    matches the MATLAB references within 0.025 on the other four calibration images and
    within 2.0 on I19.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from slkd.metrics.fullref import MetricInputError, psnr, ssim, to_uint8_levels

__all__ = [
    "BRISQUE_NUM_FEATURES",
    "NOREF_METRICS",
    "Metric",
    "METRIC_NAMES",
    "brisque",
    "brisque_features",
    "create_metric",
    "fit_aggd",
    "fit_ggd",
    "imresize_half",
    "mscn",
    "piqe",
    "rgb_to_gray",
]

PEAK = 255.0
MIN_SIZE = 16
# MATLAB rgb2gray: first row of the inverse of the NTSC YIQ matrix.
_GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)

MSCN_WINDOW = 7
MSCN_SIGMA = 7.0 / 6.0
MSCN_C = 1.0

BRISQUE_NUM_FEATURES = 36
# Shape table of the moment-matching fits: MATLAB 0.2:0.001:10 (9801 entries).
_GAMMA_TABLE_SIZE = 9801
# Neighbour offsets (rows, cols) of the paired products, as MATLAB circshift shifts.
_BRISQUE_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))

PIQE_BLOCK = 16
PIQE_ACTIVITY_THRESHOLD = 0.1
PIQE_IMPAIRED_THRESHOLD = 0.1
PIQE_SEGMENT = 6
PIQE_C = 1.0

# The release's LIBSVM model (unchanged) and its svm-scale range file (same numbers, rewritten in
# svm-scale's format); provenance and licence in data/BRISQUE_LICENSE.md.
_BRISQUE_MODEL_FILE = "brisque_allmodel.txt"
_BRISQUE_RANGE_FILE = "brisque_allrange.txt"


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    # MATLAB rounds halves away from zero; values here are non-negative.
    return torch.floor(x + 0.5)


def _as_float64(x: torch.Tensor) -> torch.Tensor:
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
    r, g, b = _as_float64(levels).unbind(dim=-3)
    wr, wg, wb = _GRAY_WEIGHTS
    y = (wr * r + wg * g + wb * b).unsqueeze(-3)
    return _round_half_up(y) if round_result else y


def _prepare(img: torch.Tensor, metric: str, quantize: bool) -> tuple[torch.Tensor, bool]:
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
        levels = _as_float64(img) * PEAK
    if not torch.isfinite(levels).all():
        raise MetricInputError(f"{metric}: img contains NaN or infinite values")
    grey = rgb_to_gray(levels, round_result=quantize) if c == 3 else levels
    return grey, unbatched


def _finish(values: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return values[0] if unbatched else values


# --------------------------------------------------------------------------------------------
# Shared building blocks
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


def mscn(x: torch.Tensor, *, padding: str = "zeros") -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients ``(x - mu) / (sigma + 1)``.

    ``x`` is ``N x C x H x W`` on the 0..255 scale; ``mu`` and ``sigma`` are the local mean and
    standard deviation under a 7 x 7 Gaussian window (sigma 7/6), ``sigma = sqrt(|E[x^2] - mu^2|)``.
    ``padding="zeros"`` is MATLAB ``filter2(..., 'same')`` (BRISQUE); ``"replicate"`` is
    ``imgaussfilt``'s default (PIQE). float64, same shape as ``x``.
    """
    x = _as_float64(x)
    mu = _gauss_filter(x, padding)
    var = (_gauss_filter(x * x, padding) - mu * mu).abs()
    return (x - mu) / (var.sqrt() + MSCN_C)


# --------------------------------------------------------------------------------------------
# BRISQUE
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
    x = _as_float64(x)
    return _resize_axis(_resize_axis(x, x.dim() - 2, 0.5), x.dim() - 1, 0.5)


@functools.lru_cache(maxsize=8)
def _gamma_table(device_str: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shapes ``0.2:0.001:10`` with the GGD ratio ``G(1/a)G(3/a)/G(2/a)^2`` and its inverse
    (the AGGD ratio ``G(2/a)^2 / (G(1/a)G(3/a))``), float64."""
    device = torch.device(device_str)
    shapes = 0.2 + 0.001 * torch.arange(_GAMMA_TABLE_SIZE, dtype=torch.float64, device=device)
    lg = torch.lgamma
    log_r = lg(1.0 / shapes) + lg(3.0 / shapes) - 2.0 * lg(2.0 / shapes)
    return shapes, torch.exp(log_r), torch.exp(-log_r)


def fit_ggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matching fit of a zero-mean generalised Gaussian to each row of ``x`` (``B x M``).

    Returns ``(shape, variance)``, each ``(B,)``: ``variance = mean(x^2)`` and ``shape`` is the
    entry of the table ``0.2:0.001:10`` whose ratio ``G(1/a)G(3/a)/G(2/a)^2`` is closest to
    ``mean(x^2) / mean(|x|)^2`` (first one on ties, as MATLAB ``min``). All-zero rows give
    shape 0.2 and variance 0.
    """
    x = _as_float64(x)
    shapes, r_ggd, _ = _gamma_table(str(x.device))
    var = (x * x).mean(dim=-1)
    e_abs = x.abs().mean(dim=-1)
    rho = var / (e_abs * e_abs)
    pos = (rho.unsqueeze(-1) - r_ggd).abs().argmin(dim=-1)
    shape = torch.where(torch.isfinite(rho), shapes[pos], shapes[0])
    return shape, var


def fit_aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moment-matching fit of an asymmetric generalised Gaussian to each row of ``x`` (``B x M``).

    Returns ``(shape, mean, left_variance, right_variance)``, each ``(B,)``, as the BRISQUE
    release's ``estimateaggdparam`` plus its mean parameter
    ``(sigma_r - sigma_l) G(2/a) / G(1/a) * sqrt(G(1/a) / G(3/a))``. A side with no samples
    has standard deviation 0 (MATLAB would give NaN); all-zero rows give shape 0.2.
    """
    x = _as_float64(x)
    shapes, _, r_aggd = _gamma_table(str(x.device))
    neg = x < 0
    sq = x * x
    n_neg = neg.sum(dim=-1)
    n_pos = (x > 0).sum(dim=-1)
    sum_sq = sq.sum(dim=-1)
    left_sum = torch.where(neg, sq, 0.0).sum(dim=-1)
    left_var = left_sum / n_neg.clamp_min(1)
    right_var = (sum_sq - left_sum).clamp_min(0.0) / n_pos.clamp_min(1)  # zeros add nothing
    left_std, right_std = left_var.sqrt(), right_var.sqrt()
    e_abs = x.abs().mean(dim=-1)
    e_sq = sum_sq / x.shape[-1]
    r_hat = (e_abs * e_abs) / e_sq
    # The correction (g^3 + 1)(g + 1) / (g^2 + 1)^2 is symmetric in g <-> 1/g, so taking the
    # ratio of the smaller to the larger std gives MATLAB's value and stays finite when one
    # side is empty (its limit there is 1).
    lo, hi = torch.minimum(left_std, right_std), torch.maximum(left_std, right_std)
    tiny = torch.finfo(torch.float64).tiny
    g = torch.where(hi > 0, lo / hi.clamp_min(tiny), torch.ones_like(hi))
    r_norm = r_hat * (g**3 + 1.0) * (g + 1.0) / (g * g + 1.0) ** 2
    pos = ((r_aggd - r_norm.unsqueeze(-1)) ** 2).argmin(dim=-1)
    shape = torch.where(torch.isfinite(r_norm), shapes[pos], shapes[0])
    lg = torch.lgamma
    log_ratio = lg(2.0 / shape) - lg(1.0 / shape) + 0.5 * (lg(1.0 / shape) - lg(3.0 / shape))
    mean = (right_std - left_std) * torch.exp(log_ratio)
    return shape, mean, left_var, right_var


def _brisque_scale_features(grey: torch.Tensor) -> torch.Tensor:
    """The 18 features of one scale for ``N x 1 x H x W`` grey images -> ``N x 18``."""
    n = grey.shape[0]
    coeffs = mscn(grey, padding="zeros")[:, 0]  # N x H x W
    flat = coeffs.reshape(n, -1)
    alpha, var = fit_ggd(flat)
    pairs = torch.stack(
        [
            (coeffs * torch.roll(coeffs, shifts=shift, dims=(-2, -1))).reshape(n, -1)
            for shift in _BRISQUE_SHIFTS
        ],
        dim=1,
    )  # N x 4 x HW
    a_shape, a_mean, a_lvar, a_rvar = fit_aggd(pairs)
    per_shift = torch.stack([a_shape, a_mean, a_lvar, a_rvar], dim=-1).reshape(n, 16)
    return torch.cat([alpha[:, None], var[:, None], per_shift], dim=1)


def _brisque_features_grey(grey: torch.Tensor) -> torch.Tensor:
    full = _brisque_scale_features(grey)
    half = _brisque_scale_features(imresize_half(grey))
    return torch.cat([full, half], dim=1)


def brisque_features(img: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """The 36 unscaled BRISQUE features of each image: ``(N, 36)`` float64, or ``(36,)``.

    Order as the release: per scale (full, then half) GGD shape and variance of the MSCN
    coefficients, then for each orientation (horizontal, vertical, main and anti-diagonal)
    AGGD shape, mean, left and right variance of the paired products.
    """
    grey, unbatched = _prepare(img, "brisque_features", quantize)
    return _finish(_brisque_features_grey(grey), unbatched)


@dataclass(frozen=True)
class _SVRModel:
    support_vectors: torch.Tensor  # S x 36, already on the scaled [-1, 1] feature scale
    coefficients: torch.Tensor  # S
    rho: float
    gamma: float
    feature_min: torch.Tensor  # 36
    feature_max: torch.Tensor  # 36
    lower: float
    upper: float


def _data_text(name: str) -> str:
    ref = resources.files("slkd.metrics").joinpath("data").joinpath(name)
    return ref.read_text(encoding="ascii")


def _parse_libsvm_model(text: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """LIBSVM model file of an RBF epsilon-SVR -> (support vectors, coefficients, rho, gamma)."""
    header, _, body = text.partition("\nSV\n")
    fields = dict(line.split(None, 1) for line in header.splitlines() if line.strip())
    kind = (fields.get("svm_type", "").strip(), fields.get("kernel_type", "").strip())
    if kind != ("epsilon_svr", "rbf"):
        raise RuntimeError("bundled BRISQUE model is not an RBF epsilon-SVR")
    rows = [line.split() for line in body.splitlines() if line.strip()]
    coef = np.array([float(r[0]) for r in rows])
    sv = np.zeros((len(rows), BRISQUE_NUM_FEATURES))
    for i, r in enumerate(rows):
        for item in r[1:]:
            k, v = item.split(":")
            sv[i, int(k) - 1] = float(v)
    if len(rows) != int(fields["total_sv"]):
        raise RuntimeError("bundled BRISQUE model is truncated")
    return sv, coef, float(fields["rho"]), float(fields["gamma"])


def _parse_svm_scale_range(text: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``svm-scale -s`` range file -> (lower, upper, feature minima, feature maxima)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines[0] != ["x"]:
        raise RuntimeError("bundled BRISQUE range file has no 'x' header")
    lower, upper = float(lines[1][0]), float(lines[1][1])
    fmin = np.full(BRISQUE_NUM_FEATURES, np.nan)
    fmax = np.full(BRISQUE_NUM_FEATURES, np.nan)
    for k, lo, hi in lines[2:]:
        fmin[int(k) - 1], fmax[int(k) - 1] = float(lo), float(hi)
    if np.isnan(fmin).any():
        raise RuntimeError("bundled BRISQUE range file misses features")
    return lower, upper, fmin, fmax


@functools.lru_cache(maxsize=1)
def _load_brisque_model() -> _SVRModel:
    sv, coef, rho, gamma = _parse_libsvm_model(_data_text(_BRISQUE_MODEL_FILE))
    lower, upper, fmin, fmax = _parse_svm_scale_range(_data_text(_BRISQUE_RANGE_FILE))
    t = torch.from_numpy
    return _SVRModel(t(sv), t(coef), rho, gamma, t(fmin), t(fmax), lower, upper)


def _svr_predict(features: torch.Tensor, model: _SVRModel) -> torch.Tensor:
    """``svm-scale -r range`` then ``svm-predict`` of an RBF epsilon-SVR: ``N x 36 -> N``."""
    dev = features.device
    fmin, fmax = model.feature_min.to(dev), model.feature_max.to(dev)
    scaled = model.lower + (model.upper - model.lower) * (features - fmin) / (fmax - fmin)
    sv = model.support_vectors.to(dev)
    d2 = (scaled.unsqueeze(1) - sv.unsqueeze(0)).pow(2).sum(dim=-1)  # N x S
    return torch.exp(-model.gamma * d2) @ model.coefficients.to(dev) - model.rho


def brisque(img: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """BRISQUE score of each image (original LIVE release and SVR); lower is better.

    ``img`` is ``N x C x H x W`` (returns float64 ``(N,)``) or ``C x H x W`` (0-dim), values in
    [0, 1], grey or RGB, at least 16 x 16. See the module docstring for the exact recipe.
    """
    grey, unbatched = _prepare(img, "brisque", quantize)
    feats = _brisque_features_grey(grey)
    return _finish(_svr_predict(feats, _load_brisque_model()), unbatched)


# --------------------------------------------------------------------------------------------
# PIQE
# --------------------------------------------------------------------------------------------


def _pad_symmetric_post(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    # MATLAB padarray(x, [pad_h pad_w], 'symmetric', 'post'): mirror including the edge pixel.
    if pad_h:
        h = x.shape[-2]
        idx = torch.arange(h, h + pad_h, device=x.device)
        x = torch.cat([x, x[..., (2 * h - 1 - idx) % (2 * h), :]], dim=-2)
    if pad_w:
        w = x.shape[-1]
        idx = torch.arange(w, w + pad_w, device=x.device)
        x = torch.cat([x, x[..., (2 * w - 1 - idx) % (2 * w)]], dim=-1)
    return x


def _piqe_grey(grey: torch.Tensor) -> torch.Tensor:
    n, _, h, w = grey.shape
    b = PIQE_BLOCK
    grey = _pad_symmetric_post(grey, (-h) % b, (-w) % b)
    peak = grey.amax(dim=(1, 2, 3), keepdim=True)
    grey = torch.where(peak > 0, _round_half_up(PEAK * grey / peak.clamp_min(1e-300)), grey)
    coeffs = mscn(grey, padding="replicate")[:, 0]  # N x H' x W'
    hb, wb = coeffs.shape[-2] // b, coeffs.shape[-1] // b
    blocks = coeffs.reshape(n, hb, b, wb, b).permute(0, 1, 3, 2, 4).reshape(n, hb * wb, b, b)

    var = blocks.var(dim=(-2, -1), unbiased=True)  # N x B
    active = var > PIQE_ACTIVITY_THRESHOLD

    # Noticeable artifacts: a 6-pixel segment of a block border with (unbiased) std < 0.1.
    edges = torch.stack(
        [blocks[..., 0, :], blocks[..., :, b - 1], blocks[..., b - 1, :], blocks[..., :, 0]], dim=2
    )  # N x B x 4 x 16
    seg_std = edges.unfold(-1, PIQE_SEGMENT, 1).std(dim=-1, unbiased=True)  # N x B x 4 x 11
    artifact = (seg_std < PIQE_IMPAIRED_THRESHOLD).flatten(2).any(dim=-1)

    # Noise: deviation of the 2 centre columns against the rest of the block. MATLAB's
    # centerSurDev deletes column 8 and *then* column 9 of what is left, i.e. original columns
    # 8 and 10 (1-based): the "surround" keeps centre column 9 and lacks column 10. This is
    # reproduced because it moves scores by up to ~0.3 (I04 of the calibration set).
    c1 = b // 2 - 1  # 0-based: centre columns c1, c1 + 1; deleted columns c1, c1 + 2
    centre = blocks[..., c1 : c1 + 2].flatten(2)
    surround = torch.cat(
        [blocks[..., :c1], blocks[..., c1 + 1 : c1 + 2], blocks[..., c1 + 3 :]], dim=-1
    ).flatten(2)
    ratio = centre.std(dim=-1, unbiased=True) / surround.std(dim=-1, unbiased=True)
    ratio = torch.where(torch.isnan(ratio), torch.zeros_like(ratio), ratio)
    sigma = var.sqrt()
    beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)
    noise = sigma > 2.0 * beta

    dist = artifact.to(var.dtype) * (1.0 - var) + noise.to(var.dtype) * var
    total = torch.where(active, dist, torch.zeros_like(dist)).sum(dim=-1)
    n_active = active.sum(dim=-1).to(var.dtype)
    return (total + PIQE_C) / (n_active + PIQE_C) * 100.0


def piqe(img: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """PIQE score of each image (MATLAB ``piqe``), nominally in [0, 100]; lower is better.

    ``img`` is ``N x C x H x W`` (returns float64 ``(N,)``) or ``C x H x W`` (0-dim), values in
    [0, 1], grey or RGB, at least 16 x 16. See the module docstring for the exact recipe.
    """
    grey, unbatched = _prepare(img, "piqe", quantize)
    return _finish(_piqe_grey(grey), unbatched)


# --------------------------------------------------------------------------------------------
# Lookup by name
# --------------------------------------------------------------------------------------------


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
