"""Full-reference image metrics (PSNR, SSIM) computed the way image-restoration papers report them.

Numbers in super-resolution / denoising tables are not "PSNR of two float tensors": they are
computed on 8-bit images, usually on the luma channel of BT.601 YCbCr, after shaving a border,
with SSIM in the 'valid' form of Wang et al. (2004). Small departures from that recipe (no
rounding to 8 bits, full-range instead of limited-range luma, padded SSIM filtering) move results
by 0.01-0.3 dB, which is the size of the differences papers argue about. This module pins the
recipe down:

* inputs are float tensors in [0, 1], shape ``N x C x H x W`` (one value per image, float64
  tensor of shape ``(N,)``) or ``C x H x W`` (0-dim float64 tensor);
* ``quantize=True`` (default) clamps both images to [0, 1] and rounds them to the 256 levels of
  an 8-bit file, exactly what saving the output as PNG and measuring it would do;
* ``y_channel=True`` measures on ITU-R BT.601 limited-range luma (MATLAB ``rgb2ycbcr``),
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` on the 0..255 scale; ``matlab_compatible=True``
  additionally rounds Y to integers as MATLAB does for ``uint8`` images;
* ``crop_border=k`` drops ``k`` pixels on every side (conventionally the scale factor for SR);
* everything is computed in float64 with peak value 255.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from slkd.errors import SlkdError

__all__ = [
    "FULLREF_METRICS",
    "MetricInputError",
    "psnr",
    "quantize",
    "rgb_to_y",
    "ssim",
    "to_uint8_levels",
]

PEAK = 255.0
# BT.601 limited-range luma weights for R, G, B in [0, 1] (MATLAB rgb2ycbcr, first row).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

# SSIM constants of Wang et al. (2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


class MetricInputError(SlkdError, ValueError):
    """The images given to a metric cannot be compared (shape, channels, size, crop).

    It is a :class:`ValueError` for callers that treat it as a bad argument, and an
    :class:`~slkd.errors.SlkdError` so that the command line reports it without a traceback
    (for example when a dataset's reference image is not a multiple of the scale factor).
    """


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    # MATLAB's uint8 conversion rounds halves away from zero; for the non-negative values
    # handled here that is floor(x + 0.5). torch.round rounds halves to even, which would
    # differ on exact ties such as 0.5 * 255 = 127.5.
    return torch.floor(x + 0.5)


def _as_float64(x: torch.Tensor) -> torch.Tensor:
    # MPS has no float64; metrics are cheap enough to compute on the CPU there.
    if x.device.type == "mps":
        x = x.cpu()
    return x.to(torch.float64)


def to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """Map an image in [0, 1] to 8-bit levels: clamp, ``round(x * 255)``, as float64 in 0..255.

    This is what writing the image to an 8-bit file does, so metrics on the result match
    metrics measured on saved images. Halves round up (MATLAB ``im2uint8``).
    """
    return _round_half_up(_as_float64(x).clamp(0.0, 1.0) * PEAK)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap an image in [0, 1] to the 8-bit grid, staying on the [0, 1] scale (float64).

    ``quantize(x) == to_uint8_levels(x) / 255``; idempotent, and exact for images that were
    read from 8-bit files.
    """
    return to_uint8_levels(x) / PEAK


def _y_from_levels(levels: torch.Tensor) -> torch.Tensor:
    # levels: (..., 3, H, W) on the 0..255 scale -> (..., 1, H, W) limited-range luma.
    r, g, b = levels.unbind(dim=-3)
    wr, wg, wb = _Y_WEIGHTS
    y = _Y_OFFSET + (wr * r + wg * g + wb * b) / PEAK
    return y.unsqueeze(-3)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 limited-range luma of an RGB image in [0, 1], on the 0..255 scale (16..235).

    Same as MATLAB ``rgb2ycbcr`` (first channel, before its uint8 rounding) and
    ``skimage.color.rgb2ycbcr``. Accepts ``N x 3 x H x W`` (returns ``N x 1 x H x W``) or
    ``3 x H x W`` (returns ``1 x H x W``); float64. No clamping or rounding is done here.
    """
    _check_tensor(img, "img")
    if img.dim() not in (3, 4):
        raise MetricInputError(
            f"rgb_to_y expects a C x H x W or N x C x H x W tensor, got shape {tuple(img.shape)}"
        )
    if img.shape[-3] != 3:
        raise MetricInputError(
            f"rgb_to_y needs 3 (RGB) channels, got {img.shape[-3]} in shape {tuple(img.shape)}"
        )
    return _y_from_levels(_as_float64(img) * PEAK)


# --------------------------------------------------------------------------------------------
# Shared preparation
# --------------------------------------------------------------------------------------------


def _check_tensor(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype} "
            "(divide 8-bit images by 255 first)"
        )


def _prepare(
    img: torch.Tensor,
    ref: torch.Tensor,
    *,
    y_channel: bool,
    crop_border: int,
    matlab_compatible: bool,
    quantize: bool,
    metric: str,
    min_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate, quantize, convert to Y, crop. Returns 4-D float64 images on 0..255 and
    whether the input was unbatched."""
    _check_tensor(img, "img")
    _check_tensor(ref, "ref")
    if img.shape != ref.shape:
        raise MetricInputError(
            f"{metric}: img and ref must have the same shape, got img {tuple(img.shape)} "
            f"and ref {tuple(ref.shape)}"
        )
    if img.dim() not in (3, 4):
        raise MetricInputError(
            f"{metric}: expected C x H x W or N x C x H x W tensors, got {img.dim()}-D shape "
            f"{tuple(img.shape)}"
        )
    if isinstance(crop_border, bool) or not isinstance(crop_border, int):
        raise MetricInputError(
            f"{metric}: crop_border must be a non-negative int, got {crop_border!r}"
        )
    if crop_border < 0:
        raise MetricInputError(f"{metric}: crop_border must be >= 0, got {crop_border}")

    unbatched = img.dim() == 3
    if unbatched:
        img, ref = img.unsqueeze(0), ref.unsqueeze(0)
    n, c, h, w = img.shape
    if n == 0 or c == 0:
        raise MetricInputError(f"{metric}: empty batch or no channels, shape {tuple(img.shape)}")
    if y_channel and c not in (1, 3):
        raise MetricInputError(
            f"{metric}: y_channel=True needs 1 (grey) or 3 (RGB) channels, got {c}"
        )

    hc, wc = h - 2 * crop_border, w - 2 * crop_border
    if hc <= 0 or wc <= 0:
        raise MetricInputError(
            f"{metric}: crop_border={crop_border} leaves nothing of a {h} x {w} image"
        )
    if hc < min_size or wc < min_size:
        raise MetricInputError(
            f"{metric}: needs images of at least {min_size} x {min_size} pixels after "
            f"crop_border={crop_border}, got {hc} x {wc} (from {h} x {w})"
        )

    if quantize:
        x, y = to_uint8_levels(img), to_uint8_levels(ref)
    else:
        x, y = _as_float64(img) * PEAK, _as_float64(ref) * PEAK

    # A 1-channel image is taken to be luminance already (on the full 0..255 scale): there is
    # no RGB to convert, and refusing would make y_channel unusable on grey benchmark sets.
    if y_channel and c == 3:
        x, y = _y_from_levels(x), _y_from_levels(y)
        if matlab_compatible:
            x, y = _round_half_up(x), _round_half_up(y)

    if crop_border:
        k = crop_border
        x = x[..., k : h - k, k : w - k]
        y = y[..., k : h - k, k : w - k]
    return x, y, unbatched


def _finish(values: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return values[0] if unbatched else values


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def psnr(
    img: torch.Tensor,
    ref: torch.Tensor,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    matlab_compatible: bool = False,
    quantize: bool = True,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(255^2 / MSE)``, one value per image.

    The MSE is taken over all channels and pixels of each image (after Y conversion and
    cropping); identical images give ``+inf``. ``img`` is the model output and ``ref`` the
    ground truth, both in [0, 1]. With ``quantize=False`` neither image is clamped or rounded.
    """
    x, y, unbatched = _prepare(
        img,
        ref,
        y_channel=y_channel,
        crop_border=crop_border,
        matlab_compatible=matlab_compatible,
        quantize=quantize,
        metric="psnr",
    )
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    # 255^2 / 0 = inf and log10(inf) = inf: identical images need no special case.
    values = 10.0 * torch.log10(PEAK**2 / mse)
    return _finish(values, unbatched)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(t**2) / (2.0 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim(
    img: torch.Tensor,
    ref: torch.Tensor,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    matlab_compatible: bool = False,
    quantize: bool = True,
) -> torch.Tensor:
    """Structural similarity of Wang et al. (2004), one value per image.

    11 x 11 Gaussian window (sigma 1.5, normalised), K1 = 0.01, K2 = 0.03, L = 255, 'valid'
    filtering (the SSIM map of an H x W image is (H-10) x (W-10); no padding, no
    downsampling). Colour images are measured per channel and the channel values averaged.
    This is the ``ssim_index.m`` / BasicSR definition; the population (1/N) covariance is used.
    """
    x, y, unbatched = _prepare(
        img,
        ref,
        y_channel=y_channel,
        crop_border=crop_border,
        matlab_compatible=matlab_compatible,
        quantize=quantize,
        metric="ssim",
        min_size=SSIM_WINDOW,
    )
    n, c, _, _ = x.shape
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2

    # Filter the five moment images in one separable, depthwise convolution.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # n x 5c x H x W
    g = _gaussian_window(stack.device)
    groups = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(c, dim=1)

    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    cov = e_xy - mu_xy
    ssim_map = ((2.0 * mu_xy + c1) * (2.0 * cov + c2)) / (
        (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    )
    per_channel = ssim_map.mean(dim=(2, 3))  # n x c
    values = per_channel.mean(dim=1)
    return _finish(values, unbatched)


MetricFn = Callable[..., torch.Tensor]

#: Full-reference metrics by name, all with the signature of :func:`psnr`.
FULLREF_METRICS: dict[str, MetricFn] = {"psnr": psnr, "ssim": ssim}
