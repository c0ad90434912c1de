"""Parameters, MACs and latency of slkd.models.complexity, checked against hand counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slkd.models.complexity import (
    LatencyReport,
    MacReport,
    compare_latency,
    count_macs,
    count_parameters,
    format_count,
    measure_latency,
)
from slkd.models.restormer import Attention, Restormer

TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])


# ----------------------------------------------------------------------------- convolutions


def test_conv_macs_exact():
    report = count_macs(nn.Conv2d(3, 16, 3, padding=1), (1, 3, 32, 32))
    assert report.total == 16 * 3 * 9 * 32 * 32
    assert report.by_op == {"convolution": 16 * 3 * 9 * 32 * 32}
    assert report.convolution == report.total
    assert report.matmul == report.attention_matmul == report.other == 0
    assert report.input_size == (1, 3, 32, 32)


@pytest.mark.parametrize("padding, out", [(1, 32), (0, 30)])
def test_depthwise_conv_macs(padding, out):
    conv = nn.Conv2d(16, 16, 3, padding=padding, groups=16)
    assert count_macs(conv, (1, 16, 32, 32)).total == 16 * 9 * out * out


def test_grouped_strided_and_pointwise_conv_macs():
    grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)  # each output sees 16/4 inputs
    assert count_macs(grouped, (1, 16, 20, 20)).total == 32 * (16 // 4) * 9 * 20 * 20
    strided = nn.Conv2d(4, 8, 3, stride=2, padding=1)  # 20×20 -> 10×10
    assert count_macs(strided, (1, 4, 20, 20)).total == 8 * 4 * 9 * 10 * 10
    pointwise = nn.Conv2d(8, 24, 1)
    assert count_macs(pointwise, (1, 8, 20, 20)).total == 24 * 8 * 20 * 20


def test_bias_and_batch():
    with_bias = count_macs(nn.Conv2d(8, 24, 1, bias=True), (1, 8, 16, 16)).total
    without = count_macs(nn.Conv2d(8, 24, 1, bias=False), (1, 8, 16, 16)).total
    assert with_bias == without == 24 * 8 * 16 * 16
    assert count_macs(nn.Conv2d(8, 24, 1), (3, 8, 16, 16)).total == 3 * without


# ----------------------------------------------------------------------------- matrix products


class _QK(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B × heads × c × n
        q, k = x, x * 2
        return q @ k.transpose(-2, -1)


def test_attention_matmul_macs():
    b, heads, c, n = 2, 3, 4, 10
    report = count_macs(_QK(), (b, heads, c, n))
    expected = b * heads * c * c * n  # (c × n) @ (n × c) per head
    assert report.total == expected
    assert report.by_op == {"bmm": expected}
    assert report.matmul == report.attention_matmul == expected
    assert report.convolution == 0


def test_linear_is_matmul_but_not_attention():
    for bias in (True, False):
        report = count_macs(nn.Linear(4, 5, bias=bias), (2, 3, 4))
        assert report.total == 2 * 3 * 4 * 5
        assert report.matmul == report.total
        assert report.attention_matmul == 0
        assert set(report.by_op) <= {"mm", "addmm"}


class _SDPA(nn.Module):
    def __init__(self, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B × H × 7 × 4
        q = x[:, :, :5]  # L = 5, E = 4
        v = x[..., :3]  # S = 7, Ev = 3
        return F.scaled_dot_product_attention(q, x, v, is_causal=self.causal)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_is_counted_once(causal):
    report = count_macs(_SDPA(causal), (1, 2, 7, 4))
    expected = 2 * 5 * 7 * (4 + 3)  # heads · L · S · (E + Ev)
    assert report.total == expected
    assert report.by_op == {"scaled_dot_product_attention": expected}
    assert report.attention_matmul == report.matmul == expected


def test_multihead_attention_fast_path_is_counted():
    if not hasattr(torch.backends, "mha"):
        pytest.skip("torch.backends.mha (switching the fused fast path off) needs torch >= 2.3")
    embed, heads, length = 8, 2, 5
    mha = nn.MultiheadAttention(embed, heads, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    fastpath = torch.backends.mha.get_fastpath_enabled()
    report = count_macs(SelfAttention(), (1, length, embed))
    projections = 3 * length * embed * embed + length * embed * embed
    attention = 2 * length * length * embed  # q kᵀ and attn v over all heads
    assert report.total == projections + attention
    assert report.attention_matmul == attention
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_uncounted_fused_attention_raises():
    if not hasattr(torch.library, "custom_op"):
        pytest.skip("torch.library.custom_op needs torch >= 2.4")

    @torch.library.custom_op("slkd_test::toy_attention", mutates_args=())
    def toy_attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-2, -1)

    class Toy(nn.Module):
        def forward(self, x):
            return toy_attention(x, x)

    with pytest.raises(NotImplementedError, match="toy_attention"):
        count_macs(Toy(), (1, 2, 4, 6))


# ----------------------------------------------------------------------------- Restormer


def _block_macs(c: int, heads: int, n: int, ffn: float = 2.66) -> int:
    """One transformer block (MDTA + GDFN) at c channels and n pixels."""
    hidden = int(c * ffn)
    attention = (
        c * 3 * c * n  # qkv 1×1
        + 3 * c * 9 * n  # depth-wise 3×3
        + 2 * heads * (c // heads) ** 2 * n  # q kᵀ and attn v
        + c * c * n  # project_out
    )
    feed_forward = c * 2 * hidden * n + 2 * hidden * 9 * n + hidden * c * n
    return attention + feed_forward


def _restormer_macs(
    h: int,
    w: int,
    dim: int = 48,
    num_blocks=(4, 6, 6, 8),
    num_refinement_blocks: int = 4,
    heads=(1, 2, 4, 8),
    channels: int = 3,
) -> tuple[int, int]:
    """(convolution MACs, attention matmul MACs) walking the Restormer architecture."""
    n1, n2, n3, n4 = h * w, h * w // 4, h * w // 16, h * w // 64
    total = (
        channels * dim * 9 * n1  # patch_embed
        + dim * (dim // 2) * 9 * n1  # down1_2
        + 2 * dim * dim * 9 * n2  # down2_3
        + 4 * dim * 2 * dim * 9 * n3  # down3_4
        + 8 * dim * 16 * dim * 9 * n4  # up4_3
        + 8 * dim * 4 * dim * n3  # reduce_chan_level3
        + 4 * dim * 8 * dim * 9 * n3  # up3_2
        + 4 * dim * 2 * dim * n2  # reduce_chan_level2
        + 2 * dim * 4 * dim * 9 * n2  # up2_1
        + 2 * dim * channels * 9 * n1  # output
    )
    stages = [
        (num_blocks[0], dim, heads[0], n1),  # encoder_level1
        (num_blocks[1], 2 * dim, heads[1], n2),  # encoder_level2
        (num_blocks[2], 4 * dim, heads[2], n3),  # encoder_level3
        (num_blocks[3], 8 * dim, heads[3], n4),  # latent
        (num_blocks[2], 4 * dim, heads[2], n3),  # decoder_level3
        (num_blocks[1], 2 * dim, heads[1], n2),  # decoder_level2
        (num_blocks[0], 2 * dim, heads[0], n1),  # decoder_level1
        (num_refinement_blocks, 2 * dim, heads[0], n1),  # refinement
    ]
    attention = 0
    for count, c, hd, n in stages:
        total += count * _block_macs(c, hd, n)
        attention += count * 2 * hd * (c // hd) ** 2 * n
    return total - attention, attention


def _hooked_macs(model: nn.Module, size) -> tuple[int, int]:
    """(conv MACs, attention MACs) from forward hooks: an independent count that reads the
    actual output shapes of every Conv2d and the input shape of every MDTA block."""
    conv = attention = 0

    def on_conv(module: nn.Conv2d, inputs, output):
        nonlocal conv
        kh, kw = module.kernel_size
        per_pixel = module.out_channels * (module.in_channels // module.groups) * kh * kw
        conv += output.shape[0] * per_pixel * output.shape[2] * output.shape[3]

    def on_attention(module: Attention, inputs, output):
        nonlocal attention
        b, c, h, w = inputs[0].shape
        heads = module.num_heads
        attention += b * 2 * heads * (c // heads) ** 2 * h * w

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(on_attention))
    try:
        with torch.no_grad():
            model(torch.rand(size))
    finally:
        for handle in handles:
            handle.remove()
    return conv, attention


def test_tiny_restormer_macs_match_hand_counts():
    torch.manual_seed(0)
    model = Restormer(**TINY)
    report = count_macs(model, (1, 3, 64, 64))
    hooked_conv, hooked_attention = _hooked_macs(model, (1, 3, 64, 64))
    conv, attention = _restormer_macs(64, 64, **TINY)
    assert (hooked_conv, hooked_attention) == (conv, attention)
    assert report.convolution == conv
    assert report.attention_matmul == report.matmul == attention
    assert report.total == conv + attention
    assert set(report.by_op) == {"convolution", "bmm"}


def test_default_restormer_on_meta_matches_formula():
    with torch.device("meta"):
        model = Restormer()
    report = count_macs(model, (1, 3, 256, 256), device="meta")
    conv, attention = _restormer_macs(256, 256)
    assert (report.convolution, report.attention_matmul) == (conv, attention)
    assert report.total == conv + attention
    # the literature's "~141 G" for Restormer at 256×256 is the convolutions alone
    assert format_count(report.convolution) == "140.99 G"


def test_count_parameters():
    model = Restormer()
    assert count_parameters(model) == 26_126_644
    assert count_parameters(model, trainable_only=True) == 26_126_644
    model.patch_embed.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 26_126_644 - 48 * 3 * 9
    assert count_parameters(model) == 26_126_644


def test_count_macs_keeps_mode_and_checks_device():
    model = Restormer(**TINY).train()
    model.latent.eval()  # mixed flags must come back as they were
    flags = [m.training for m in model.modules()]
    report = count_macs(model, (1, 3, 16, 16))
    assert [m.training for m in model.modules()] == flags
    assert isinstance(report, MacReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.total = 0  # type: ignore[misc]
    with torch.device("meta"):
        meta_model = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="meta"):
        count_macs(meta_model, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="input_size"):
        count_macs(model, (1, 3, 0, 16))


# ----------------------------------------------------------------------------- latency


def _check_report(report: LatencyReport, runs: int) -> None:
    assert report.runs == runs == len(report.times_ms)
    assert all(t > 0 for t in report.times_ms)
    assert report.min_ms > 0
    assert report.min_ms <= report.median_ms <= report.max_ms
    assert report.min_ms <= report.mean_ms <= report.max_ms


def test_measure_latency_restores_mode_and_threads():
    model = Restormer(**TINY).train()
    model.refinement.eval()
    flags = [m.training for m in model.modules()]
    threads = torch.get_num_threads()
    wanted = 1 if threads != 1 else 2
    seen_modes = []
    handle = model.register_forward_pre_hook(
        lambda m, i: seen_modes.append((m.training, torch.is_inference_mode_enabled()))
    )
    report = measure_latency(model, (1, 3, 16, 16), runs=3, warmup=1, threads=wanted)
    handle.remove()
    _check_report(report, 3)
    assert report.threads == wanted
    assert report.input_size == (1, 3, 16, 16)
    assert seen_modes == [(False, True)] * 4  # eval + inference mode for warm-up and runs
    assert torch.get_num_threads() == threads
    assert [m.training for m in model.modules()] == flags

    report = measure_latency(model, (1, 3, 16, 16), runs=2, warmup=0)
    _check_report(report, 2)
    assert report.threads == threads
    with pytest.raises(ValueError):
        measure_latency(model, (1, 3, 16, 16), runs=0)
    assert torch.get_num_threads() == threads


def test_compare_latency_interleaves():
    calls = []
    models = {}
    for name, width in (("a", 4), ("b", 8)):
        model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, 3, 1))
        model.register_forward_pre_hook(lambda m, i, name=name: calls.append(name))
        models[name] = model
    threads = torch.get_num_threads()
    reports = compare_latency(models, (1, 3, 16, 16), runs=3, warmup=2, threads=1)
    assert calls == ["a", "b"] * 5  # round-robin through warm-up and timed rounds
    assert set(reports) == {"a", "b"}
    for report in reports.values():
        _check_report(report, 3)
        assert report.threads == 1 and report.warmup == 2
    assert torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    "n, unit, text",
    [
        (26_126_644, "", "26.13 M"),
        (140_990_496_768, "", "140.99 G"),
        (154_882_031_616, "MACs", "154.88 GMACs"),
        (512, "", "512"),
        (512, "MACs", "512 MACs"),
        (1_500, "", "1.50 K"),
        (999_999, "", "1.00 M"),
        (0, "", "0"),
    ],
)
def test_format_count(n, unit, text):
    assert format_count(n, unit) == text
