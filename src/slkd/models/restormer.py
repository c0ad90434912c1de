"""Restormer (Zamir et al., CVPR 2022), written for this project.

Parameter names and shapes follow the official release exactly, so its checkpoints load with
``strict=True``. Two additions that do not touch the parameters:

* ``global_residual=False`` drops the input-to-output skip. SLKD's Teacher B (clean → clean)
  needs it: with the skip it learns the identity and its decoder features carry nothing.
* a clear error when the input size is not a multiple of 8 (three 2× down-samplings), instead
  of a shape error deep inside PixelUnshuffle; :func:`slkd.engine.restore` pads for you.

The network is a four-level U-Net of transformer blocks: MDTA attention (channel-wise
"transposed" attention, so its cost is linear in the number of pixels) and GDFN gated
feed-forward layers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slkd.models.checkpoint import layer_norm_type
from slkd.models.registry import preset_family
from slkd.models.taps import DECODER_LEVELS, ENCODER_LEVELS

LAYER_NORM_TYPES = ("WithBias", "BiasFree")


def _channel_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over the channels of an N×C×H×W map (two-pass, stable).

    Written as two channel means instead of ``x.var(dim=1)``: on CPU the strided variance
    kernel is much slower than a channel mean (measured: BENCHMARKS.md §8), and the norms run
    twice per transformer block.
    """
    mu = x.mean(dim=1, keepdim=True)
    centred = x - mu
    return mu, (centred * centred).mean(dim=1, keepdim=True)


class _BiasFreeNorm(nn.Module):
    """Scales by the inverse standard deviation over channels; no centring, no bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, var = _channel_mean_var(x)
        return x * torch.rsqrt(var + 1e-5) * self.weight.view(1, -1, 1, 1)


class _WithBiasNorm(nn.Module):
    """Standard layer norm over channels at every pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, var = _channel_mean_var(x)
        return (x - mu) * torch.rsqrt(var + 1e-5) * self.weight.view(1, -1, 1, 1) + self.bias.view(
            1, -1, 1, 1
        )


class LayerNorm(nn.Module):
    """Per-pixel layer norm over channels of an N×C×H×W map (parameters live in ``body``)."""

    def __init__(self, channels: int, layer_norm_type: str) -> None:
        super().__init__()
        if layer_norm_type == "BiasFree":
            self.body: nn.Module = _BiasFreeNorm(channels)
        elif layer_norm_type == "WithBias":
            self.body = _WithBiasNorm(channels)
        else:
            raise ValueError(
                f"LayerNorm_type must be one of {LAYER_NORM_TYPES}, got {layer_norm_type!r}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """GDFN: 1×1 expansion to two branches, depth-wise 3×3, GELU gate, 1×1 projection."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class Attention(nn.Module):
    """MDTA: attention across channels (C/heads × C/heads per head), linear in H×W."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"channels ({dim}) must be divisible by the number of heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(
            dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, self.num_heads, c // self.num_heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, self.num_heads, c // self.num_heads, h * w), dim=-1)
        v = v.reshape(b, self.num_heads, c // self.num_heads, h * w)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    """x + attention(LN(x)), then x + feed-forward(LN(x)). Subclasses swap the two parts
    (``attention_cls``, ``ffn_cls``; e.g. DRSformer's sparse attention) and keep the names."""

    attention_cls = Attention
    ffn_cls = FeedForward

    def __init__(
        self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = self.attention_cls(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = self.ffn_cls(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3×3 convolution from image to features (no bias, as in the release)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: conv n→n/2 then PixelUnshuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False),
            nn.PixelUnshuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: conv n→2n then PixelShuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _stage(block: type[nn.Module], n: int, dim: int, heads: int, ffn: float, bias: bool,
           ln: str) -> nn.Sequential:
    return nn.Sequential(*[block(dim, heads, ffn, bias, ln) for _ in range(n)])


class TransformerUNet(nn.Module):
    """Restormer's four-level encoder–decoder, shared with DRSformer: patch embedding, stages
    ``encoder_level1..3``, ``latent``, ``decoder_level3..1`` of ``block``, pixel (un)shuffle
    resampling, skip concatenations and the channel reductions of levels 3 and 2 (level 1 keeps
    2·dim, the official design). Subclasses add what comes before ``encoder_level1`` and after
    ``decoder_level1`` (refinement, output, residual)."""

    #: input sizes must be divisible by this (three 2× down-samplings)
    size_multiple = 8
    #: the level names distillers read (the model protocol, slkd.models.protocol): the stages
    #: themselves carry these names
    encoder_taps = ENCODER_LEVELS
    decoder_taps = DECODER_LEVELS

    def level_modules(self) -> dict[str, str]:
        """Level name → module path for level names that are not module names: none here."""
        return {}

    def _check_config(self, inp_channels: int, out_channels: int, dim: int, num_blocks: list[int],
                      heads: list[int], residual: bool, fix: str) -> None:
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError("num_blocks and heads need one entry per level (4 levels)")
        if any(n < 0 for n in num_blocks):
            raise ValueError("block counts must be >= 0")
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {dim}")
        if residual and inp_channels != out_channels:
            raise ValueError(
                f"the global residual adds the input to the output, so inp_channels "
                f"({inp_channels}) must equal out_channels ({out_channels}); {fix}"
            )

    def _build_encoder(self, block, inp_channels: int, dim: int, num_blocks: list[int],
                       heads: list[int], args: tuple) -> None:
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self._pre_encoder()
        self.encoder_level1 = _stage(block, num_blocks[0], dim, heads[0], *args)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = _stage(block, num_blocks[1], dim * 2, heads[1], *args)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = _stage(block, num_blocks[2], dim * 4, heads[2], *args)
        self.down3_4 = Downsample(dim * 4)
        self.latent = _stage(block, num_blocks[3], dim * 8, heads[3], *args)

    def _pre_encoder(self) -> None:
        """Hook for modules registered between ``patch_embed`` and ``encoder_level1``."""

    def _build_decoder(self, block, dim: int, num_blocks: list[int], heads: list[int], args: tuple,
                       bias: bool) -> None:
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = _stage(block, num_blocks[2], dim * 4, heads[2], *args)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = _stage(block, num_blocks[1], dim * 2, heads[1], *args)
        self.up2_1 = Upsample(dim * 2)  # no channel reduction at level 1 (official design)
        self.decoder_level1 = _stage(block, num_blocks[0], dim * 2, heads[0], *args)

    def _check_input(self, inp_img: torch.Tensor) -> None:
        if inp_img.dim() != 4 or inp_img.shape[1] != self.inp_channels:
            raise ValueError(
                f"expected an N×{self.inp_channels}×H×W tensor, got shape {tuple(inp_img.shape)}"
            )
        h, w = inp_img.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"{type(self).__name__} needs height and width divisible by {self.size_multiple}, "
                f"got {h}×{w}; pad the input (slkd.engine.restore does this for you)"
            )

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded features → output of ``decoder_level1`` (2·dim channels, full size)."""
        enc1 = self.encoder_level1(x)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))

        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1)))
        return self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1))


class Restormer(TransformerUNet):
    """Restormer with the official constructor keywords (plus ``global_residual``).

    Encoder taps for distillation: ``encoder_level1..3`` and ``latent``; decoder taps:
    ``decoder_level3..1`` and ``refinement``.
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 (official keyword)
        dual_pixel_task: bool = False,
        global_residual: bool = True,
    ) -> None:
        super().__init__()
        num_blocks = list(num_blocks)
        heads = list(heads)
        if num_refinement_blocks < 0:
            raise ValueError("block counts must be >= 0")
        self._check_config(inp_channels, out_channels, dim, num_blocks, heads,
                           global_residual and not dual_pixel_task,
                           "pass global_residual=False or dual_pixel_task=True")
        self.inp_channels = inp_channels
        self.out_channels = out_channels
        self.dual_pixel_task = dual_pixel_task
        self.global_residual = global_residual
        args = (ffn_expansion_factor, bias, LayerNorm_type)

        self._build_encoder(TransformerBlock, inp_channels, dim, num_blocks, heads, args)
        self._build_decoder(TransformerBlock, dim, num_blocks, heads, args, bias)
        self.refinement = _stage(TransformerBlock, num_refinement_blocks, dim * 2, heads[0], *args)

        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        self._check_input(inp_img)
        x1 = self.patch_embed(inp_img)
        out = self.refinement(self._unet(x1))
        if self.dual_pixel_task:
            return self.output(out + self.skip_conv(x1))
        out = self.output(out)
        return out + inp_img if self.global_residual else out


# ------------------------------------------------------------------------------- presets
# this family's named presets (slkd.models.registry), registered when the module is imported


def norm_and_channels(kwargs: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The options an official checkpoint of another variant of a Restormer-style network needs
    (a preset's constructor keywords ``kwargs`` against the file's ``state``): its LayerNorm
    type, and grey or colour input and output."""
    found: dict[str, Any] = {}
    ln = layer_norm_type(state)
    if ln and ln != kwargs["LayerNorm_type"]:
        found["LayerNorm_type"] = ln
    embed, out = state.get("patch_embed.proj.weight"), state.get("output.weight")
    if embed is not None and embed.dim() == 4 and embed.shape[1] != kwargs["inp_channels"]:
        found["inp_channels"] = int(embed.shape[1])
    if out is not None and out.dim() == 4 and out.shape[0] != kwargs["out_channels"]:
        found["out_channels"] = int(out.shape[0])
    return found


def checkpoint_variant(kwargs: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:func:`norm_and_channels`, and dual-pixel input (``skip_conv``) or not."""
    found = norm_and_channels(kwargs, state)
    if ("skip_conv.weight" in state) != bool(kwargs["dual_pixel_task"]):
        found["dual_pixel_task"] = "skip_conv.weight" in state
    return found


_RESTORMER_DEFAULT: dict[str, Any] = dict(
    inp_channels=3,
    out_channels=3,
    dim=48,
    num_blocks=[4, 6, 6, 8],
    num_refinement_blocks=4,
    heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
    dual_pixel_task=False,
)


def restormer_options(**changes: Any) -> dict[str, Any]:
    """The official Restormer's constructor keywords with ``changes``."""
    return {**_RESTORMER_DEFAULT, **changes}


_preset = preset_family(Restormer, checkpoint_variant)

_preset(
    "restormer", restormer_options(),
    "official Restormer (26.1 M params); deraining / motion deblurring checkpoints (WithBias)",
    student="res-sl",
)
_preset(
    "restormer-denoise", restormer_options(LayerNorm_type="BiasFree"),
    "official Restormer for colour Gaussian and real denoising checkpoints (BiasFree)",
    student="res-sl",
)
_preset(
    "restormer-denoise-gray",
    restormer_options(inp_channels=1, out_channels=1, LayerNorm_type="BiasFree"),
    "official Restormer for grey Gaussian denoising checkpoints (1→1 channel, BiasFree)",
)
_preset(
    "restormer-dual-pixel", restormer_options(inp_channels=6, dual_pixel_task=True),
    "official Restormer for dual-pixel defocus deblurring (6→3 channels)",
)
_preset(
    "res-sl",
    restormer_options(dim=24, num_blocks=[2, 3, 3, 4], num_refinement_blocks=2),
    "Res-SL student: half the width, about half the blocks of restormer",
    teacher="restormer",
)
_preset(
    "res-sl-hw",
    restormer_options(dim=32, num_blocks=[1, 2, 2, 3], num_refinement_blocks=1, ffn_expansion_factor=2.0),
    "Res-SL shaped for CPU kernels: every channel count a multiple of 16 (feed-forward hidden "
    "widths included), fewer and wider blocks, no more MACs than res-sl; cut from restormer like it",
    teacher="restormer",
)
_preset(
    "restormer-tiny",
    restormer_options(dim=16, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2),
    "tiny Restormer teacher that trains on a CPU in minutes",
    student="res-sl-tiny",
)
_preset(
    "res-sl-tiny",
    restormer_options(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "tiny Res-SL student of restormer-tiny",
    teacher="restormer-tiny",
)
