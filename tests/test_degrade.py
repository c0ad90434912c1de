"""Tests of slkd.data.degrade: noise statistics, blur kernels, rain, registry, determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slkd.data.degrade import (
    DEGRADATIONS,
    GaussianNoise,
    build_degradation,
    gaussian_noise,
    line_kernel,
    motion_blur,
    rain_streaks,
    random_motion_kernel,
)
from slkd.data.folders import add_test_noise
from slkd.errors import SlkdError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(c: int = 3, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(c, h, w, generator=gen(seed))


# --------------------------------------------------------------------------------------------
# Gaussian noise
# --------------------------------------------------------------------------------------------


def test_noise_std_matches_sigma_and_is_not_clipped() -> None:
    clean = torch.full((3, 256, 256), 0.02)
    noisy = gaussian_noise(clean, 25.0, gen(1))
    residual = noisy - clean
    # 196 608 samples: the sample std is within ~0.3 % of sigma with overwhelming probability
    assert residual.std().item() == pytest.approx(25 / 255, rel=0.01)
    assert abs(residual.mean().item()) < 1e-3
    assert noisy.min() < 0  # not clipped (literature convention)
    assert noisy.dtype == torch.float32 and noisy.shape == clean.shape


def test_noise_sigma_range_is_drawn_per_image_within_bounds() -> None:
    clean = torch.zeros(1, 128, 128)
    stds = [(gaussian_noise(clean, (5, 50), gen(s))).std().item() * 255 for s in range(20)]
    assert all(4.8 < s < 51.5 for s in stds)
    assert max(stds) - min(stds) > 10  # really drawn, not fixed
    batch = gaussian_noise(torch.zeros(6, 1, 96, 96), (0, 75), gen(3))
    per_image = batch.flatten(1).std(1) * 255
    assert per_image.max() - per_image.min() > 5 and per_image.max() < 77


def test_noise_is_a_function_of_the_generator_only() -> None:
    clean = textured()
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = gaussian_noise(clean, 15, gen(7))
    b = gaussian_noise(clean, 15, gen(7))
    c = gaussian_noise(clean, 15, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    rain_streaks(clean, gen(7))
    random_motion_kernel(11, gen(7))
    assert torch.equal(torch.get_rng_state(), torch_state)  # global RNG untouched
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_noise_zero_sigma_and_invalid_sigma() -> None:
    clean = textured()
    assert torch.equal(gaussian_noise(clean, 0, gen()), clean)
    with pytest.raises(SlkdError, match="sigma"):
        gaussian_noise(clean, -1, gen())
    with pytest.raises(SlkdError, match="sigma"):
        gaussian_noise(clean, (30, 10), gen())


# --------------------------------------------------------------------------------------------
# Motion blur
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [3, 7, 15, 25, 31])
def test_motion_kernels_are_normalised_spread_and_centred(size: int) -> None:
    half = (size - 1) / 2
    coords = torch.arange(size, dtype=torch.float64)
    for seed in range(8):
        k = random_motion_kernel(size, gen(seed))
        assert k.shape == (size, size) and k.dtype == torch.float32
        assert k.min() >= 0
        assert k.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert k.max() < 0.9  # not a delta: mass spread over several pixels
        assert (k > 1e-4).sum() >= 3
        kd = k.double()
        # centre of mass at the kernel centre: the blur does not shift the image
        assert (kd.sum(1) * coords).sum().item() == pytest.approx(half, abs=1e-4)
        assert (kd.sum(0) * coords).sum().item() == pytest.approx(half, abs=1e-4)
    assert not torch.equal(random_motion_kernel(size, gen(1)), random_motion_kernel(size, gen(2)))
    assert torch.equal(random_motion_kernel(size, gen(5)), random_motion_kernel(size, gen(5)))


def test_motion_kernel_rejects_bad_sizes() -> None:
    for bad in (1, 4, 0, 2.5):
        with pytest.raises(SlkdError, match="size"):
            random_motion_kernel(bad, gen())


def test_motion_blur_keeps_constants_and_size() -> None:
    k = random_motion_kernel(21, gen(3))
    flat = torch.full((3, 30, 41), 0.37)
    out = motion_blur(flat, k)
    assert out.shape == flat.shape
    torch.testing.assert_close(out, flat, atol=1e-6, rtol=0)
    tiny = torch.full((1, 6, 5), 0.5)  # smaller than the kernel radius: edge replication
    torch.testing.assert_close(motion_blur(tiny, k), tiny, atol=1e-6, rtol=0)


def test_motion_blur_is_a_true_convolution_matching_conv2d() -> None:
    img = textured(3, 40, 50)
    shift = torch.zeros(3, 3)
    shift[1, 2] = 1.0  # mass right of centre: convolution moves the image one pixel right
    out = motion_blur(img, shift)
    torch.testing.assert_close(out[:, :, 1:], img[:, :, :-1], atol=1e-6, rtol=0)
    k = random_motion_kernel(9, gen(4))
    ref = F.conv2d(F.pad(img[None], (4, 4, 4, 4), mode="reflect"),
                   k.flip(0, 1).expand(3, 1, 9, 9).contiguous(), groups=3)[0]
    torch.testing.assert_close(motion_blur(img, k), ref, atol=1e-5, rtol=0)
    batch = motion_blur(torch.stack([img, img]), k)
    torch.testing.assert_close(batch[1], ref, atol=1e-5, rtol=0)
    # blur removes high frequencies
    assert motion_blur(img, k).diff(dim=-1).abs().mean() < 0.5 * img.diff(dim=-1).abs().mean()


# --------------------------------------------------------------------------------------------
# Rain
# --------------------------------------------------------------------------------------------


def test_rain_adds_bright_clipped_deterministic_streaks() -> None:
    clean = 0.2 + 0.6 * textured(3, 96, 128)
    rainy = rain_streaks(clean, gen(11))
    assert rainy.shape == clean.shape
    assert rainy.min() >= 0 and rainy.max() <= 1
    assert rainy.mean() > clean.mean() + 0.02
    diff = rainy - clean
    assert diff.min() >= -1e-6  # only brightens
    assert (diff.mean(0) > 0.2).float().mean() > 0.03  # bright streaks, not a uniform veil
    unclipped = (rainy < 1).all(0)  # grey rain: the same in every channel (where not clipped)
    torch.testing.assert_close(diff[0][unclipped], diff[1][unclipped], atol=1e-6, rtol=0)
    assert torch.equal(rainy, rain_streaks(clean, gen(11)))
    assert not torch.equal(rainy, rain_streaks(clean, gen(12)))


def test_rain_streaks_follow_their_angle() -> None:
    dark = torch.full((1, 128, 128), 0.1)
    layer = (rain_streaks(dark, gen(2), angle=0.0, length=40.0) - dark)[0]
    layer = layer - layer.mean()
    vertical = (layer[8:] * layer[:-8]).mean()
    horizontal = (layer[:, 8:] * layer[:, :-8]).mean()
    assert vertical > 5 * horizontal.abs()
    k = line_kernel(30.0, 0.0)
    assert k.sum().item() == pytest.approx(30.0, rel=1e-5)
    assert k.sum(0).argmax() == k.shape[1] // 2  # vertical line through the centre column


def test_rain_screen_blend_and_invalid_parameters() -> None:
    clean = textured()
    out = rain_streaks(clean, gen(1), blend="screen")
    assert out.min() >= 0 and out.max() <= 1 and out.mean() > clean.mean()
    with pytest.raises(SlkdError, match="blend"):
        rain_streaks(clean, gen(), blend="multiply")
    with pytest.raises(SlkdError, match="density"):
        rain_streaks(clean, gen(), density=2.0)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_registry_builds_picklable_shape_keeping_callables(name: str) -> None:
    deg = build_degradation(name)
    clean = textured(3, 40, 44)
    out = deg(clean, gen(3))
    assert out.shape == clean.shape and out.dtype == torch.float32
    assert torch.equal(out, deg(clean, gen(3)))
    assert not torch.equal(out, clean)
    clone = pickle.loads(pickle.dumps(deg))  # DataLoader workers started with spawn
    assert torch.equal(clone(clean, gen(3)), out)
    assert torch.equal(deg.evaluate(clean, 0, 4), deg.evaluate(clean, 0, 4))
    assert deg.margin >= 0


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(SlkdError) as info:
        build_degradation("jpeg")
    for known in DEGRADATIONS:
        assert known in str(info.value)
    with pytest.raises(SlkdError, match="'sigmas'"):
        build_degradation("gaussian_noise", sigmas=25)
    with pytest.raises(SlkdError, match="sigma"):
        build_degradation("gaussian_noise", sigma=-5)
    with pytest.raises(SlkdError, match="kernel_size"):
        build_degradation("motion_blur", kernel_size=(8, 8))
    with pytest.raises(SlkdError, match="length"):
        build_degradation("rain", length=0)
    with pytest.raises(SlkdError, match="sigma"):
        build_degradation("gaussian_noise", sigma="high")


def test_registry_parameters_are_used() -> None:
    blur = build_degradation("motion_blur", kernel_size=(5, 9))
    assert blur.margin == 4 and blur.sizes == [5, 7, 9]
    k = blur.kernel(gen(0))
    assert k.shape[0] in (5, 7, 9)
    noise = build_degradation("gaussian_noise", sigma=[10, 30])
    assert noise.sigma == (10.0, 30.0) and noise.eval_sigma == 20.0


def test_gaussian_evaluation_equals_slkd_eval_noise() -> None:
    clean = textured(3, 33, 47)
    deg = GaussianNoise(sigma=50)
    assert torch.equal(deg.evaluate(clean, seed=0, index=5), add_test_noise(clean, 50, seed=0))
    assert torch.equal(GaussianNoise((0, 55), eval_sigma=15).evaluate(clean, 1),
                       add_test_noise(clean, 15, seed=1))
