"""Synthetic degradations for training image-restoration networks.

Every function works on float images in [0, 1] of shape C×H×W (most also accept a batch
N×C×H×W) and takes **all** its randomness from an explicit :class:`torch.Generator`; nothing here
touches the global random state of torch, NumPy or Python. A degraded sample is therefore a pure
function of the clean image and the generator's seed, which is what makes training resumable
bit for bit and independent of the number of DataLoader workers (see :mod:`slkd.data.sampler`).

Functions
---------
* :func:`gaussian_noise` — additive white Gaussian noise, σ on the 0–255 scale, fixed or drawn
  per image from a range; the result is **not** clipped (the literature's convention).
* :func:`random_motion_kernel` / :func:`motion_blur` — camera-shake blur kernels from a random
  trajectory, and depth-wise convolution with reflect padding.
* :func:`rain_streaks` — synthetic rain: sparse random drops smeared into streaks by a line
  kernel, added to the image and clipped.

Registry
--------
:data:`DEGRADATIONS` maps a config name to a class whose instances are callables
``(clean, gen) -> degraded``; :func:`build_degradation` builds one from a name and keyword
parameters, raising :class:`~slkd.errors.SlkdError` that names the bad name or parameter.
Instances also have

* ``margin`` — pixels of context per side the degradation needs to be free of border effects
  (a dataset crops its patch with this much extra image around it where available, degrades,
  and cuts the patch out again), and
* ``evaluate(clean, seed, index)`` — the deterministic degradation used for validation. For
  Gaussian noise it is exactly :func:`slkd.data.folders.add_test_noise` (NumPy seeded with
  ``seed`` for every image), so validation numbers equal those of ``slkd eval``; the others draw
  from a generator seeded with a hash of (``seed``, ``index``) so that each validation image gets
  its own, but fixed, kernel or rain pattern.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from slkd.data.folders import add_test_noise
from slkd.errors import SlkdError

__all__ = [
    "DEGRADATIONS",
    "Degradation",
    "GaussianNoise",
    "MotionBlur",
    "RainStreaks",
    "build_degradation",
    "derive_seed",
    "gaussian_noise",
    "line_kernel",
    "motion_blur",
    "rain_streaks",
    "random_motion_kernel",
]

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a stable hash: the same on every machine and run)."""
    text = ":".join(str(int(p)) for p in parts).encode("ascii")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def _as_range(value: Any, name: str, *, low: float | None = None, high: float | None = None,
              integer: bool = False) -> tuple[float, float]:
    """Validate a number or a (lo, hi) pair and return it as a pair."""
    if isinstance(value, bool):
        raise SlkdError(f"{name}: expected a number or a [low, high] pair, got {value!r}")
    if isinstance(value, (int, float)):
        lo = hi = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        lo, hi = value
    else:
        raise SlkdError(f"{name}: expected a number or a [low, high] pair, got {value!r}")
    if integer and (int(lo) != lo or int(hi) != hi):
        raise SlkdError(f"{name}: expected whole numbers, got {value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SlkdError(f"{name}: must be finite, got {value!r}")
    if lo > hi:
        raise SlkdError(f"{name}: the low end {lo} is above the high end {hi}")
    if low is not None and lo < low:
        raise SlkdError(f"{name}: must be >= {low}, got {value!r}")
    if high is not None and hi > high:
        raise SlkdError(f"{name}: must be <= {high}, got {value!r}")
    return (int(lo), int(hi)) if integer else (float(lo), float(hi))


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    """One draw from U(lo, hi); always consumes one number so the stream layout is fixed."""
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    return lo + (hi - lo) * u


def _check_image(x: torch.Tensor, what: str, allow_batch: bool = True) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{what} expects a float tensor, got {type(x).__name__}"
                        + (f" of {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.ndim != 3 and not (allow_batch and x.ndim == 4):
        shapes = "C×H×W or N×C×H×W" if allow_batch else "C×H×W"
        raise ValueError(f"{what} expects a {shapes} tensor, got shape {tuple(x.shape)}")


def _splat(points: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear splatting of weighted (x, y) points onto a size×size grid (float64).

    Each point spreads its weight over the four surrounding pixels in proportion to the
    bilinear interpolation weights, so the total mass and the centre of mass are preserved
    exactly. Points must lie in [0, size-1]².
    """
    x, y = points[:, 0], points[:, 1]
    x0 = torch.floor(x).clamp(0, size - 2)
    y0 = torch.floor(y).clamp(0, size - 2)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    idx = torch.cat([y0 * size + x0, y0 * size + x0 + 1, (y0 + 1) * size + x0, (y0 + 1) * size + x0 + 1])
    w = torch.cat([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * weights.repeat(4)
    return torch.bincount(idx, weights=w, minlength=size * size).reshape(size, size)


# --------------------------------------------------------------------------------------------
# Gaussian noise
# --------------------------------------------------------------------------------------------


def gaussian_noise(clean: torch.Tensor, sigma: float | Sequence[float], gen: torch.Generator) -> torch.Tensor:
    """Add white Gaussian noise N(0, (σ/255)²) to every sample; the result is not clipped.

    Args:
        clean: C×H×W (or N×C×H×W) float image in [0, 1].
        sigma: the standard deviation on the 0–255 scale, or a ``(lo, hi)`` range from which σ
            is drawn uniformly for each image (blind denoising); σ = 0 returns a copy.
        gen: the source of all randomness (σ first, then the noise, drawn on ``gen.device``).

    Not clipping to [0, 1] follows the denoising literature (DnCNN, FFDNet, Restormer): the
    network sees exactly the N(0, σ²) model, and validation numbers stay comparable.
    """
    _check_image(clean, "gaussian_noise")
    lo, hi = _as_range(sigma, "sigma", low=0.0)
    n = clean.shape[0] if clean.ndim == 4 else 1
    if lo == hi:
        sigmas = torch.full((n,), lo, dtype=torch.float64)
    else:
        sigmas = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64, device=gen.device).cpu()
    noise = torch.randn(clean.shape, generator=gen, dtype=clean.dtype, device=gen.device).to(clean.device)
    scale = (sigmas / 255.0).to(dtype=clean.dtype, device=clean.device)
    scale = scale.view(-1, 1, 1, 1) if clean.ndim == 4 else scale.view(1, 1, 1)
    return clean + noise * scale


# --------------------------------------------------------------------------------------------
# Motion blur
# --------------------------------------------------------------------------------------------


def random_motion_kernel(
    size: int,
    gen: torch.Generator,
    *,
    steps: int = 64,
    momentum: float = 0.8,
    extent: float | Sequence[float] = (0.5, 1.0),
) -> torch.Tensor:
    """A random camera-shake blur kernel: size×size float32, non-negative, summing to 1.

    Model: the camera's image-plane position during the exposure is a random walk with
    momentum. The velocity starts in a uniformly random direction with unit speed and evolves as
    the AR(1) process ``v[t] = m·v[t-1] + sqrt(1-m²)·n[t]`` with ``n[t] ~ N(0, I₂)`` (unit
    stationary variance), and the position is ``p[t] = p[t-1] + v[t]`` for ``steps`` samples.
    ``momentum`` m near 1 gives smooth, nearly straight sweeps; small m gives jittery shake.

    Rasterisation: the exposure time is spread evenly over the trajectory's segments (a slow
    camera leaves more light per pixel). The path is shifted so that its centre of mass is the
    kernel's centre (the blur then does not shift the image), scaled so that its largest
    excursion from the centre is a fraction ``extent`` (drawn uniformly from the given range) of
    the kernel's half width, resampled densely (≤ 0.25 px apart, each segment keeping its share
    of the time) and splatted bilinearly, which keeps mass and centre of mass exact.

    Args:
        size: odd kernel width, >= 3.
        gen: source of randomness.
        steps: number of trajectory samples (>= 2).
        momentum: velocity persistence in [0, 1).
        extent: fraction (0, 1] of the half width the trajectory reaches, or a range of it.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise SlkdError(f"size: the kernel size must be an odd integer >= 3, got {size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise SlkdError(f"steps: must be an integer >= 2, got {steps!r}")
    if not (0.0 <= float(momentum) < 1.0):
        raise SlkdError(f"momentum: must be in [0, 1), got {momentum!r}")
    ext_lo, ext_hi = _as_range(extent, "extent", high=1.0)
    if ext_lo <= 0:
        raise SlkdError(f"extent: must be > 0, got {extent!r}")

    dev = gen.device
    theta = float(torch.rand((), generator=gen, dtype=torch.float64, device=dev)) * 2.0 * math.pi
    noise = torch.randn(steps - 1, 2, generator=gen, dtype=torch.float64, device=dev).cpu()
    frac = _uniform(ext_lo, ext_hi, gen)

    m = float(momentum)
    innov = math.sqrt(1.0 - m * m)
    v = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64)
    vel = torch.empty(steps - 1, 2, dtype=torch.float64)
    for t in range(steps - 1):
        v = m * v + innov * noise[t]
        vel[t] = v
    pts = torch.cat([torch.zeros(1, 2, dtype=torch.float64), torch.cumsum(vel, 0)])

    # centre of mass of a polyline with equal time per segment = mean of segment midpoints
    centre = (0.5 * (pts[1:] + pts[:-1])).mean(0)
    pts = pts - centre
    half = (size - 1) / 2.0
    reach = float(pts.abs().max())
    if reach < 1e-12:  # degenerate (cannot happen with continuous noise, but be safe)
        kernel = torch.zeros(size, size, dtype=torch.float32)
        kernel[size // 2, size // 2] = 1.0
        return kernel
    pts = pts * (frac * half / reach)

    # dense resampling: sub-sample midpoints of each segment, each segment weighs the same
    seg = pts[1:] - pts[:-1]
    lengths = seg.norm(dim=1)
    counts = torch.clamp(torch.ceil(lengths / 0.25), min=1).long()
    seg_id = torch.repeat_interleave(torch.arange(steps - 1), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    t = (offsets.double() + 0.5) / counts[seg_id].double()
    samples = pts[seg_id] + t[:, None] * seg[seg_id] + half
    weights = 1.0 / counts[seg_id].double()

    kernel = _splat(samples, weights, size)
    kernel = kernel.clamp_min(0)
    return (kernel / kernel.sum()).to(torch.float32)


def motion_blur(clean: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with ``kernel`` (k×k, k odd); the output has the input's size.

    A true convolution (the kernel is flipped, as in ``scipy.ndimage.convolve``), so that an
    asymmetric kernel blurs along the trajectory it describes; it is computed with the FFT
    (equal to a depth-wise ``conv2d`` up to float rounding, and several times faster for
    kernels of 9 px and more). The border is padded by
    reflection (falling back to edge replication when the image is smaller than the kernel's
    radius). A constant image stays exactly that constant up to float rounding when the kernel
    sums to 1.

    Args:
        clean: C×H×W or N×C×H×W float image.
        kernel: k×k float kernel (normally from :func:`random_motion_kernel`).
    """
    _check_image(clean, "motion_blur")
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"motion_blur expects an odd square k×k kernel, got shape {tuple(kernel.shape)}")
    x = clean[None] if clean.ndim == 3 else clean
    pad = kernel.shape[0] // 2
    if pad == 0:
        return clean * kernel.to(clean)[0, 0]
    mode = "reflect" if pad < x.shape[-1] and pad < x.shape[-2] else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    out = _fft_convolve_valid(xp, kernel.to(dtype=x.dtype, device=x.device))
    return out[0] if clean.ndim == 3 else out


# --------------------------------------------------------------------------------------------
# Rain
# --------------------------------------------------------------------------------------------


def line_kernel(length: float, angle: float) -> torch.Tensor:
    """A straight streak of ``length`` pixels through the centre, ``angle`` degrees from vertical
    (positive = top leaning right), rasterised by bilinear splatting (float32, odd size).

    Normalised so that one pixel of length carries weight 1 (the kernel sums to ``length``): a
    drop of brightness b convolved with it gives a streak of brightness ≈ b along its length.
    """
    if not (length > 0):
        raise SlkdError(f"length: must be > 0, got {length!r}")
    half_len = length / 2.0
    size = 2 * int(math.ceil(half_len)) + 3
    centre = (size - 1) / 2.0
    n = max(2, int(math.ceil(length / 0.25)) + 1)
    s = torch.linspace(-half_len, half_len, n, dtype=torch.float64)
    a = math.radians(angle)
    # image y grows downwards: the top end (s < 0) leans right for positive angles
    pts = torch.stack([centre - s * math.sin(a), centre + s * math.cos(a)], 1)
    k = _splat(pts, torch.ones(n, dtype=torch.float64), size)
    return (k * (length / k.sum())).to(torch.float32)


def _fast_len(n: int) -> int:
    """Smallest length >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _fft_convolve_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """'valid' 2-D convolution of ``x`` (..., H, W) with a k1×k2 kernel through the FFT.

    Output (..., H-k1+1, W-k2+1). Much faster than ``conv2d`` for the large kernels used here
    (streaks of 60 px, blur kernels of 25 px); the transform is zero-padded to a 2·3·5-smooth
    size, which also keeps circular wrap-around out of the valid region.
    """
    h, w = x.shape[-2:]
    kh, kw = k.shape
    fh, fw = _fast_len(h), _fast_len(w)
    fx = torch.fft.rfft2(x, s=(fh, fw))
    fk = torch.fft.rfft2(k.to(x), s=(fh, fw))
    full = torch.fft.irfft2(fx * fk, s=(fh, fw))
    return full[..., kh - 1:h, kw - 1:w].contiguous()


def rain_streaks(
    clean: torch.Tensor,
    gen: torch.Generator,
    *,
    density: float | Sequence[float] = (0.005, 0.012),
    length: float | Sequence[float] = (25.0, 65.0),
    angle: float | Sequence[float] = (-20.0, 20.0),
    intensity: float | Sequence[float] = (0.5, 0.9),
    blend: str = "add",
) -> torch.Tensor:
    """Add synthetic rain streaks and clip to [0, 1].

    Model (one draw of each parameter per image): drops are seeded independently at each pixel
    with probability ``density``, each with a brightness uniform in [0.3, 1]; the drop map is
    smeared by a straight line kernel (:func:`line_kernel`) of ``length`` pixels tilted
    ``angle`` degrees from vertical (all streaks of an image fall the same way, like wind-driven
    rain), giving thin streaks of roughly the drop's brightness; overlapping streaks add up. The
    streak layer is scaled by ``intensity``, clipped to [0, 1] and blended grey (the same in
    every channel): ``"add"`` — ``clip(clean + rain)``, the O = B + S model of the Rain100 sets; or
    ``"screen"`` — ``1 - (1 - clean)(1 - rain)``, softer on bright backgrounds. Drops are seeded
    on a margin around the image as wide as the kernel's radius, so streaks enter across the
    border like real ones, with no empty band at the edges.

    The defaults give heavy rain (mean brightness up by ≈ 0.1–0.25, most of the image crossed by
    long near-vertical streaks), far heavier than Rain100L's light streaks.

    Args:
        clean: C×H×W (or N×C×H×W, each image its own rain) float image in [0, 1].
        gen: source of randomness.
        density: fraction of pixels seeding a drop (0–1), or a range.
        length: streak length in pixels (> 0), or a range.
        angle: tilt from vertical in degrees (|angle| <= 90), or a range.
        intensity: gain of the streak layer (>= 0), or a range.
        blend: "add" or "screen".
    """
    _check_image(clean, "rain_streaks")
    d_lo, d_hi = _as_range(density, "density", low=0.0, high=1.0)
    l_lo, l_hi = _as_range(length, "length", low=0.0)
    if l_lo <= 0:
        raise SlkdError(f"length: must be > 0, got {length!r}")
    a_lo, a_hi = _as_range(angle, "angle", low=-90.0, high=90.0)
    i_lo, i_hi = _as_range(intensity, "intensity", low=0.0)
    if blend not in ("add", "screen"):
        raise SlkdError(f"blend: must be 'add' or 'screen', got {blend!r}")
    if clean.ndim == 4:
        return torch.stack([
            rain_streaks(img, gen, density=density, length=length, angle=angle,
                         intensity=intensity, blend=blend)
            for img in clean
        ])

    rho = _uniform(d_lo, d_hi, gen)
    streak = _uniform(l_lo, l_hi, gen)
    tilt = _uniform(a_lo, a_hi, gen)
    gain = _uniform(i_lo, i_hi, gen)

    kernel = line_kernel(streak, tilt)
    r = kernel.shape[0] // 2
    h, w = clean.shape[-2:]
    shape = (h + 2 * r, w + 2 * r)
    dev = gen.device
    u = torch.rand(shape, generator=gen, dtype=torch.float32, device=dev).cpu()
    b = torch.rand(shape, generator=gen, dtype=torch.float32, device=dev).cpu()
    drops = torch.where(u < rho, 0.3 + 0.7 * b, torch.zeros((), dtype=torch.float32))
    layer = (_fft_convolve_valid(drops, kernel) * gain).clamp_(0.0, 1.0)
    layer = layer.to(dtype=clean.dtype, device=clean.device)[None]
    if blend == "add":
        return (clean + layer).clamp(0.0, 1.0)
    return (1.0 - (1.0 - clean.clamp(0.0, 1.0)) * (1.0 - layer)).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class Degradation:
    """Base of the registered degradations: ``deg(clean, gen) -> degraded``.

    Subclasses validate their parameters in ``__init__`` (raising :class:`SlkdError` naming the
    parameter) and define ``__call__``. ``margin`` is the context (pixels per side) they need;
    ``evaluate`` is the deterministic validation version.
    """

    name = "?"
    margin = 0

    def __call__(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def evaluate(self, clean: torch.Tensor, seed: int = 0, index: int = 0) -> torch.Tensor:
        """Deterministic degradation of validation image number ``index``."""
        return self(clean, torch.Generator().manual_seed(derive_seed(seed, index)))

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class GaussianNoise(Degradation):
    """``gaussian_noise`` with ``sigma`` (0–255 scale, or a [lo, hi] range drawn per image).

    ``eval_sigma``: σ used by :meth:`evaluate` (default: ``sigma`` when fixed, the middle of the
    range otherwise). Evaluation noise is :func:`~slkd.data.folders.add_test_noise` with the
    given seed for every image — the same noisy images as ``slkd eval --noise-seed``.
    """

    name = "gaussian_noise"

    def __init__(self, sigma: float | Sequence[float] = 25.0, eval_sigma: float | None = None) -> None:
        lo, hi = _as_range(sigma, "sigma", low=0.0)
        self.sigma = lo if lo == hi else (lo, hi)
        if eval_sigma is None:
            eval_sigma = lo if lo == hi else (lo + hi) / 2.0
        if not isinstance(eval_sigma, (int, float)) or isinstance(eval_sigma, bool):
            raise SlkdError(f"eval_sigma: expected a number, got {eval_sigma!r}")
        self.eval_sigma = _as_range(eval_sigma, "eval_sigma", low=0.0)[0]

    def __call__(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return gaussian_noise(clean, self.sigma, gen)

    def evaluate(self, clean: torch.Tensor, seed: int = 0, index: int = 0) -> torch.Tensor:
        return add_test_noise(clean, self.eval_sigma, seed=seed)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "eval_sigma": self.eval_sigma}


class MotionBlur(Degradation):
    """Camera-shake blur with a fresh :func:`random_motion_kernel` per sample.

    ``kernel_size``: odd size, or a [lo, hi] range from which an odd size is drawn uniformly
    (default 7–25, the span of Levin et al.'s real kernels); ``steps``, ``momentum``, ``extent``
    are passed to :func:`random_motion_kernel`. ``margin`` is half the largest kernel.
    """

    name = "motion_blur"

    def __init__(self, kernel_size: int | Sequence[int] = (7, 25), steps: int = 64,
                 momentum: float = 0.8, extent: float | Sequence[float] = (0.5, 1.0)) -> None:
        lo, hi = _as_range(kernel_size, "kernel_size", low=3, integer=True)
        self.sizes = [k for k in range(lo, hi + 1) if k % 2 == 1]
        if not self.sizes:
            raise SlkdError(f"kernel_size: the range {kernel_size!r} holds no odd size")
        self.kernel_size = lo if lo == hi else (lo, hi)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise SlkdError(f"steps: must be an integer >= 2, got {steps!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise SlkdError(f"momentum: must be a number in [0, 1), got {momentum!r}")
        e_lo, e_hi = _as_range(extent, "extent", high=1.0)
        if e_lo <= 0:
            raise SlkdError(f"extent: must be > 0, got {extent!r}")
        self.steps, self.momentum = steps, float(momentum)
        self.extent = e_lo if e_lo == e_hi else (e_lo, e_hi)
        self.margin = max(self.sizes) // 2

    def kernel(self, gen: torch.Generator) -> torch.Tensor:
        i = int(torch.randint(len(self.sizes), (), generator=gen, device=gen.device))
        return random_motion_kernel(self.sizes[i], gen, steps=self.steps, momentum=self.momentum,
                                    extent=self.extent)

    def __call__(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return motion_blur(clean, self.kernel(gen))

    def params(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "steps": self.steps, "momentum": self.momentum,
                "extent": self.extent}


class RainStreaks(Degradation):
    """:func:`rain_streaks` with the given parameters (see there for meanings and defaults)."""

    name = "rain"

    def __init__(self, density: float | Sequence[float] = (0.005, 0.012),
                 length: float | Sequence[float] = (25.0, 65.0),
                 angle: float | Sequence[float] = (-20.0, 20.0),
                 intensity: float | Sequence[float] = (0.5, 0.9), blend: str = "add") -> None:
        _as_range(density, "density", low=0.0, high=1.0)
        l_lo, _ = _as_range(length, "length", low=0.0)
        if l_lo <= 0:
            raise SlkdError(f"length: must be > 0, got {length!r}")
        _as_range(angle, "angle", low=-90.0, high=90.0)
        _as_range(intensity, "intensity", low=0.0)
        if blend not in ("add", "screen"):
            raise SlkdError(f"blend: must be 'add' or 'screen', got {blend!r}")
        self.density, self.length, self.angle = density, length, angle
        self.intensity, self.blend = intensity, blend

    def __call__(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return rain_streaks(clean, gen, **self.params())

    def params(self) -> dict[str, Any]:
        return {"density": self.density, "length": self.length, "angle": self.angle,
                "intensity": self.intensity, "blend": self.blend}


#: config name -> degradation class (instances are ``(clean, gen) -> degraded`` callables)
DEGRADATIONS: dict[str, type[Degradation]] = {
    "gaussian_noise": GaussianNoise,
    "motion_blur": MotionBlur,
    "rain": RainStreaks,
}


def build_degradation(name: str, **params: Any) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Build the registered degradation ``name`` with keyword ``params``.

    Raises:
        SlkdError: unknown name (the message lists the known ones), unknown parameter (named,
            with the accepted ones), or an invalid value (the parameter is named).
    """
    cls = DEGRADATIONS.get(name)
    if cls is None:
        known = ", ".join(sorted(DEGRADATIONS))
        raise SlkdError(f"unknown degradation {name!r}; known degradations: {known}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in accepted:
            raise SlkdError(
                f"degradation {name!r}: unknown parameter {key!r} (accepted: {', '.join(accepted)})"
            )
    try:
        return cls(**params)
    except SlkdError as exc:
        raise SlkdError(f"degradation {name!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise SlkdError(f"degradation {name!r}: invalid parameters ({exc})") from None
