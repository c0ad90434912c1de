"""Tests of slkd.engine.inference: padding, tile placement, blending, channel adaptation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slkd.engine import (
    adapt_channels,
    model_in_channels,
    pad_to_multiple,
    restore,
    tile_starts,
    tile_weights,
)

# --------------------------------------------------------------------------------------------
# Tiny deterministic models
# --------------------------------------------------------------------------------------------


def pointwise_model(channels: int = 3) -> nn.Module:
    """A 1×1 convolution: every output pixel depends on its own input pixel only."""
    conv = nn.Conv2d(channels, channels, 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None] * 0.8)
        conv.weight.add_(0.05 * torch.randn(conv.weight.shape, generator=g))
        conv.bias.fill_(0.1)
    return conv


class ConvStack(nn.Module):
    """Three 3×3 convolutions with zero padding: receptive-field radius 3.

    Weights are near-identity plus fixed noise so outputs stay well inside (0, 1) for inputs in
    [0.25, 0.75] (clamping must not hide differences) while still mixing neighbours.
    """

    radius = 3

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.zero_()
                conv.weight[:, :, 1, 1] = torch.eye(channels) * 0.7
                conv.weight.add_(0.03 * torch.randn(conv.weight.shape, generator=g))
                conv.bias.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x


class Recorder(nn.Module):
    """Wraps a model and records the shape (and train flag) of every call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.modes.append(self.training)
        return self.inner(x)


def _image(n: int, c: int, h: int, w: int, lo: float = 0.0, hi: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, c, h, w, generator=g)


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "ph", "pw"), [(37, 53, 40, 56), (3, 5, 8, 8), (8, 16, 8, 16)])
def test_pad_to_multiple_shapes_and_crop_back(h: int, w: int, ph: int, pw: int) -> None:
    x = _image(2, 3, h, w)
    padded, (oh, ow) = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, ph, pw) and (oh, ow) == (h, w)
    assert torch.equal(padded[..., :h, :w], x)


def test_pad_reflects_and_falls_back_to_replicate() -> None:
    x = _image(1, 1, 37, 3)  # H can reflect (pad 3 < 37), W cannot (pad 5 >= 3)
    padded, _ = pad_to_multiple(x, 8)
    assert torch.equal(padded[..., 37, :3], x[..., 35, :])  # reflect skips the edge row
    assert torch.equal(padded[..., :37, 3:], x[..., :, 2:3].expand(-1, -1, -1, 5))  # replicate


def test_pad_no_op_returns_input() -> None:
    x = _image(1, 3, 16, 24)
    assert pad_to_multiple(x, 8)[0] is x


# --------------------------------------------------------------------------------------------
# Tile placement and weights
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (100, 32, 8, [0, 24, 48, 68]),  # stride 24, last tile flush with the border
        (80, 32, 8, [0, 24, 48]),  # 80 - 32 = 48 is on the stride grid: no duplicate
        (33, 32, 8, [0, 1]),
        (32, 32, 8, [0]),
        (20, 32, 8, [0]),  # smaller than a tile: one tile, padded instead
        (64, 32, 0, [0, 32]),
        (70, 16, 15, list(range(0, 54, 1)) + [54]),
    ],
)
def test_tile_starts(size: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert tile_starts(size, tile, overlap) == expected


def test_tile_weights_positive_and_complementary() -> None:
    w = tile_weights(32, 8, ramp_start=True, ramp_end=True)
    assert (w > 0).all() and (w <= 1).all()
    assert torch.all(w[8:24] == 1)
    # Raised-cosine ramps of two neighbours aligned on the same 8 samples sum to 1.
    assert torch.allclose(w[:8] + w[:8].flip(0), torch.ones(8), atol=1e-6)
    border = tile_weights(32, 8, ramp_start=False, ramp_end=True)
    assert torch.all(border[:24] == 1)


# --------------------------------------------------------------------------------------------
# restore(): exactness where it must be exact
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [None, 16, 64])
@pytest.mark.parametrize("blend", ["average", "gaussian"])
def test_identity_model_returns_clamped_input_exactly(tile: int | None, blend: str) -> None:
    x = _image(2, 3, 37, 53, lo=-0.2, hi=1.2)
    y = restore(nn.Identity(), x, tile=tile, overlap=4, blend=blend)
    assert y.dtype == torch.float32 and y.device.type == "cpu"
    assert torch.equal(y, x.clamp(0, 1))
    assert not torch.equal(x, x.clamp(0, 1))  # the clamp really did something
    assert x.min() < 0  # and the input was not modified in place


@pytest.mark.parametrize("blend", ["average", "gaussian"])
def test_pointwise_model_tiled_equals_untiled(blend: str) -> None:
    model = pointwise_model()
    x = _image(1, 3, 37, 53)
    full = restore(model, x)
    tiled = restore(model, x, tile=16, overlap=6, blend=blend)
    assert full.shape == x.shape
    assert (full - tiled).abs().max() < 1e-6


def test_tiny_image_through_conv_model() -> None:
    x = _image(1, 3, 3, 5, lo=0.25, hi=0.75)
    for tile in (None, 8):
        assert restore(ConvStack(), x, tile=tile, overlap=2).shape == (1, 3, 3, 5)


def _clean_mask(size: int, tile: int, overlap: int, radius: int) -> torch.Tensor:
    """Pixels farther than ``radius`` from every *interior* edge of every tile covering them.

    Inside a tile, a zero-padded 3×3 stack of depth ``radius`` sees exactly the same input
    values as on the whole image for such pixels, so its output there is identical; closer to
    a tile edge that is not an image edge it sees padding instead of the real neighbours.
    """
    clean = torch.ones(size, dtype=torch.bool)
    for s in tile_starts(size, tile, overlap):
        e = min(s + tile, size)
        p = torch.arange(s, e)
        dirty = torch.zeros(e - s, dtype=torch.bool)
        if s > 0:
            dirty |= p - s < radius
        if e < size:
            dirty |= (e - 1) - p < radius
        clean[s:e] &= ~dirty
    return clean


def test_conv_stack_tiled_matches_untiled_away_from_seams() -> None:
    """Tiling is NOT exact for a model with spatial context; it is exact away from seams.

    Each tile is run with zero padding at its own edges, so pixels within the receptive-field
    radius of an interior tile edge get a contaminated contribution from that tile, and both
    blends mix every covering tile with a positive weight. With overlap >= 2 × radius every
    pixel has at least one clean tile, but the average still includes the dirty ones. So we
    assert: exact (up to float rounding) on pixels no tile contaminates, a real but small
    difference at the seams, and a smaller seam error with the feathered blend, which gives
    the contaminated tile edges the least weight.
    """
    model = ConvStack()
    h, w, tile, overlap, r = 64, 72, 32, 12, ConvStack.radius  # multiples of 8: no padding
    assert overlap >= 2 * r
    x = _image(1, 3, h, w, lo=0.25, hi=0.75, seed=3)
    full = restore(model, x)
    assert 0.0 < full.min() and full.max() < 1.0  # clamping cannot hide any difference

    mask = _clean_mask(h, tile, overlap, r)[:, None] & _clean_mask(w, tile, overlap, r)[None, :]
    assert 0.5 < mask.float().mean() < 1.0  # most pixels are clean, but not all
    seam_err = {}
    for blend in ("average", "gaussian"):
        tiled = restore(model, x, tile=tile, overlap=overlap, blend=blend)
        diff = (tiled - full).abs()[0].amax(0)  # H×W, worst channel
        assert diff[mask].max() < 1e-5
        seam_err[blend] = diff[~mask].max().item()
        assert 1e-4 < seam_err[blend] < 0.25  # seams differ, but boundedly
    assert seam_err["gaussian"] < seam_err["average"]


# --------------------------------------------------------------------------------------------
# restore(): bounds, memory, errors, channels, dtype
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [None, 16])
def test_output_stays_in_unit_range(tile: int | None) -> None:
    model = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3)[:, :, None, None] * 3.0)
        model.bias.fill_(-1.0)
    y = restore(model, _image(1, 3, 40, 30), tile=tile, overlap=4, blend="gaussian")
    assert y.min() == 0.0 and y.max() == 1.0  # both clamps were needed and applied


@pytest.mark.parametrize(("h", "w"), [(100, 100), (20, 100), (37, 53)])
def test_model_never_sees_more_than_one_tile(h: int, w: int) -> None:
    rec = Recorder(ConvStack())
    tile, overlap = 32, 8
    x = _image(2, 3, h, w, lo=0.25, hi=0.75)
    y = restore(rec, x, tile=tile, overlap=overlap)
    assert y.shape == x.shape
    n_tiles = len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))
    assert len(rec.shapes) == n_tiles
    for n, c, th, tw in rec.shapes:
        assert (n, c) == (2, 3)  # one tile batch per call
        assert th <= tile and tw <= tile
        assert th % 8 == 0 and tw % 8 == 0


def test_model_runs_in_eval_mode_and_mode_is_restored() -> None:
    rec = Recorder(nn.Identity())
    rec.train()
    rec.inner.eval()  # a submodule the caller froze on purpose must stay frozen
    restore(rec, _image(1, 3, 8, 8))
    assert rec.modes == [False]
    assert rec.training and not rec.inner.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 30}, "multiple of 8"),
        ({"tile": 0}, "positive"),
        ({"tile": -16}, "positive"),
        ({"tile": 32, "overlap": 32}, "overlap"),
        ({"tile": 32, "overlap": -1}, "overlap"),
        ({"blend": "median"}, "blend"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        restore(nn.Identity(), _image(1, 3, 40, 40), **kwargs)


def test_grey_image_through_rgb_model() -> None:
    model = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3)[:, :, None, None])
    x = _image(2, 1, 21, 19)
    for tile in (None, 8):
        y = restore(model, x, tile=tile, overlap=2)
        assert y.shape == (2, 1, 21, 19)
        assert torch.allclose(y, x, atol=1e-6)  # repeat, identity, mean over channels


def test_rgb_image_through_grey_model_restores_each_plane() -> None:
    model = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        model.weight.fill_(1 / 18)
        model.bias.fill_(0.05)
    x = _image(2, 3, 16, 24)
    y = restore(model, x)
    assert y.shape == x.shape
    for c in range(3):  # each output plane is the model applied to the same input plane
        expected = restore(model, x[:, c : c + 1])
        assert torch.allclose(y[:, c : c + 1], expected, atol=1e-6)


def test_adapt_channels_shapes_and_errors() -> None:
    grey, rgb = _image(2, 1, 4, 5), _image(2, 3, 4, 5)
    inp, undo = adapt_channels(grey, 3)
    assert inp.shape == (2, 3, 4, 5) and undo(torch.zeros(2, 3, 4, 5)).shape == (2, 1, 4, 5)
    inp, undo = adapt_channels(rgb, 1)
    assert inp.shape == (6, 1, 4, 5) and torch.equal(undo(inp), rgb)
    inp, undo = adapt_channels(rgb, 3)
    assert inp is rgb and undo(rgb) is rgb
    with pytest.raises(ValueError, match=r"2 channel.*expects 3"):
        adapt_channels(_image(1, 2, 4, 4), 3)
    with pytest.raises(ValueError, match=r"3 channel.*expects 4"):
        restore(nn.Conv2d(4, 4, 1), rgb)


def test_in_channels_override_and_detection() -> None:
    assert model_in_channels(ConvStack(1)) == 1
    assert model_in_channels(nn.Identity()) is None
    rec = Recorder(nn.Identity())
    x = _image(1, 1, 8, 8)
    y = restore(rec, x, in_channels=3)  # no Conv2d to inspect: the keyword decides
    assert rec.shapes == [(1, 3, 8, 8)] and torch.allclose(y, x)


def test_bfloat16_model_gives_float32_output() -> None:
    model = pointwise_model().to(torch.bfloat16)
    x = _image(1, 3, 24, 24)
    y = restore(model, x, tile=16, overlap=4)  # dtype follows the model's parameters
    assert y.dtype == torch.float32
    ref = restore(pointwise_model(), x)
    assert (y - ref).abs().max() < 2e-2


def test_output_is_an_ordinary_tensor() -> None:
    """Outputs may feed a training loss; inference tensors would fail when saved for backward."""
    y = restore(nn.Identity(), _image(1, 3, 8, 8))
    assert not y.is_inference()
    p = nn.Parameter(torch.ones(1))
    (y * p).sum().backward()
    assert p.grad is not None
