"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022), written for this
project from the paper and the public architecture description.

Parameter names and shapes are those of the official release (megvii-research/NAFNet,
``basicsr/models/archs/NAFNet_arch.py``), so its checkpoints (``NAFNet-SIDD-width32.pth``,
``NAFNet-GoPro-width64.pth`` …, saved as ``{'params': sd}``) load with ``strict=True``.

Published configurations (``options/test/*/NAFNet-width*.yml`` of the release):

=================  =====  ================  ======  ================  =============
config             width  enc_blk_nums      middle  dec_blk_nums      parameters
=================  =====  ================  ======  ================  =============
SIDD width 32      32     [2, 2, 4, 8]      12      [2, 2, 2, 2]      29,159,715
SIDD width 64      64     [2, 2, 4, 8]      12      [2, 2, 2, 2]      115,982,915
GoPro width 32     32     [1, 1, 1, 28]     1       [1, 1, 1, 1]      17,111,907
GoPro width 64     64     [1, 1, 1, 28]     1       [1, 1, 1, 1]      67,888,835
=================  =====  ================  ======  ================  =============

The paper gives MACs, not parameter counts: 65 G for the width-64 models at 256×256 (its
abstract's "8.4 % of the computational cost" of MPRNet's 777 G) and 16 G for width 32; this
project's counter gives 63.1 G / 63.2 G and 16.0 G (it leaves element-wise ops out). The
parameter counts above follow from the block formula (a NAFBlock of ``c`` channels has
``7c² + 33c`` parameters, see :func:`nafblock_parameters`) and are checked in
``tests/test_models_more.py`` against that independent closed form; GoPro-width64 is the
often-quoted "67.89 M".

Differences from the release that do not touch the parameters:

* the channel LayerNorm is written with plain tensor operations (the release uses a custom
  autograd function, which blocks ONNX export); same forward values;
* ``global_residual=False`` drops the input-to-output skip (SLKD's Teacher B, docs/spec.md §2.1);
* the GoPro checkpoints are evaluated in the release with ``NAFNetLocal`` (test-time local
  converter: the global average pool of the channel attention becomes a sliding one). That
  test-time variant is not implemented: the GoPro weights load and run with the global pool
  (training-time behaviour), which the authors report as slightly lower PSNR.

Like the release, the network pads its input with zeros to a multiple of ``2 ** levels`` (16
with four levels) and crops the output back, so it accepts any H×W.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slkd.models.registry import preset_family
from slkd.models.taps import DECODER_LEVELS, ENCODER_LEVELS, levels_by_resolution

__all__ = ["NAFNet", "NAFBlock", "nafblock_parameters"]


def nafblock_parameters(c: int) -> int:
    """Parameters of one NAFBlock of ``c`` channels (DW_Expand = FFN_Expand = 2).

    conv1 c→2c (+2c bias), depth-wise conv2 3×3 on 2c (+2c), conv3 c→c (+c), SCA conv c→c (+c),
    conv4 c→2c (+2c), conv5 c→c (+c), two norms (4c), beta and gamma (2c): 7c² + 33c.
    """
    return 7 * c * c + 33 * c


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of an N×C×H×W map (eps 1e-6, as the release)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        centred = x - mu
        var = (centred * centred).mean(dim=1, keepdim=True)
        y = centred * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's activation: split the channels in two halves and multiply them."""
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    """Norm → 1×1 (×2) → depth-wise 3×3 → SimpleGate → simplified channel attention → 1×1,
    scaled by ``beta``; then norm → 1×1 (×2) → SimpleGate → 1×1, scaled by ``gamma``.

    ``beta`` and ``gamma`` start at zero, so a fresh block is the identity (as released).
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        dw = 2 * c
        self.conv1 = nn.Conv2d(c, dw, kernel_size=1)
        self.conv2 = nn.Conv2d(dw, dw, kernel_size=3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, kernel_size=1)
        # Simplified Channel Attention: global average pool, 1×1 conv, multiply (no sigmoid)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, kernel_size=1))
        ffn = 2 * c
        self.conv4 = nn.Conv2d(c, ffn, kernel_size=1)
        self.conv5 = nn.Conv2d(ffn // 2, c, kernel_size=1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = _simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(_simple_gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNet(nn.Module):
    """NAFNet with the official constructor keywords (plus ``global_residual``).

    A U-Net of NAFBlocks: ``intro`` 3×3 conv; per level an encoder stage (``encoders.i``) and a
    stride-2 2×2 conv doubling the channels (``downs.i``); ``middle_blks`` at the bottom; per
    level a 1×1 conv + PixelShuffle halving the channels (``ups.i``), an **additive** skip and a
    decoder stage (``decoders.i``); ``ending`` 3×3 conv and the global residual.

    Feature taps (see :mod:`slkd.models.taps`): ``encoders.i`` is at 1/2^i of the input,
    ``middle_blks`` at 1/2^levels, ``decoders.i`` at 1/2^(levels-1-i).
    """

    #: the level names distillers read (the model protocol, slkd.models.protocol)
    encoder_taps = ENCODER_LEVELS
    decoder_taps = DECODER_LEVELS

    def level_modules(self) -> dict[str, str]:
        """Level name → stage at the same resolution: with L levels the stage at 1/2^i is
        ``encoders.i`` / ``decoders.(L-1-i)``, ``middle_blks`` at 1/2^L."""
        n = len(self.encoders)
        return levels_by_resolution(
            {i: f"encoders.{i}" for i in range(n)} | {n: "middle_blks"},
            {n - 1 - j: f"decoders.{j}" for j in range(n)} | {n: "middle_blks"},
        )

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (),
        dec_blk_nums: Sequence[int] = (),
        global_residual: bool = True,
    ) -> None:
        super().__init__()
        enc_blk_nums, dec_blk_nums = list(enc_blk_nums), list(dec_blk_nums)
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(
                f"enc_blk_nums ({enc_blk_nums}) and dec_blk_nums ({dec_blk_nums}) need one entry "
                "per level each, the same number of levels"
            )
        if any(n < 0 for n in enc_blk_nums + dec_blk_nums) or middle_blk_num < 0:
            raise ValueError("block counts must be >= 0")
        if width < 1 or img_channel < 1:
            raise ValueError(f"width and img_channel must be >= 1, got {width}, {img_channel}")
        self.inp_channels = self.out_channels = img_channel
        self.global_residual = global_residual

        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False),
                                          nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
        #: the network pads its input to a multiple of this (one halving per level)
        self.size_multiple = 2 ** len(self.encoders)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero padding on the bottom/right to ``size_multiple`` (as the release)."""
        h, w = x.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        if torch.jit.is_tracing() or pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        if inp.dim() != 4 or inp.shape[1] != self.inp_channels:
            raise ValueError(
                f"expected an N×{self.inp_channels}×H×W tensor, got shape {tuple(inp.shape)}"
            )
        h, w = inp.shape[-2:]
        inp = self._pad(inp)
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x)
        if self.global_residual:
            x = x + inp
        return x[:, :, :h, :w]


# ------------------------------------------------------------------------------- presets
# this family's named presets (slkd.models.registry), registered when the module is imported

# the release's options/test/{SIDD,GoPro}/NAFNet-width{32,64}.yml
_NAFNET_SIDD: dict[str, Any] = dict(
    img_channel=3, width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2],
)
_NAFNET_GOPRO: dict[str, Any] = dict(
    img_channel=3, width=32, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1],
)

_preset = preset_family(NAFNet)

_preset(
    "nafnet-sidd-32", dict(_NAFNET_SIDD),
    "official NAFNet width 32 for SIDD denoising (29.16 M params)",
    student="nafnet-sl",
)
_preset(
    "nafnet-sidd-64", {**_NAFNET_SIDD, "width": 64},
    "official NAFNet width 64 for SIDD denoising (115.98 M params)",
    student="nafnet-sl",
)
_preset(
    "nafnet-gopro-32", dict(_NAFNET_GOPRO),
    "official NAFNet width 32 for GoPro deblurring (17.11 M params; released for NAFNetLocal)",
)
_preset(
    "nafnet-gopro-64", {**_NAFNET_GOPRO, "width": 64},
    "official NAFNet width 64 for GoPro deblurring (67.89 M params; released for NAFNetLocal)",
    student="nafnet-sl",
)
_preset(
    "nafnet-sl",
    dict(img_channel=3, width=16, enc_blk_nums=[1, 1, 2, 4], middle_blk_num=6, dec_blk_nums=[1, 1, 1, 1]),
    "NAFNet-SL student: half the width, half the blocks of nafnet-sidd-32; also a CNN student "
    "for restormer",
    teacher="nafnet-sidd-32",
)
_preset(
    "nafnet-tiny",
    dict(img_channel=3, width=16, enc_blk_nums=[2, 2, 2, 2], middle_blk_num=2, dec_blk_nums=[2, 2, 2, 2]),
    "tiny NAFNet teacher for CPU runs",
    student="nafnet-sl-tiny",
)
_preset(
    "nafnet-sl-tiny",
    dict(img_channel=3, width=8, enc_blk_nums=[1, 1, 1, 1], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1]),
    "tiny NAFNet-SL student of nafnet-tiny (also of restormer-tiny, across architectures)",
    teacher="nafnet-tiny",
)
