"""Differentiable BRISQUE (Φ_N, docs/spec.md §2.4) and PIQE (Φ_E, §2.5) feature extractors.

The papers name the extractors ("BRISQUE-based", "PIQE-based") but give no equations; what is
here is the project's reconstruction [spec]. Everything is per channel and vectorised over
batch, channels and blocks: no Python loops over pixels or blocks.

Conventions (all [spec]):

* Maps are B×C×H×W. Reductions "per channel" are over H×W of each image and channel.
* MSCN (:func:`mscn`): the map is first centred per channel (its global mean subtracted; the
  MSCN map is invariant to this up to rounding, and it avoids cancellation in E[x²]−μ²), then
  μ = G∗x and σ = sqrt(max(G∗x² − μ², 0) + eps) with G a normalised separable Gaussian
  (7 taps, σ_g = 7/6) applied as two depthwise 1-D convolutions with reflect padding (replicate
  padding along a side shorter than or equal to the window radius, where reflect is undefined);
  N = (x − μ)/(σ + c).
* Pairwise products (:func:`pairwise_products`): indexed by the top-left corner (i, j) of each
  2×2 neighbourhood, so all four maps are (H−1)×(W−1) and aligned:
  horizontal N[i,j]·N[i,j+1], vertical N[i,j]·N[i+1,j], main diagonal N[i,j]·N[i+1,j+1],
  anti-diagonal N[i,j+1]·N[i+1,j].
* GGD/AGGD statistics by moments instead of BRISQUE's table look-up of α (see
  :func:`ggd_stats`, :func:`aggd_stats`).
* PIQE cues per non-overlapping k×k block of the MSCN map (see :func:`block_cues`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BRISQUE_STATS",
    "BrisqueExtractor",
    "IdentityExtractor",
    "NSSFeatures",
    "PIQE_CUES",
    "PiqeExtractor",
    "aggd_stats",
    "block_cues",
    "gaussian_window",
    "ggd_stats",
    "level_indices_from_sizes",
    "mscn",
    "pairwise_products",
    "piqe_extractors",
]

#: names of the last dimension of :func:`block_cues` / :class:`PiqeExtractor` output
PIQE_CUES = ("variance", "std_top", "std_bottom", "std_left", "std_right", "centre_surround")

#: names of the 18 per-scale statistics of :class:`BrisqueExtractor`
BRISQUE_STATS = ("ggd_shape", "ggd_variance") + tuple(
    f"{d}_{s}"
    for d in ("horizontal", "vertical", "diagonal", "antidiagonal")
    for s in ("shape", "mean", "left_variance", "right_variance")
)


def _check_map(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a B×C×H×W feature map, got shape {tuple(x.shape)}")


def gaussian_window(window: int = 7, sigma: float = 7 / 6, *, dtype=None, device=None) -> Tensor:
    """Normalised 1-D Gaussian of ``window`` (odd) taps centred on the middle one."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 1, got {window}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = window // 2
    d = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(d**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype or torch.get_default_dtype(), device=device)


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur of a B×C×H×W map, same size out.

    Two depthwise 1-D convolutions (``groups=C``): faster on CPU, forward and backward, than
    folding the channels into the batch of a one-channel convolution.
    """
    c, h, w = x.shape[1:]
    r = g.numel() // 2
    if not r:
        return x * g[0]
    mode_w = "reflect" if w > r else "replicate"
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode_w), g.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                 groups=c)
    mode_h = "reflect" if h > r else "replicate"
    return F.conv2d(F.pad(y, (0, 0, r, r), mode=mode_h), g.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)


def mscn(
    x: Tensor, window: int = 7, sigma: float = 7 / 6, c: float = 1e-2, eps: float = 1e-8
) -> Tensor:
    """Mean-subtracted contrast-normalised map N = (x − μ)/(σ + c), per channel.

    Args:
        x: B×C×H×W map.
        window: Gaussian taps per side [spec, 7 as in BRISQUE].
        sigma: Gaussian standard deviation [spec, 7/6 as in BRISQUE].
        c: stabilising constant [spec, 1e-2 on standardised features].
        eps: added to the local variance inside the square root so the gradient stays finite
            on flat regions [spec, 1e-8].
    """
    _check_map(x)
    g = gaussian_window(window, sigma, dtype=x.dtype, device=x.device)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    mu, m2 = _blur(torch.cat([x, x * x], dim=1), g).chunk(2, dim=1)
    var = (m2 - mu * mu).clamp_min(0.0)
    return (x - mu) / (torch.sqrt(var + eps) + c)


def pairwise_products(n: Tensor) -> Tensor:
    """The four neighbour products of N, stacked: B×C×4×(H−1)×(W−1).

    Order along dim 2: horizontal, vertical, main diagonal, anti-diagonal. Entry (i, j) of each
    map belongs to the 2×2 neighbourhood whose top-left pixel is (i, j):
    ``N[i,j]N[i,j+1]``, ``N[i,j]N[i+1,j]``, ``N[i,j]N[i+1,j+1]``, ``N[i,j+1]N[i+1,j]``.
    """
    _check_map(n)
    if n.shape[-2] < 2 or n.shape[-1] < 2:
        raise ValueError(f"pairwise products need H, W >= 2, got {tuple(n.shape[-2:])}")
    tl = n[..., :-1, :-1]
    tr = n[..., :-1, 1:]
    bl = n[..., 1:, :-1]
    br = n[..., 1:, 1:]
    return torch.stack([tl * tr, tl * bl, tl * br, tr * bl], dim=2)


def ggd_stats(n: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero-mean GGD moments of N over its last two dims: (..., 2) = (ρ, variance).

    ρ = E[N²]/E[|N|]² is a monotone proxy of the GGD shape α (π/2 for a Gaussian, 2 for a
    Laplacian; BRISQUE inverts it with a table instead); variance = E[N²] (BRISQUE's σ², the
    GGD being zero-mean). ``eps`` guards the division.
    """
    dims, count = (-2, -1), n.shape[-2] * n.shape[-1]
    # one fused reduction each (no |N| or N² temporaries, forward or backward)
    m2 = torch.linalg.vector_norm(n, dim=dims).square() / count
    m1 = torch.linalg.vector_norm(n, ord=1, dim=dims) / count
    return torch.stack([m2 / (m1 * m1 + eps), m2], dim=-1)


def aggd_stats(p: Tensor, eps: float = 1e-8) -> Tensor:
    """AGGD moments of a product map over its last two dims: (..., 4) =
    (shape proxy, mean, left variance, right variance).

    * left/right variance: σ_l² = Σ min(p,0)² / #{p<0}, σ_r² = Σ max(p,0)² / #{p>0}
      (BRISQUE's estimator; the counts are clamped to ≥ 1; the sums are differentiable, the
      counts are piecewise constant, i.e. zero gradient).
    * shape proxy: 1/R̂ with BRISQUE's asymmetry-corrected R̂ = r̂(γ̂³+1)(γ̂+1)/(γ̂²+1)²,
      r̂ = E[|p|]²/E[p²], γ̂ = σ_l/σ_r. It equals ρ of :func:`ggd_stats` for a symmetric sample
      and π/2 for any (asymmetric) Gaussian-shaped AGGD.
    * mean: the sample mean E[p] (the AGGD mean η = (β_r−β_l)Γ(2/α)/Γ(1/α) is exactly E[p];
      BRISQUE evaluates it through the looked-up α instead).
    ``eps`` guards divisions and square roots.
    """
    dims, count = (-2, -1), p.shape[-2] * p.shape[-1]
    neg = (p < 0).sum(dim=dims).clamp_min(1).to(p.dtype)
    pos = (p > 0).sum(dim=dims).clamp_min(1).to(p.dtype)
    # every moment from the two halves r = max(p, 0) and l = max(−p, 0) = r − p, with fused
    # reductions: E[p²] = (Σl² + Σr²)/n, E[|p|] = (Σl + Σr)/n, E[p] = (Σr − Σl)/n (half the
    # passes over the four product maps of the direct form, forward and backward)
    r = F.relu(p)
    l = r - p
    r1, l1 = r.sum(dim=dims), l.sum(dim=dims)
    r2 = torch.linalg.vector_norm(r, dim=dims).square()
    l2 = torch.linalg.vector_norm(l, dim=dims).square()
    lvar, rvar = l2 / neg, r2 / pos
    gamma = torch.sqrt(lvar + eps) / torch.sqrt(rvar + eps)
    m2 = (l2 + r2) / count
    m1 = (l1 + r1) / count
    rho = m2 / (m1 * m1 + eps)
    shape = rho * (gamma * gamma + 1) ** 2 / ((gamma**3 + 1) * (gamma + 1))
    return torch.stack([shape, (r1 - l1) / count, lvar, rvar], dim=-1)


@dataclass
class NSSFeatures:
    """Output of Φ_N: ``maps`` (N then the four products, per scale) and ``stats`` (B×C×18·S).

    ``stats`` is None for :class:`IdentityExtractor`.
    """

    maps: list[Tensor]
    stats: Tensor | None


class BrisqueExtractor(nn.Module):
    """Φ_N (docs/spec.md §2.4): MSCN map, four pairwise products and 18 moment statistics per
    channel and scale.

    Args:
        scales: 1, or 2 for a second pass on the map average-pooled by 2 [spec, default 1].
        window, sigma, c, eps: MSCN parameters, see :func:`mscn` [spec: 7, 7/6, 1e-2, 1e-8].
        stat_eps: guard of the moment ratios, see :func:`aggd_stats` [spec, 1e-8].

    ``forward(x)`` returns :class:`NSSFeatures` with ``maps`` = [N, horizontal, vertical,
    diagonal, anti-diagonal] for scale 1, followed by the same five for scale 2, and ``stats``
    B×C×18 (B×C×36 for two scales, scale 1 first; names in :data:`BRISQUE_STATS`).
    """

    def __init__(
        self,
        scales: int = 1,
        window: int = 7,
        sigma: float = 7 / 6,
        c: float = 1e-2,
        eps: float = 1e-8,
        stat_eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if scales not in (1, 2):
            raise ValueError(f"scales must be 1 or 2, got {scales}")
        gaussian_window(window, sigma)  # validates
        self.scales = scales
        self.window = window
        self.sigma = sigma
        self.c = c
        self.eps = eps
        self.stat_eps = stat_eps

    def extra_repr(self) -> str:
        return f"scales={self.scales}, window={self.window}, sigma={self.sigma:.4g}, c={self.c}"

    def _one_scale(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        n = mscn(x, self.window, self.sigma, self.c, self.eps)
        prods = pairwise_products(n)  # B×C×4×h×w
        b, ch = x.shape[:2]
        stats = torch.cat(
            [ggd_stats(n, self.stat_eps), aggd_stats(prods, self.stat_eps).reshape(b, ch, 16)],
            dim=-1,
        )
        return [n, *prods.unbind(dim=2)], stats

    def forward(self, x: Tensor) -> NSSFeatures:
        _check_map(x)
        if self.scales == 2 and (x.shape[-2] < 4 or x.shape[-1] < 4):
            raise ValueError(
                f"two BRISQUE scales need maps of at least 4×4, got {tuple(x.shape[-2:])}; "
                "use scales=1 for this level"
            )
        maps, stats = self._one_scale(x)
        if self.scales == 2:
            maps2, stats2 = self._one_scale(F.avg_pool2d(x, 2))
            maps = maps + maps2
            stats = torch.cat([stats, stats2], dim=-1)
        return NSSFeatures(maps, stats)


def _std(x: Tensor, dim, eps: float) -> Tensor:
    """Population std with ``eps²`` inside the root (finite gradient at zero variance)."""
    centred = x - x.mean(dim=dim, keepdim=True)
    return torch.sqrt(centred.pow(2).mean(dim=dim) + eps * eps)


def block_cues(n: Tensor, k: int, eps: float = 1e-6, ratio_eps: float = 0.1) -> Tensor:
    """PIQE cues of each non-overlapping k×k block of ``n``: B×C×nH×nW×6.

    The map is cropped to the largest multiple of k (top-left blocks kept); k is clipped to the
    map size. Cues (names in :data:`PIQE_CUES`), all population statistics:
    0 block variance v; 1–4 std of the top row, bottom row, left column, right column;
    5 std(centre)/(std(surround) + ratio_eps) with centre the (k−2)² interior and surround the
    4k−4 border ring — fixed to 1 for k < 3, where there is no interior.
    Stds carry ``eps²`` inside the root so gradients stay finite on flat blocks.
    """
    _check_map(n)
    if k < 1:
        raise ValueError(f"block size must be >= 1, got {k}")
    b, c, h, w = n.shape
    k = min(k, h, w)
    nh, nw = h // k, w // k
    blocks = (
        n[..., : nh * k, : nw * k].reshape(b, c, nh, k, nw, k).permute(0, 1, 2, 4, 3, 5)
    )  # B×C×nH×nW×k×k
    flat = blocks.reshape(b, c, nh, nw, k * k)
    centred = flat - flat.mean(dim=-1, keepdim=True)
    variance = centred.pow(2).mean(dim=-1)
    top = _std(blocks[..., 0, :], -1, eps)
    bottom = _std(blocks[..., -1, :], -1, eps)
    left = _std(blocks[..., :, 0], -1, eps)
    right = _std(blocks[..., :, -1], -1, eps)
    if k >= 3:
        # centre and ring statistics from block sums (ring = block − centre): no gather or copy
        # of the ring's pixels; population variances E[x²] − E[x]², clamped at 0
        n_ring, n_centre = 4 * k - 4, (k - 2) ** 2
        centre = blocks[..., 1:-1, 1:-1]
        c_sum, c_sq = centre.sum(dim=(-2, -1)), centre.pow(2).sum(dim=(-2, -1))
        b_sum, b_sq = flat.sum(dim=-1), flat.pow(2).sum(dim=-1)
        c_var = (c_sq / n_centre - (c_sum / n_centre) ** 2).clamp_min(0.0)
        r_var = ((b_sq - c_sq) / n_ring - ((b_sum - c_sum) / n_ring) ** 2).clamp_min(0.0)
        ratio = torch.sqrt(c_var + eps * eps) / (torch.sqrt(r_var + eps * eps) + ratio_eps)
    else:
        ratio = torch.ones_like(variance)
    return torch.stack([variance, top, bottom, left, right, ratio], dim=-1)


class PiqeExtractor(nn.Module):
    """Φ_E (docs/spec.md §2.5): MSCN map, then PIQE block cues (see :func:`block_cues`).

    Args:
        block: block size k at full resolution [spec, 8 as in PIQE's 16-pixel blocks halved].
        level_index: resolution level of the tapped feature (0 full, 1 half, …); the block
            size is ``max(min_block, block // 2**level_index)`` [spec].
        min_block: smallest block size [spec, 2].
        tau, temperature: activity weight w = sigmoid((v_T − tau)/temperature) [spec, 0.1,
            0.02].
        window, sigma, c, eps: MSCN parameters, see :func:`mscn`.
        std_eps: guard inside the block stds [spec, 1e-6].
        ratio_eps: guard of the centre/surround ratio's denominator [spec, 0.1; keeps the cue
            and its gradient bounded when the surround is flat].

    ``forward(x)`` returns the B×C×nH×nW×6 cue tensor (variance first).
    """

    def __init__(
        self,
        block: int = 8,
        level_index: int = 0,
        min_block: int = 2,
        tau: float = 0.1,
        temperature: float = 0.02,
        window: int = 7,
        sigma: float = 7 / 6,
        c: float = 1e-2,
        eps: float = 1e-8,
        std_eps: float = 1e-6,
        ratio_eps: float = 0.1,
    ) -> None:
        super().__init__()
        if block < 1 or min_block < 1:
            raise ValueError(f"block ({block}) and min_block ({min_block}) must be >= 1")
        if level_index < 0:
            raise ValueError(f"level_index must be >= 0, got {level_index}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        gaussian_window(window, sigma)  # validates
        self.block = block
        self.level_index = level_index
        self.min_block = min_block
        self.tau = tau
        self.temperature = temperature
        self.window = window
        self.sigma = sigma
        self.c = c
        self.eps = eps
        self.std_eps = std_eps
        self.ratio_eps = ratio_eps

    @property
    def block_size(self) -> int:
        return max(self.min_block, self.block // 2**self.level_index)

    def extra_repr(self) -> str:
        return (
            f"block_size={self.block_size}, level_index={self.level_index}, tau={self.tau}, "
            f"temperature={self.temperature}"
        )

    def activity_weight(self, v_teacher: Tensor) -> Tensor:
        """Soft activity weight sigmoid((v_T − τ)/t) of the teacher's block variance."""
        return torch.sigmoid((v_teacher - self.tau) / self.temperature)

    def forward(self, x: Tensor) -> Tensor:
        n = mscn(x, self.window, self.sigma, self.c, self.eps)
        return block_cues(n, self.block_size, self.std_eps, self.ratio_eps)

    def distance(self, s: Tensor, t: Tensor, eps: float = 1e-8) -> Tensor:
        """One level of L_ET: mean(w ⊙ |Φ_E(S) − Φ_E(T)|)/mean(w), w the activity weight of the
        teacher's block variance broadcast over the cues; ``eps`` guards the division."""
        cs = self(s)
        with torch.no_grad():
            ct = self(t)
            w = self.activity_weight(ct[..., 0]).unsqueeze(-1)
        return (w * (cs - ct).abs()).mean() / (w.mean() + eps)


class IdentityExtractor(nn.Module):
    """Ablation ``extractor_nc: identity`` / ``extractor_et: identity`` (docs/spec.md §2.7): the
    losses compare the SCM features directly with plain L1."""

    def forward(self, x: Tensor) -> NSSFeatures:
        return NSSFeatures([x], None)

    def distance(self, s: Tensor, t: Tensor, eps: float = 1e-8) -> Tensor:
        """One level of L_ET as plain L1: mean|S − T|."""
        return (s - t).abs().mean()


def piqe_extractors(level_indices: Sequence[int], **kwargs) -> list[PiqeExtractor]:
    """One :class:`PiqeExtractor` per tapped level, sharing ``kwargs``."""
    return [PiqeExtractor(level_index=int(i), **kwargs) for i in level_indices]


def level_indices_from_sizes(
    feature_sizes: Sequence[Sequence[int]], image_size: Sequence[int]
) -> list[int]:
    """Resolution level of each feature map: round(log2(image H / feature H)), ≥ 0.

    For Restormer's decoder taps (``decoder_level3`` … ``refinement``) this gives 2, 1, 0, 0.
    """
    out = []
    for size in feature_sizes:
        ratio = float(image_size[0]) / float(size[0])
        out.append(max(0, int(round(math.log2(ratio)))))
    return out
