"""DRSformer (Chen et al., "Learning A Sparse Transformer Network for Effective Image
Deraining", CVPR 2023), written for this project from the paper and the public architecture
description.

Parameter names and shapes are those of the official release (cschenxiang/DRSformer,
``basicsr/models/archs/DRSformer_arch.py``), so its checkpoints (``{'params': sd}``) load with
``strict=True``. The network is Restormer's four-level U-Net (same patch embedding, pixel
(un)shuffle resampling, skip concatenations and layer norms, reused from
:mod:`slkd.models.restormer`) with three changes:

* **TKSA** (top-k sparse attention): Restormer's channel attention, but each query keeps only
  its top-k keys, for four k (1/2, 2/3, 3/4 and 4/5 of the channels per head); the four results
  are mixed with learned scalar weights ``attn1..attn4`` (0.2 each at start);
* **MSFN** (mixed-scale feed-forward): parallel depth-wise 3×3 and 5×5 branches, exchanged
  halves, a second grouped 3×3 / 5×5 stage, ReLU activations;
* **MEFC** (mixture-of-experts feature compensator, ``subnet`` in the release): before the
  first encoder stage (``encoder_level0``) and as the refinement stage (``refinement``), a
  pooled-feature MLP weighs 8 operators (separable 1/3/5/7, dilated 3/5/7 convs, 3×3 average
  pool) over 4 steps. The release trains without MEFC for Rain200L and SPA-Data
  (``DRSformer_arch_200L+SPA.py``); ``mefc=False`` builds that variant (no ``encoder_level0``,
  no ``refinement``).

Published configuration (``Options/Deraining.yml`` and ``test.py`` of the release): dim 48,
num_blocks [4, 6, 6, 8], heads [1, 2, 4, 8], ffn_expansion_factor 2.66, bias False, WithBias
norms, MEFC on: 33,655,424 parameters and 242.98 G MACs at 256×256 with this project's
counter (comparison tables in the deraining literature list DRSformer at about 33.65 M
parameters and 242.9 G "FLOPs", an fvcore count, which counts multiply-accumulates; not
re-checked against the paper here). Without MEFC: 32,610,304 parameters, 175.37 G MACs.

Differences from the release that do not touch the parameters: ``global_residual=False``
drops the input-to-output skip (SLKD's Teacher B); the input size is checked (multiple of 8,
three 2× down-samplings; :func:`slkd.engine.restore` pads, as the release's ``test.py`` does
with reflect padding).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slkd.models import restormer
from slkd.models.registry import preset_family

__all__ = ["DRSformer", "MEFC_OPERATIONS"]

#: the eight operators of an MEFC step, in the release's order (= key order ``_ops.0`` … ``_ops.7``)
MEFC_OPERATIONS = ("sep_conv_1x1", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
                   "dil_conv_3x3", "dil_conv_5x5", "dil_conv_7x7", "avg_pool_3x3")


class FeedForward(nn.Module):
    """MSFN: 1×1 in (two halves), depth-wise 3×3 and 5×5 + ReLU, cross-mixed halves through
    grouped 3×3 / 5×5 convs + ReLU, 1×1 out."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.dwconv5x5 = nn.Conv2d(hidden * 2, hidden * 2, 5, padding=2, groups=hidden * 2, bias=bias)
        self.dwconv3x3_1 = nn.Conv2d(hidden * 2, hidden, 3, padding=1, groups=hidden, bias=bias)
        self.dwconv5x5_1 = nn.Conv2d(hidden * 2, hidden, 5, padding=2, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 2, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        a3, b3 = F.relu(self.dwconv3x3(x)).chunk(2, dim=1)
        a5, b5 = F.relu(self.dwconv5x5(x)).chunk(2, dim=1)
        a = F.relu(self.dwconv3x3_1(torch.cat([a3, a5], dim=1)))
        b = F.relu(self.dwconv5x5_1(torch.cat([b3, b5], dim=1)))
        return self.project_out(torch.cat([a, b], dim=1))


class Attention(nn.Module):
    """TKSA: channel attention (as Restormer's MDTA) where each row keeps its top-k scores."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"channels ({dim}) must be divisible by the number of heads ({num_heads})")
        per_head = dim // num_heads
        if per_head < 2:
            raise ValueError(f"top-k attention needs >= 2 channels per head, got {dim}/{num_heads}")
        self.num_heads = num_heads
        # the release's k for a head of C channels: int(C/2), int(C*2/3), int(C*3/4), int(C*4/5)
        self.top_k = (int(per_head / 2), int(per_head * 2 / 3), int(per_head * 3 / 4), int(per_head * 4 / 5))
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.attn1 = nn.Parameter(torch.tensor([0.2]))
        self.attn2 = nn.Parameter(torch.tensor([0.2]))
        self.attn3 = nn.Parameter(torch.tensor([0.2]))
        self.attn4 = nn.Parameter(torch.tensor([0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        shape = (b, self.num_heads, c // self.num_heads, h * w)
        q = F.normalize(q.reshape(shape), dim=-1)
        k = F.normalize(k.reshape(shape), dim=-1)
        v = v.reshape(shape)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = None
        for top_k, weight in zip(self.top_k, (self.attn1, self.attn2, self.attn3, self.attn4)):
            keep = torch.zeros_like(attn).scatter_(-1, attn.topk(top_k, dim=-1).indices, 1.0)
            sparse = torch.where(keep > 0, attn, torch.full_like(attn, float("-inf")))
            term = (sparse.softmax(dim=-1) @ v) * weight
            out = term if out is None else out + term
        return self.project_out(out.reshape(b, c, h, w))


class TransformerBlock(restormer.TransformerBlock):
    """Sparse transformer block: x + TKSA(LN(x)), then x + MSFN(LN(x))."""

    attention_cls = Attention
    ffn_cls = FeedForward


# ------------------------------------------------------------------------------------- MEFC


class SepConv(nn.Module):
    """Depth-wise k×k, 1×1, ReLU, depth-wise k×k, 1×1 (no biases)."""

    def __init__(self, c: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.op = nn.Sequential(
            nn.Conv2d(c, c, kernel, padding=pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, padding=pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """Depth-wise k×k with dilation 2, then 1×1 (no biases)."""

    def __init__(self, c: int, kernel: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(c, c, kernel, padding=kernel - 1, dilation=2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _operation(name: str, c: int) -> nn.Module:
    kind, kernel = name.rsplit("_", 1)
    k = int(kernel.split("x")[0])
    if kind == "sep_conv":
        return SepConv(c, k)
    if kind == "dil_conv":
        return DilConv(c, k)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class OperationLayer(nn.Module):
    """One MEFC step: the eight operators weighted per image, concatenated, 1×1 conv + ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self._ops = nn.ModuleList(_operation(name, c) for name in MEFC_OPERATIONS)
        self._out = nn.Sequential(nn.Conv2d(c * len(MEFC_OPERATIONS), c, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # weights: N×ops
        states = [op(x) * weights[:, i].view(-1, 1, 1, 1) for i, op in enumerate(self._ops)]
        return self._out(torch.cat(states, dim=1))


class ConvReLU(nn.Module):
    """1×1 conv (no bias) + ReLU (``ReLUConv`` in the release, despite the order)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class GroupOLs(nn.Module):
    """1×1 conv + ReLU, then ``steps`` residual operation layers (ReLU after each sum)."""

    def __init__(self, steps: int, c: int) -> None:
        super().__init__()
        self.preprocess = ConvReLU(c)
        self._ops = nn.ModuleList(OperationLayer(c) for _ in range(steps))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # N×steps×ops
        x = self.preprocess(x)
        for i, op in enumerate(self._ops):
            x = F.relu(op(x, weights[:, i, :]) + x)
        return x


class OALayer(nn.Module):
    """Operator attention: global average pool, MLP → (steps × operators) logits per image."""

    def __init__(self, c: int, steps: int, num_ops: int) -> None:
        super().__init__()
        self.steps, self.num_ops = steps, num_ops
        self.ca_fc = nn.Sequential(nn.Linear(c, steps * num_ops * 2), nn.ReLU(),
                                   nn.Linear(steps * num_ops * 2, steps * num_ops))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ca_fc(x.mean(dim=(-2, -1)))
        return y.view(-1, self.steps, self.num_ops)


class MEFC(nn.Module):
    """Mixture-of-experts feature compensator (``subnet`` in the release): ``layers`` holds
    the operator attention and the grouped operation layers it weighs (softmax over operators)."""

    def __init__(self, dim: int, steps: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList([OALayer(dim, steps, len(MEFC_OPERATIONS)), GroupOLs(steps, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention, group = self.layers
        return group(x, attention(x).softmax(dim=-1))


# ------------------------------------------------------------------------------------ network


class DRSformer(restormer.TransformerUNet):
    """DRSformer with the official constructor keywords (plus ``mefc`` and ``global_residual``).

    Module names as Restormer's (``encoder_level1..3``, ``latent``, ``decoder_level3..1``,
    ``refinement``), plus ``encoder_level0``; so Restormer's feature taps apply unchanged.
    """

    def level_modules(self) -> dict[str, str]:
        """Without MEFC there is no refinement stage: ``refinement`` reads ``decoder_level1``."""
        return {} if self.mefc else {"refinement": "decoder_level1"}

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 (official keyword)
        mefc: bool = True,
        global_residual: bool = True,
    ) -> None:
        super().__init__()
        num_blocks, heads = list(num_blocks), list(heads)
        self._check_config(inp_channels, out_channels, dim, num_blocks, heads, global_residual,
                           "pass global_residual=False")
        self.inp_channels, self.out_channels = inp_channels, out_channels
        self.global_residual = global_residual
        self.mefc = mefc
        self._dim = dim
        args = (ffn_expansion_factor, bias, LayerNorm_type)

        self._build_encoder(TransformerBlock, inp_channels, dim, num_blocks, heads, args)
        self._build_decoder(TransformerBlock, dim, num_blocks, heads, args, bias)
        if mefc:
            self.refinement = MEFC(dim * 2)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def _pre_encoder(self) -> None:
        if self.mefc:
            self.encoder_level0 = MEFC(self._dim)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        self._check_input(inp_img)
        x = self.patch_embed(inp_img)
        if self.mefc:
            x = self.encoder_level0(x)
        out = self._unet(x)
        if self.mefc:
            out = self.refinement(out)
        out = self.output(out)
        return out + inp_img if self.global_residual else out


# ------------------------------------------------------------------------------- presets
# this family's named presets (slkd.models.registry), registered when the module is imported


def checkpoint_variant(kwargs: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The options an official checkpoint of another DRSformer variant needs: Restormer's
    (:func:`slkd.models.restormer.norm_and_channels`), and with or without MEFC."""
    found = restormer.norm_and_channels(kwargs, state)
    has_mefc = any(k.startswith("encoder_level0.") for k in state)
    if has_mefc != bool(kwargs["mefc"]):
        found["mefc"] = has_mefc
    return found


# the release's Options/Deraining.yml and test.py
_DRSFORMER_DEFAULT: dict[str, Any] = dict(
    inp_channels=3,
    out_channels=3,
    dim=48,
    num_blocks=[4, 6, 6, 8],
    heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
    mefc=True,
)


def _drsformer(**changes: Any) -> dict[str, Any]:
    return {**_DRSFORMER_DEFAULT, **changes}


_preset = preset_family(DRSformer, checkpoint_variant)

_preset(
    "drsformer", _drsformer(),
    "official DRSformer for deraining (33.66 M params, with the MEFC compensators)",
    student="drs-sl",
)
_preset(
    "drsformer-no-mefc", _drsformer(mefc=False),
    "official DRSformer without MEFC (the release's Rain200L / SPA-Data variant)",
)
_preset(
    "drs-sl", _drsformer(dim=24, num_blocks=[2, 3, 3, 4]),
    "DRS-SL student: half the width, half the blocks of drsformer (MEFC kept)",
    teacher="drsformer",
)
_preset(
    "drsformer-tiny", _drsformer(dim=16, num_blocks=[2, 2, 2, 2]),
    "tiny DRSformer teacher (with MEFC) for CPU runs",
    student="drs-sl-tiny",
)
_preset(
    "drs-sl-tiny", _drsformer(dim=6, num_blocks=[1, 1, 1, 1]),
    "tiny DRS-SL student of drsformer-tiny (dim 6: the MEFC cost scales with width²)",
    teacher="drsformer-tiny",
)
