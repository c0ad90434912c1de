"""Tests for the no-reference metrics BRISQUE and PIQE (slkd.metrics.brisque_metric and
slkd.metrics.piqe_metric, on the MATLAB helpers of slkd.metrics.matlab).

* calibration against the reference values of docs/spec.md §6 (MATLAB ``piqe`` and
  the original BRISQUE release) on the five images of ``iqa-calibration`` -- skipped when the
  shared data folder is absent;
* behaviour on synthetic images (noise, flat images, batches, grey/RGB, bad input);
* hand-checkable internals (MSCN, GGD/AGGD fits, MATLAB imresize).
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from slkd.data import read_image
from slkd.metrics import (
    METRIC_NAMES,
    MetricInputError,
    brisque,
    brisque_features,
    create_metric,
    piqe,
    psnr,
    ssim,
)
from slkd.metrics import brisque_metric as brisque_module
from slkd.metrics import matlab
from slkd.metrics import piqe_metric as piqe_module

REPO = Path(__file__).resolve().parents[1]

# The BRISQUE/PIQE reference values of docs/spec.md §6.
REFERENCE = {
    "I03.bmp": (94.6421, 100.00),
    "I04.bmp": (-0.1076, 21.62),
    "I06.bmp": (0.9929, 35.86),
    "I08.bmp": (5.3583, 41.15),
    "I19.bmp": (72.2617, 76.95),
}
PIQE_TOLERANCE = 0.5


def _brisque_tolerance(ref: float) -> float:
    return max(2.0, 0.05 * abs(ref))


def _data_root() -> Path:
    env = os.environ.get("SLKD_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _calibration_dir() -> Path:
    folder = _data_root() / "iqa-calibration"
    if not folder.is_dir():
        pytest.skip(
            f"calibration images not found at {folder} (set SLKD_DATA to the shared data folder)"
        )
    return folder


@pytest.fixture(scope="module")
def calibration_batch() -> tuple[list[str], torch.Tensor]:
    folder = _calibration_dir()
    names = sorted(REFERENCE)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        pytest.skip(f"calibration images missing in {folder}: {', '.join(missing)}")
    return names, torch.stack([read_image(folder / n).tensor for n in names])


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    with resources.as_file(resources.files("slkd.assets") / "chelsea.png") as path:
        return read_image(path).tensor  # 3 x 300 x 451, smooth fur and background


# ------------------------------------------------------------------------------------------
# Calibration on real images
# ------------------------------------------------------------------------------------------


@pytest.mark.data
def test_piqe_matches_matlab_reference(calibration_batch):
    names, batch = calibration_batch
    scores = piqe(batch)
    for name, value in zip(names, scores.tolist()):
        ref = REFERENCE[name][1]
        assert abs(value - ref) <= PIQE_TOLERANCE, f"{name}: PIQE {value:.3f}, reference {ref}"


@pytest.mark.data
def test_brisque_matches_original_release(calibration_batch):
    names, batch = calibration_batch
    scores = brisque(batch)
    for name, value in zip(names, scores.tolist()):
        ref = REFERENCE[name][0]
        tol = _brisque_tolerance(ref)
        assert abs(value - ref) <= tol, f"{name}: BRISQUE {value:.4f}, ref {ref} (±{tol:.2f})"


@pytest.mark.data
def test_calibration_images_single_equals_batched(calibration_batch):
    _, batch = calibration_batch
    batch = batch[[0, 4]]  # I03 and I19: the two with flat (saturated) regions
    for metric in (brisque, piqe):
        batched = metric(batch)
        singles = torch.stack([metric(img) for img in batch])
        # the batch only changes the order of the final sums (last-bit differences)
        torch.testing.assert_close(batched, singles, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Behaviour on synthetic images
# ------------------------------------------------------------------------------------------


def test_gaussian_noise_raises_both_scores(cat):
    gen = torch.Generator().manual_seed(0)
    noisy = (cat + torch.randn(cat.shape, generator=gen) * (25 / 255)).clamp(0, 1)
    for metric in (brisque, piqe):
        clean_score, noisy_score = metric(torch.stack([cat, noisy])).tolist()
        assert noisy_score > clean_score + 5, (metric.__name__, clean_score, noisy_score)


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_flat_image_gives_finite_documented_value(level, channels):
    img = torch.full((channels, 48, 64), level)
    assert piqe(img).item() == 100.0  # no active block: (0 + C) / (0 + C) * 100
    b = brisque(img)
    assert torch.isfinite(b)
    assert b.item() > 50  # far on the "poor" side of the scale
    if level == 0.0:  # all MSCN coefficients 0: every shape 0.2, every variance 0
        assert b.item() == pytest.approx(116.08, abs=0.01)


def test_batch_is_per_image_and_shapes(cat):
    gen = torch.Generator().manual_seed(1)
    crop = cat[:, 40:168, 100:260]  # 128 x 160
    other = torch.rand(crop.shape, generator=gen)
    batch = torch.stack([crop, other])
    for metric in (brisque, piqe):
        out = metric(batch)
        assert out.shape == (2,) and out.dtype == torch.float64
        single = metric(crop)
        assert single.shape == () and single.dtype == torch.float64
        torch.testing.assert_close(out[0], single, rtol=0, atol=1e-9)
        torch.testing.assert_close(out[1], metric(other), rtol=0, atol=1e-9)


def test_grey_and_rgb_accepted_and_consistent(cat):
    cat = cat[:, 40:168, 100:260]
    grey_levels = matlab.rgb_to_gray(torch.round(cat * 255))  # MATLAB rgb2gray, 1 x H x W
    grey = grey_levels / 255
    grey_as_rgb = grey.expand(3, -1, -1)
    for metric in (brisque, piqe):
        # RGB is measured on its rgb2gray luminance, so the grey image gives the same score ...
        torch.testing.assert_close(metric(cat), metric(grey), rtol=0, atol=1e-9)
        # ... and a grey image stored as 3 equal channels too.
        torch.testing.assert_close(metric(grey_as_rgb), metric(grey), rtol=0, atol=1e-9)


def test_input_is_quantised_like_an_8bit_file(cat):
    cat = cat[:, 40:168, 100:260]
    jitter = (torch.rand(cat.shape, generator=torch.Generator().manual_seed(2)) - 0.5) * 0.9 / 255
    off_grid = cat + jitter  # rounds back to the same 8-bit levels
    out_of_range = cat.clone()
    out_of_range[:, :4] = 1.7  # clamps to 1
    clamped = cat.clone()
    clamped[:, :4] = 1.0
    for metric in (brisque, piqe):
        torch.testing.assert_close(metric(off_grid), metric(cat), rtol=0, atol=1e-12)
        torch.testing.assert_close(metric(out_of_range), metric(clamped), rtol=0, atol=1e-12)
        assert torch.isfinite(metric(off_grid, quantize=False))


@pytest.mark.parametrize(
    "shape",
    [
        (64, 64),
        (1, 1, 1, 64, 64),
        (2, 64, 64),
        (4, 64, 64),
        (1, 2, 64, 64),
        (3, 15, 64),
        (1, 64, 8),
    ],
)
def test_bad_shapes_rejected_naming_the_shape(shape):
    img = torch.rand(shape)
    for metric in (brisque, piqe, brisque_features):
        with pytest.raises(ValueError) as info:
            metric(img)
        assert isinstance(info.value, MetricInputError)
        msg = str(info.value)
        assert str(tuple(shape)) in msg or f"{shape[-2]} x {shape[-1]}" in msg, msg


def test_empty_batch_and_non_float_rejected():
    with pytest.raises(ValueError, match=r"\(0, 3, 32, 32\)"):
        brisque(torch.rand(0, 3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        piqe(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError):
        piqe(np.zeros((3, 32, 32)))
    bad = torch.rand(3, 32, 32)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        brisque(bad, quantize=False)


def test_piqe_pads_sizes_that_are_not_multiples_of_16(cat):
    # 300 x 451 is padded (symmetric, bottom/right) to 304 x 464, as MATLAB piqe does.
    padded = piqe_module._pad_symmetric_post(torch.arange(5.0).view(1, 1, 1, 5), 0, 3)
    assert padded.flatten().tolist() == [0, 1, 2, 3, 4, 4, 3, 2]
    score = piqe(cat)
    assert 0 <= score.item() <= 100


# ------------------------------------------------------------------------------------------
# Internals checked by hand
# ------------------------------------------------------------------------------------------


def test_mscn_of_constant_image_is_zero():
    x = torch.full((2, 1, 20, 24), 123.0, dtype=torch.float64)
    # Replicate padding (PIQE): zero everywhere.
    assert matlab.matlab_mscn(x, padding="replicate").abs().max().item() < 1e-9
    # Zero padding (BRISQUE, MATLAB filter2 'same'): zero away from the 3-pixel border, where
    # the window is entirely inside the image; the border sees the zeros outside.
    z = matlab.matlab_mscn(x, padding="zeros")
    assert z[..., 3:-3, 3:-3].abs().max().item() < 1e-9
    assert z[..., 0, 0].min().item() > 0.1


def test_mscn_hand_computed_pixel():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 9, 9, generator=gen, dtype=torch.float64) * 255
    t = torch.arange(-3, 4, dtype=torch.float64)
    g1 = torch.exp(-(t**2) / (2 * (7 / 6) ** 2))
    w = torch.outer(g1, g1)
    w = w / w.sum()  # fspecial('gaussian', 7, 7/6)
    patch = x[0, 0, 1:8, 1:8]  # window centred on pixel (4, 4)
    mu = (w * patch).sum()
    sigma = math.sqrt(abs((w * patch * patch).sum() - mu * mu))
    expected = (x[0, 0, 4, 4] - mu) / (sigma + 1)
    got = matlab.matlab_mscn(x, padding="zeros")[0, 0, 4, 4]
    assert abs(got.item() - expected.item()) < 1e-10


def test_ggd_fit_recovers_known_shapes():
    gen = torch.Generator().manual_seed(4)
    gauss = torch.randn(1_000_000, generator=gen, dtype=torch.float64) * 0.7
    u = torch.rand(1_000_000, generator=gen, dtype=torch.float64)
    laplace = -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())  # unit-scale Laplacian
    shape, var = brisque_module.fit_ggd(torch.stack([gauss, laplace]))
    assert abs(shape[0].item() - 2.0) < 0.05
    assert abs(shape[1].item() - 1.0) < 0.05
    assert abs(var[0].item() - 0.49) < 0.01
    assert abs(var[1].item() - 2.0) < 0.05  # Laplace(b=1) variance 2 b^2
    # the table lookup itself: the GGD moment ratio of a = 2 is pi / 2
    shapes, r_ggd, _ = brisque_module._gamma_table("cpu")
    assert len(shapes) == 9801 and shapes[0].item() == pytest.approx(0.2)
    assert shapes[-1].item() == pytest.approx(10.0)
    assert r_ggd[1800].item() == pytest.approx(math.pi / 2)  # shape 0.2 + 1.8 = 2


def test_aggd_fit_recovers_two_sided_gaussian():
    gen = torch.Generator().manual_seed(5)
    n = 1_000_000
    sl, sr = 1.0, 2.0
    left = torch.rand(n, generator=gen) < sl / (sl + sr)  # AGGD with shape 2: P(x < 0) = sl/(sl+sr)
    mag = torch.randn(n, generator=gen, dtype=torch.float64).abs()
    x = torch.where(left, -sl * mag, sr * mag)
    shape, mean, lvar, rvar = brisque_module.fit_aggd(x.unsqueeze(0))
    assert abs(shape.item() - 2.0) < 0.05
    assert abs(lvar.item() - sl**2) < 0.02
    assert abs(rvar.item() - sr**2) < 0.05
    # BRISQUE's mean parameter for shape 2: (sr - sl) G(1)/G(1/2) sqrt(G(1/2)/G(3/2))
    # = (sr - sl) sqrt(2 / pi), the mean of the two-sided Gaussian.
    expected_mean = (sr - sl) * (math.gamma(1.0) / math.gamma(0.5)) * math.sqrt(
        math.gamma(0.5) / math.gamma(1.5)
    )
    assert abs(mean.item() - expected_mean) < 0.02
    # symmetric data: mean parameter 0
    _, mean_sym, lv, rv = brisque_module.fit_aggd(torch.randn(1, n, generator=gen, dtype=torch.float64))
    assert abs(mean_sym.item()) < 0.01 and abs(lv.item() - rv.item()) < 0.01


def test_fits_on_degenerate_samples_are_finite():
    zeros = torch.zeros(1, 100, dtype=torch.float64)
    positive = torch.rand(1, 100, dtype=torch.float64) + 0.1
    shape, var = brisque_module.fit_ggd(zeros)
    assert shape.item() == pytest.approx(0.2) and var.item() == 0.0
    for sample in (zeros, positive):
        out = brisque_module.fit_aggd(sample)
        assert all(torch.isfinite(v).all() for v in out)
    _, _, lvar, rvar = brisque_module.fit_aggd(positive)
    assert lvar.item() == 0.0 and rvar.item() > 0


def test_imresize_half_matches_matlab_bicubic_antialias_taps():
    # MATLAB imresize(x, 0.5): kernel 0.5 * cubic(x / 2) (a = -0.5), 8 taps at distances
    # +-0.5, +-1.5, +-2.5, +-3.5 from the output position, symmetric padding.
    def cubic(d):
        d = abs(d)
        if d <= 1:
            return 1.5 * d**3 - 2.5 * d**2 + 1
        if d <= 2:
            return -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2
        return 0.0

    taps = np.array([0.5 * cubic(d / 2) for d in (3.5, 2.5, 1.5, 0.5, -0.5, -1.5, -2.5, -3.5)])
    assert taps.sum() == pytest.approx(1.0)
    assert taps[3] == pytest.approx(0.43359375) and taps[0] == pytest.approx(-0.01171875)

    rng = np.random.default_rng(6)
    h, w = 12, 18
    img = rng.uniform(0, 255, size=(h, w))
    padded = np.pad(img, 3, mode="symmetric")
    rows = np.stack([padded[2 * i : 2 * i + 8, :].T @ taps for i in range(h // 2)])  # h/2 x (w+6)
    expected = np.stack([rows[:, 2 * j : 2 * j + 8] @ taps for j in range(w // 2)], axis=1)
    got = matlab.imresize_half(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)

    # odd sizes give ceil(n / 2) outputs and constants stay constant
    const = torch.full((1, 1, 7, 9), 42.0, dtype=torch.float64)
    out = matlab.imresize_half(const)
    assert out.shape == (1, 1, 4, 5)
    assert (out - 42.0).abs().max().item() < 1e-9


def test_rgb_to_gray_is_matlab_rgb2gray():
    levels = torch.tensor([[[255.0]], [[0.0]], [[0.0]]])
    assert matlab.rgb_to_gray(levels).item() == 76  # round(0.298936 * 255) = round(76.229)
    levels = torch.tensor([[[10.0]], [[200.0]], [[30.0]]])
    y = 0.298936021293775 * 10 + 0.587043074451121 * 200 + 0.114020904255103 * 30
    expected = math.floor(y + 0.5)
    assert matlab.rgb_to_gray(levels).item() == expected


def test_brisque_features_layout(cat):
    f = brisque_features(cat)
    assert f.shape == (36,) and f.dtype == torch.float64
    shapes = f[[0, 2, 6, 10, 14, 18, 20, 24, 28, 32]]
    assert ((shapes >= 0.2) & (shapes <= 10)).all()
    variances = f[[1, 4, 5, 8, 9, 12, 13, 16, 17, 19, 22, 23, 26, 27, 30, 31, 34, 35]]
    assert (variances > 0).all()


def test_bundled_svr_parameters():
    model = brisque_module._load_brisque_model()
    assert model.support_vectors.shape == (774, 36)
    assert model.coefficients.shape == (774,)
    assert model.rho == -153.591 and model.gamma == 0.05
    assert (model.lower, model.upper) == (-1.0, 1.0)
    assert model.feature_min[0].item() == 0.338 and model.feature_max[0].item() == 10.0
    assert (model.feature_max > model.feature_min).all()


# ------------------------------------------------------------------------------------------
# Lookup by name
# ------------------------------------------------------------------------------------------


def test_create_metric():
    assert set(METRIC_NAMES) == {"psnr", "ssim", "brisque", "piqe"}
    for name, lower in [("brisque", True), ("piqe", True), ("psnr", False), ("ssim", False)]:
        m = create_metric(name)
        assert m.name == name and m.lower_better is lower
        assert m.needs_reference is (name in ("psnr", "ssim"))
    assert create_metric(" BRISQUE ").name == "brisque"
    with pytest.raises(ValueError, match="niqe"):
        create_metric("niqe")


def test_create_metric_calls_the_functions(cat):
    cat = cat[:, 40:168, 100:260]
    gen = torch.Generator().manual_seed(7)
    noisy = (cat + torch.randn(cat.shape, generator=gen) * 0.05).clamp(0, 1)
    assert create_metric("brisque")(cat).item() == brisque(cat).item()
    assert create_metric("piqe")(cat).item() == piqe(cat).item()
    assert create_metric("psnr")(noisy, cat).item() == psnr(noisy, cat).item()
    assert create_metric("ssim")(noisy, cat, y_channel=True).item() == ssim(
        noisy, cat, y_channel=True
    ).item()
