"""PIQE (Venkatanath et al., NCC 2015), as MATLAB's ``piqe`` computes it; lower is better.

The grey image (:func:`slkd.metrics.matlab.prepare_grey`) is padded at the bottom/right to a
multiple of 16 (symmetric, as the public ports of MATLAB's code do; the padded blocks count like
the others), rescaled to ``round(255 * I / max(I))``, normalised to MSCN
(:func:`slkd.metrics.matlab.matlab_mscn`, replicate padding), and cut into 16 x 16 blocks. A
block is *active* when the variance of its MSCN values (unbiased) exceeds 0.1. An active block
shows a *noticeable artifact* when any 6-pixel segment along one of its 4 borders (11
overlapping segments per border) has a standard deviation below 0.1, and *noise* when
``sigma > 2 * beta``, with ``sigma`` the block's standard deviation and
``beta = |sigma - r| / max(sigma, r)``, ``r`` the ratio of the standard deviations of the
block's 2 centre columns (8 and 9, 1-based) and of its "surround". As MATLAB computes it, the
surround is the block without columns 8 and *10* (it deletes column 8, then column 9 of what is
left); this quirk is reproduced because it moves scores. Block distortion
``D = [artifact] (1 - var) + [noise] var``; score
``100 (sum of D over active blocks + 1) / (number of active blocks + 1)``. A flat image has no
active block, so PIQE = 100, as MATLAB documents.
"""

from __future__ import annotations

import torch

from slkd.metrics.matlab import PEAK, finish, matlab_mscn, prepare_grey, round_half_up

__all__ = ["piqe"]

PIQE_BLOCK = 16
PIQE_ACTIVITY_THRESHOLD = 0.1
PIQE_IMPAIRED_THRESHOLD = 0.1
PIQE_SEGMENT = 6
PIQE_C = 1.0


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
    grey = torch.where(peak > 0, round_half_up(PEAK * grey / peak.clamp_min(1e-300)), grey)
    coeffs = matlab_mscn(grey, padding="replicate")[:, 0]  # N x H' x W'
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
    grey, unbatched = prepare_grey(img, "piqe", quantize)
    return finish(_piqe_grey(grey), unbatched)
