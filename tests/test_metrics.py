"""Golden-value tests for slkd.metrics: closed-form cases and scikit-image as an independent
reference (uint8 arrays, data_range=255, Wang et al. SSIM settings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slkd.errors import SlkdError
from slkd.metrics import (
    FULLREF_METRICS,
    MetricInputError,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
    to_uint8_levels,
)

skmetrics = pytest.importorskip("skimage.metrics")
skcolor = pytest.importorskip("skimage.color")

H, W = 48, 64


# ------------------------------------------------------------------------------------------
# Helpers: test images as uint8 numpy (H x W x C, the reference's layout) and torch (C x H x W)
# ------------------------------------------------------------------------------------------


def _pair_u8(seed: int, channels: int = 3, h: int = H, w: int = W, noise: float = 8.0):
    """A smooth-ish uint8 reference and a noisy uint8 'restoration' of it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(h // 8 + 2, w // 8 + 2, channels))
    # Bilinear-ish upsampling by repetition + mild texture so SSIM sees structure.
    base = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
    base = base + rng.normal(0, 12, size=base.shape)
    ref = np.clip(np.rint(base), 0, 255).astype(np.uint8)
    out = np.clip(np.rint(ref + rng.normal(0, noise, size=ref.shape)), 0, 255).astype(np.uint8)
    return out, ref


def _to_torch(u8: np.ndarray) -> torch.Tensor:
    """H x W x C uint8 -> C x H x W float32 in [0, 1], as a data loader would produce."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _sk_y(u8: np.ndarray) -> np.ndarray:
    """Reference luma from scikit-image: rgb2ycbcr of the float image, channel 0 (16..235)."""
    return skcolor.rgb2ycbcr(u8.astype(np.float64) / 255.0)[..., 0]


def _crop(a: np.ndarray, k: int) -> np.ndarray:
    return a[k : a.shape[0] - k, k : a.shape[1] - k] if k else a


def _sk_ssim(a: np.ndarray, b: np.ndarray, channel_axis=None) -> float:
    return skmetrics.structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=channel_axis,
    )


# ------------------------------------------------------------------------------------------
# Quantisation and colour conversion
# ------------------------------------------------------------------------------------------


def test_quantize_is_exact_on_8bit_images_and_idempotent():
    levels = torch.arange(256, dtype=torch.float32)
    x = levels / 255.0  # float32, as read from 8-bit files
    assert torch.equal(to_uint8_levels(x), levels.double())
    q = quantize(x)
    assert q.dtype == torch.float64
    assert torch.equal(quantize(q), q)
    assert torch.equal(to_uint8_levels(q), levels.double())


def test_quantize_clamps_and_rounds_half_up():
    x = torch.tensor([-0.3, 0.0, 0.5, 0.2 / 255, 0.7 / 255, 1.0, 1.7])
    expected = torch.tensor([0.0, 0.0, 128.0, 0.0, 1.0, 255.0, 255.0], dtype=torch.float64)
    assert torch.equal(to_uint8_levels(x), expected)
    assert torch.allclose(quantize(x), expected / 255.0, rtol=0, atol=0)


def test_rgb_to_y_matches_hand_formula_and_skimage():
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.2, 0.4, 0.6]])
    img = rgb.T.reshape(3, 2, 2)  # 3 x 2 x 2, pixel i = rgb[i]
    y = rgb_to_y(img)
    assert y.shape == (1, 2, 2) and y.dtype == torch.float64
    hand = [16.0, 235.0, 16.0 + 65.481, 16.0 + 65.481 * 0.2 + 128.553 * 0.4 + 24.966 * 0.6]
    assert y.flatten().tolist() == pytest.approx(hand, abs=1e-5)  # float32 input

    u8, _ = _pair_u8(0)
    y4 = rgb_to_y(torch.from_numpy(u8 / 255.0).permute(2, 0, 1).unsqueeze(0))
    assert y4.shape == (1, 1, H, W)
    np.testing.assert_allclose(y4[0, 0].numpy(), _sk_y(u8), rtol=0, atol=1e-10)


def test_rgb_to_y_rejects_non_rgb():
    with pytest.raises(MetricInputError, match="3 \\(RGB\\) channels, got 1"):
        rgb_to_y(torch.zeros(1, 8, 8))


# ------------------------------------------------------------------------------------------
# PSNR
# ------------------------------------------------------------------------------------------


def test_psnr_closed_form():
    # ref = 0.5 everywhere -> level 128 after rounding; img differs by d = 3 levels on
    # k = 10 of the C*H*W = 3*16*20 = 960 samples: MSE = k d^2 / 960.
    ref = torch.full((3, 16, 20), 0.5)
    img = ref.clone()
    flat = img.view(-1)
    idx = torch.arange(0, 960, 96)  # 10 positions spread over channels
    flat[idx] = (128 + 3) / 255.0
    mse = 10 * 3**2 / 960
    expected = 10 * math.log10(255**2 / mse)
    got = psnr(img, ref)
    assert got.dim() == 0 and got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(58.4111, abs=1e-4)  # the literal value, for the reader


def test_psnr_quantize_hides_sub_level_errors():
    ref = torch.full((3, 8, 8), 0.5)
    img = ref + 0.3 / 255  # 127.8 -> rounds to 128 like the reference
    assert psnr(img, ref).item() == math.inf
    # Without quantisation the offset is 0.3 levels everywhere: PSNR = 20 log10(255 / 0.3).
    assert psnr(img, ref, quantize=False).item() == pytest.approx(
        20 * math.log10(255 / 0.3), abs=1e-4
    )
    # Out-of-range outputs are clamped before comparison.
    white = torch.ones(1, 8, 8)
    assert psnr(white + 0.4, white).item() == math.inf


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_rgb_matches_skimage(crop):
    out, ref = _pair_u8(1)
    expected = skmetrics.peak_signal_noise_ratio(_crop(ref, crop), _crop(out, crop), data_range=255)
    got = psnr(_to_torch(out), _to_torch(ref), crop_border=crop).item()
    assert got == pytest.approx(expected, abs=1e-10)


def test_psnr_quantizes_float_outputs_like_saving_to_png():
    out, ref = _pair_u8(2)
    rng = np.random.default_rng(20)
    # A float model output: off the 8-bit grid and slightly out of range.
    raw = out.astype(np.float64) / 255.0 + rng.uniform(-0.45, 0.45, size=out.shape) / 255.0
    raw[0, 0, 0], raw[1, 1, 1] = -0.02, 1.03
    saved = np.clip(np.floor(np.clip(raw, 0, 1) * 255 + 0.5), 0, 255).astype(np.uint8)
    expected = skmetrics.peak_signal_noise_ratio(ref, saved, data_range=255)
    got = psnr(torch.from_numpy(raw).permute(2, 0, 1), _to_torch(ref)).item()
    assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("crop", [0, 3])
def test_psnr_y_matches_skimage(crop):
    out, ref = _pair_u8(3)
    y_out, y_ref = _crop(_sk_y(out), crop), _crop(_sk_y(ref), crop)
    expected = skmetrics.peak_signal_noise_ratio(y_ref, y_out, data_range=255)
    got = psnr(_to_torch(out), _to_torch(ref), y_channel=True, crop_border=crop).item()
    assert got == pytest.approx(expected, abs=1e-9)

    # MATLAB-compatible: Y rounded to integers (halves up) before comparison.
    expected_m = skmetrics.peak_signal_noise_ratio(
        np.floor(y_ref + 0.5), np.floor(y_out + 0.5), data_range=255
    )
    got_m = psnr(
        _to_torch(out), _to_torch(ref), y_channel=True, crop_border=crop, matlab_compatible=True
    ).item()
    assert got_m == pytest.approx(expected_m, abs=1e-9)
    assert abs(got_m - got) > 1e-3  # the rounding is visible on real images


def test_psnr_matlab_rounding_closed_form():
    # Grey 128 has Y = 16 + 128 * 219 / 255 = 125.929...; raising blue by one level adds
    # 24.966 / 255 = 0.0979 to Y, which rounds back to 126 in MATLAB but not in float.
    ref = torch.full((3, 10, 10), 128 / 255.0)
    img = ref.clone()
    img[2, 4, 7] = 129 / 255.0
    dy = 24.966 / 255.0
    expected = 10 * math.log10(255**2 / (dy**2 / 100))
    assert psnr(img, ref, y_channel=True).item() == pytest.approx(expected, abs=1e-8)
    assert psnr(img, ref, y_channel=True, matlab_compatible=True).item() == math.inf


def test_y_channel_on_grey_image_uses_it_as_luminance():
    out, ref = _pair_u8(4, channels=1)
    a, b = _to_torch(out), _to_torch(ref)
    for fn in (psnr, ssim):
        assert fn(a, b, y_channel=True).item() == fn(a, b).item()
        assert fn(a, b, y_channel=True, matlab_compatible=True).item() == fn(a, b).item()
    expected = skmetrics.peak_signal_noise_ratio(ref[..., 0], out[..., 0], data_range=255)
    assert psnr(a, b, y_channel=True).item() == pytest.approx(expected, abs=1e-10)


# ------------------------------------------------------------------------------------------
# SSIM
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_rgb_matches_skimage(crop):
    out, ref = _pair_u8(5)
    expected = _sk_ssim(_crop(out, crop), _crop(ref, crop), channel_axis=2)
    got = ssim(_to_torch(out), _to_torch(ref), crop_border=crop).item()
    assert got == pytest.approx(expected, abs=1e-10)
    assert 0.3 < got < 0.99  # a non-trivial case


@pytest.mark.parametrize("matlab", [False, True])
def test_ssim_y_matches_skimage(matlab):
    out, ref = _pair_u8(6)
    y_out, y_ref = _crop(_sk_y(out), 2), _crop(_sk_y(ref), 2)
    if matlab:
        y_out, y_ref = np.floor(y_out + 0.5), np.floor(y_ref + 0.5)
    expected = _sk_ssim(y_out, y_ref)
    got = ssim(
        _to_torch(out), _to_torch(ref), y_channel=True, crop_border=2, matlab_compatible=matlab
    ).item()
    assert got == pytest.approx(expected, abs=1e-10)


def test_ssim_grey_matches_skimage():
    out, ref = _pair_u8(7, channels=1, h=23, w=31)
    expected = _sk_ssim(out[..., 0], ref[..., 0])
    assert ssim(_to_torch(out), _to_torch(ref)).item() == pytest.approx(expected, abs=1e-10)


def test_ssim_single_valid_window_by_hand():
    # An 11 x 11 image has exactly one 'valid' window: SSIM is the weighted-statistics formula
    # evaluated once, with the normalised 11-tap Gaussian (sigma 1.5) as weights.
    out, ref = _pair_u8(8, channels=1, h=11, w=11, noise=20.0)
    x, y = out[..., 0].astype(np.float64), ref[..., 0].astype(np.float64)
    t = np.arange(-5, 6)
    g = np.exp(-(t**2) / (2 * 1.5**2))
    wgt = np.outer(g, g) / np.outer(g, g).sum()
    mx, my = (wgt * x).sum(), (wgt * y).sum()
    vx, vy = (wgt * (x - mx) ** 2).sum(), (wgt * (y - my) ** 2).sum()
    cxy = (wgt * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(_to_torch(out), _to_torch(ref)).item() == pytest.approx(expected, abs=1e-12)


def test_ssim_constant_images_closed_form():
    # Flat images have zero variance and covariance: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 100.0, 140.0
    img = torch.full((2, 12, 15), a / 255.0)
    ref = torch.full((2, 12, 15), b / 255.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    assert ssim(img, ref).item() == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------------------
# Shapes, batching, identity
# ------------------------------------------------------------------------------------------


def test_identical_images():
    _, ref = _pair_u8(9)
    t = _to_torch(ref)
    for kw in ({}, {"y_channel": True}, {"y_channel": True, "matlab_compatible": True}):
        assert psnr(t, t, **kw).item() == math.inf
        assert ssim(t, t, **kw).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(FULLREF_METRICS))
def test_batch_equals_per_image(name):
    fn = FULLREF_METRICS[name]
    pairs = [_pair_u8(10 + i, noise=4.0 + 6 * i) for i in range(3)]
    imgs = torch.stack([_to_torch(o) for o, _ in pairs])
    refs = torch.stack([_to_torch(r) for _, r in pairs])
    kw = {"y_channel": True, "crop_border": 2}
    batch = fn(imgs, refs, **kw)
    assert batch.shape == (3,) and batch.dtype == torch.float64
    singles = torch.stack([fn(imgs[i], refs[i], **kw) for i in range(3)])
    assert torch.allclose(batch, singles, rtol=0, atol=1e-12)
    assert len(set(batch.tolist())) == 3  # different images, different values


def test_registry():
    assert FULLREF_METRICS == {"psnr": psnr, "ssim": ssim}


# ------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_errors(fn):
    z = torch.zeros
    with pytest.raises(MetricInputError, match=r"same shape.*\(3, 32, 32\).*\(3, 32, 30\)"):
        fn(z(3, 32, 32), z(3, 32, 30))
    with pytest.raises(MetricInputError, match="got 2-D shape"):
        fn(z(32, 32), z(32, 32))
    with pytest.raises(MetricInputError, match="needs 1 \\(grey\\) or 3 \\(RGB\\) channels, got 4"):
        fn(z(4, 32, 32), z(4, 32, 32), y_channel=True)
    with pytest.raises(MetricInputError, match="crop_border must be >= 0, got -1"):
        fn(z(3, 32, 32), z(3, 32, 32), crop_border=-1)
    with pytest.raises(MetricInputError, match="crop_border must be a non-negative int"):
        fn(z(3, 32, 32), z(3, 32, 32), crop_border=1.5)
    with pytest.raises(MetricInputError, match="crop_border=16 leaves nothing of a 32 x 32"):
        fn(z(3, 32, 32), z(3, 32, 32), crop_border=16)
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.zeros(3, 32, 32, dtype=torch.uint8), z(3, 32, 32))
    # User errors are SlkdErrors (clean CLI message) and ValueErrors (bad argument).
    with pytest.raises(SlkdError):
        fn(z(3, 32, 32), z(3, 31, 32))
    with pytest.raises(ValueError):
        fn(z(3, 32, 32), z(3, 31, 32))


def test_ssim_needs_11x11_after_crop():
    z = torch.zeros
    with pytest.raises(MetricInputError, match="at least 11 x 11 .* got 10 x 12"):
        ssim(z(1, 10, 12), z(1, 10, 12))
    with pytest.raises(MetricInputError, match="crop_border=5, got 10 x 10 \\(from 20 x 20\\)"):
        ssim(z(1, 20, 20), z(1, 20, 20), crop_border=5)
    # The same sizes are fine for PSNR.
    assert psnr(z(1, 10, 12), z(1, 10, 12)).item() == math.inf
