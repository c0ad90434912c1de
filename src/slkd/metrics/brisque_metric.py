"""BRISQUE (Mittal, Moorthy and Bovik, IEEE TIP 2012), as the original LIVE release scores it.

One image, no ground truth, a *distortion* score: lower is better. ``brisquescore.m`` /
``brisque_feature.m``: 36 features, 18 at full scale and 18 at half scale. Per scale: MSCN
coefficients (:func:`slkd.metrics.matlab.matlab_mscn`, zero padding); a generalised Gaussian
fitted to them (shape, variance) and an asymmetric generalised Gaussian fitted to the products
of each coefficient with its neighbour along 4 orientations, taken with wrap-around (MATLAB
``circshift`` by ``[0 1]``, ``[1 0]``, ``[1 1]``, ``[-1 1]``) (shape, mean, left variance,
right variance). Both fits are moment matching against a table of shapes ``0.2:0.001:10``. The
half scale is MATLAB ``imresize(I, 0.5)`` (:func:`slkd.metrics.matlab.imresize_half`).
Features are scaled to [-1, 1] with the release's range file (``svm-scale -r allrange``) and
scored by its epsilon-SVR (RBF kernel, ``gamma = 0.05``): the score is the SVR output (nominally
0..100, can leave that range). The SVR parameters are bundled in ``data/`` (see
``data/BRISQUE_LICENSE.md``). Input conventions and round-off: :mod:`slkd.metrics.matlab`.

Degenerate images
    BRISQUE stays finite where the release's code would divide 0 by 0 (a side of the AGGD with
    no samples, all-zero coefficients): the missing standard deviation is taken as 0 and the
    shape as the table's first entry 0.2 (what MATLAB's ``min`` returns on NaN). The score of a
    flat image is then finite but meaningless, on the "very poor" side; for levels other than
    black it depends on level and size, because the zero padding of the MSCN filter makes the
    border non-flat.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from slkd.metrics.matlab import as_float64, finish, imresize_half, matlab_mscn, prepare_grey

__all__ = ["BRISQUE_NUM_FEATURES", "brisque", "brisque_features", "fit_aggd", "fit_ggd"]

BRISQUE_NUM_FEATURES = 36
# Shape table of the moment-matching fits: MATLAB 0.2:0.001:10 (9801 entries).
_GAMMA_TABLE_SIZE = 9801
# Neighbour offsets (rows, cols) of the paired products, as MATLAB circshift shifts.
_BRISQUE_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))

# The release's LIBSVM model (unchanged) and its svm-scale range file (same numbers, rewritten in
# svm-scale's format); provenance and licence in data/BRISQUE_LICENSE.md.
_BRISQUE_MODEL_FILE = "brisque_allmodel.txt"
_BRISQUE_RANGE_FILE = "brisque_allrange.txt"


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
    x = as_float64(x)
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
    x = as_float64(x)
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
    coeffs = matlab_mscn(grey, padding="zeros")[:, 0]  # N x H x W
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
    grey, unbatched = prepare_grey(img, "brisque_features", quantize)
    return finish(_brisque_features_grey(grey), unbatched)


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
    grey, unbatched = prepare_grey(img, "brisque", quantize)
    feats = _brisque_features_grey(grey)
    return finish(_svr_predict(feats, _load_brisque_model()), unbatched)
