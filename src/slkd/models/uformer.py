"""Uformer (Wang et al., "Uformer: A General U-Shaped Transformer for Image Restoration",
CVPR 2022), written for this project from the paper and the public architecture description.

Parameter and buffer names and shapes are those of the official release
(ZhendongWang6/Uformer, ``model.py``), so its checkpoints (``{'state_dict': sd}``, keys with a
``module.`` prefix, which :mod:`slkd.models.checkpoint` strips) load with ``strict=True``.

The network: a 3×3 input projection; four encoder levels of LeWin transformer blocks (window
self-attention with a learned relative-position bias, every second block on windows shifted
by half a window; LeFF feed-forward: linear, GELU, depth-wise 3×3 conv, GELU, linear), each
followed by a 4×4 stride-2 conv; a bottleneck stage (``conv``) at 1/16 resolution; four decoder
levels (2×2 transposed conv, concatenation with the encoder feature, LeWin blocks with the
learned "modulator" added to each window); a 3×3 output projection and the global residual.

Published configurations (``get_arch`` in the release's ``utils/model_utils.py``; win_size 8,
linear token projection, LeFF, modulator on), parameters as built here:

=========  =========  ============================  ===========  ======================
variant    embed_dim  depths                        parameters   without the modulator
=========  =========  ============================  ===========  ======================
Uformer-T  16         [2, 2, 2, 2, 2, 2, 2, 2, 2]   5,291,853    5,230,413
Uformer-S  32         [2, 2, 2, 2, 2, 2, 2, 2, 2]   20,751,197   20,628,317
Uformer-B  32         [1, 2, 8, 8, 2, 8, 8, 2, 1]   50,880,946   50,467,250
=========  =========  ============================  ===========  ======================

Uformer-B's 50.88 M is the count the paper reports (and Papers with Code lists). The modulator
adds win²·C parameters per decoder block; the T and S counts without it are the 5.23 M and
20.63 M quoted for Uformer-T/-S (not re-checked against the paper's table here). MACs at
256×256 with this project's counter: 11.27 G (T), 40.99 G (S), 86.57 G (B).

The release builds the model with ``img_size`` = the training patch size (``--train_ps``:
128 for the SIDD checkpoint, 256 for GoPro). It matters: a level whose resolution at
``img_size`` is not larger than the window gets a window of that resolution and no shift
(official rule, reproduced here), which changes the output of the bottleneck at
``img_size=128``. Build with the checkpoint's ``img_size`` (presets ``uformer-b`` = 256 for
GoPro, ``uformer-b-sidd`` = 128).

Differences from the release that do not touch the parameters:

* stages take and return N×C×H×W maps (the release passes N×L×C token lists between stages
  and recovers H = W = sqrt(L), so it only runs square images); the feature taps therefore
  record ordinary maps, and rectangular images work;
* any size: the input is padded (replicate, bottom/right) to a multiple of 16 and the output
  cropped; a stage whose map is not a multiple of its window is padded the same way before its
  blocks and cropped after. On the sizes the release runs (squares whose side is a multiple of
  16 × the window) nothing is padded and the computation is the release's. The release pads
  test images with zeros to a centred square of side 128·k and passes a mask; that mask input
  is not implemented;
* ``global_residual=False`` drops the input-to-output skip (SLKD's Teacher B);
* not implemented: ``token_projection='conv'``, ``token_mlp='fastleff'`` (needs an extra CUDA
  package), ``cross_modulator`` — none is used by the released models.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slkd.models.registry import preset_family
from slkd.models.taps import DECODER_LEVELS, ENCODER_LEVELS, levels_by_resolution

__all__ = ["Uformer"]

#: the four 2× down-samplings: the input is padded to a multiple of this
SIZE_MULTIPLE = 16


def _pad_bottom_right(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad an N×C×H×W map on the bottom/right to multiples of ``multiple``.

    Always padded while tracing (ONNX export), so the graph keeps dynamic sizes.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    if torch.jit.is_tracing() or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def _partition(x: torch.Tensor, win: int) -> torch.Tensor:
    """N×H×W×C → (N·windows)×(win·win)×C, windows in row-major order per image."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, win * win, c)


def _merge(windows: torch.Tensor, win: int, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    c = windows.shape[-1]
    x = windows.reshape(n, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


def _shift_mask(h: int, w: int, win: int, shift: int, like: torch.Tensor) -> torch.Tensor:
    """Attention mask (windows × N × N; 0 or -100) of shifted-window attention: after the
    cyclic shift, tokens from different image regions must not attend to each other. Regions
    along each axis are [0, n-win), [n-win, n-shift), [n-shift, n)."""
    def regions(n: int) -> torch.Tensor:
        idx = torch.arange(n, device=like.device)
        return (idx >= n - win).long() + (idx >= n - shift).long()

    ids = (regions(h)[:, None] * 3 + regions(w)[None, :]).to(like.dtype)
    ids = _partition(ids[None, :, :, None], win).squeeze(-1)  # windows × N
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class LinearProjection(nn.Module):
    """q from ``to_q``, k and v from ``to_kv`` (k first), split into heads."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q = self.to_q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        kv = self.to_kv(x).reshape(b, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside win×win windows with a relative-position bias table
    of (2·win−1)² entries per head (as in Swin)."""

    def __init__(self, dim: int, win: int, heads: int, qkv_bias: bool, qk_scale: float | None,
                 attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.win = win
        self.heads = heads
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * win - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij"))
        coords = coords.flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (win - 1)
        # a buffer in the release's state dicts, so it is one here too (persistent)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * win - 1) + rel[..., 1])
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = LinearProjection(dim, heads, qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(b, self.heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: linear, GELU, depth-wise 3×3 conv, GELU, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden), nn.GELU()
        )
        self.linear2 = nn.Sequential(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N×H×W×C
        x = self.linear1(x).permute(0, 3, 1, 2)
        x = self.dwconv(x).permute(0, 2, 3, 1)
        return self.linear2(x)


class Mlp(nn.Module):
    """Plain feed-forward (``token_mlp='mlp'`` or ``'ffn'``)."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LeWinTransformerBlock(nn.Module):
    """LN → (shifted) window attention (+ modulator on the windows) → residual;
    LN → LeFF → residual. Works on N×H×W×C with H, W multiples of ``win``."""

    def __init__(self, dim: int, heads: int, win: int, shift: int, mlp_ratio: float,
                 qkv_bias: bool, qk_scale: float | None, drop: float, attn_drop: float,
                 drop_path: float, token_mlp: str, modulator_size: int | None) -> None:
        super().__init__()
        if not 0 <= shift < win:
            raise ValueError(f"shift ({shift}) must be in [0, window {win})")
        self.win, self.shift, self.drop_path = win, shift, float(drop_path)
        if modulator_size is not None:
            if modulator_size != win:
                raise ValueError(
                    f"the modulator is sized for {modulator_size}×{modulator_size} windows but this "
                    f"stage's window shrank to {win}×{win} (img_size too small for win_size)"
                )
            self.modulator = nn.Embedding(win * win, dim)
        else:
            self.modulator = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, win, heads, qkv_bias, qk_scale, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        if token_mlp == "leff":
            self.mlp: nn.Module = LeFF(dim, hidden)
        elif token_mlp in ("mlp", "ffn"):
            self.mlp = Mlp(dim, hidden, drop)
        else:
            raise ValueError(f"token_mlp must be 'leff', 'mlp' or 'ffn', got {token_mlp!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        win, shift = self.win, self.shift
        y = self.norm1(x)
        mask = None
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
            mask = _shift_mask(h, w, win, shift, y)
        windows = _partition(y, win)
        if self.modulator is not None:
            windows = windows + self.modulator.weight
        y = _merge(self.attn(windows, mask), win, n, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + _drop_path(y, self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class BasicUformerLayer(nn.Module):
    """One stage: ``depth`` LeWin blocks, every second one shifted (if ``shift_flag``).

    Takes and returns N×C×H×W; pads to a multiple of the window inside and crops after.
    """

    def __init__(self, dim: int, resolution: int, depth: int, heads: int, win_size: int,
                 mlp_ratio: float, qkv_bias: bool, qk_scale: float | None, drop: float,
                 attn_drop: float, drop_path: Sequence[float], token_mlp: str, shift_flag: bool,
                 modulator: bool) -> None:
        super().__init__()
        if resolution < 1:
            raise ValueError("img_size is too small: a stage would have resolution 0 "
                             f"(img_size must be >= {SIZE_MULTIPLE})")
        if dim % heads:
            raise ValueError(f"channels ({dim}) must be divisible by the number of heads ({heads})")
        # release rule: a stage no larger than the window gets a window of its size, no shift
        win = min(win_size, resolution)
        shifted = shift_flag and resolution > win_size
        self.win = win
        self.blocks = nn.ModuleList(
            LeWinTransformerBlock(
                dim, heads, win, win // 2 if shifted and i % 2 else 0, mlp_ratio, qkv_bias,
                qk_scale, drop, attn_drop, drop_path[i], token_mlp,
                win_size if modulator else None,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = _pad_bottom_right(x, self.win).permute(0, 2, 3, 1)
        for block in self.blocks:
            y = block(y)
        return y.permute(0, 3, 1, 2)[:, :, :h, :w]


class Downsample(nn.Module):
    """4×4 stride-2 conv: half the resolution, ``out_channel`` channels."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """2×2 stride-2 transposed conv: twice the resolution, ``out_channel`` channels."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(in_channel, out_channel, kernel_size=2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x)


class InputProj(nn.Module):
    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=3, padding=1),
                                  nn.LeakyReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class OutputProj(nn.Module):
    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Uformer(nn.Module):
    """Uformer with the official constructor keywords (plus ``global_residual``).

    ``dd_in`` is the number of input channels and ``in_chans`` the number of output channels
    (the release's naming); the global residual is added when ``dd_in == 3`` (release rule).
    Stages: ``encoderlayer_0..3`` (1, 1/2, 1/4, 1/8 resolution; embed_dim·2^i channels),
    ``conv`` (bottleneck, 1/16, 16·embed_dim), ``decoderlayer_0..3`` (1/8, 1/4, 1/2, 1;
    16, 8, 4, 2 × embed_dim channels). Feature taps: see :mod:`slkd.models.taps`.
    """

    #: the input is padded to a multiple of this inside :meth:`forward`; an exported ONNX graph
    #: expects it (padding stays outside the graph there)
    size_multiple = SIZE_MULTIPLE
    #: the level names distillers read (the model protocol, slkd.models.protocol)
    encoder_taps = ENCODER_LEVELS
    decoder_taps = DECODER_LEVELS

    def level_modules(self) -> dict[str, str]:
        """Level name → stage at the same resolution (:mod:`slkd.models.taps`): ``encoderlayer_i``
        at 1/2^i, ``decoderlayer_j`` at 1/2^(3-j); ``refinement`` is ``decoderlayer_3``."""
        return levels_by_resolution({i: f"encoderlayer_{i}" for i in range(4)},
                                    {3 - j: f"decoderlayer_{j}" for j in range(4)})

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        dd_in: int = 3,
        embed_dim: int = 32,
        depths: Sequence[int] = (2, 2, 2, 2, 2, 2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2),
        win_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        token_projection: str = "linear",
        token_mlp: str = "leff",
        shift_flag: bool = True,
        modulator: bool = False,
        global_residual: bool = True,
    ) -> None:
        super().__init__()
        depths, num_heads = list(depths), list(num_heads)
        if len(depths) != 9 or len(num_heads) != 9:
            raise ValueError("depths and num_heads need 9 entries: 4 encoder levels, the "
                             "bottleneck, 4 decoder levels")
        if any(d < 0 for d in depths):
            raise ValueError("depths must be >= 0")
        if token_projection != "linear":
            raise ValueError(f"token_projection {token_projection!r} is not implemented (only 'linear', "
                             "which the released models use)")
        if win_size < 1 or embed_dim < 1:
            raise ValueError(f"win_size and embed_dim must be >= 1, got {win_size}, {embed_dim}")
        residual = global_residual and dd_in == 3
        if residual and in_chans != dd_in:
            raise ValueError(f"the global residual adds the input to the output, so in_chans ({in_chans}) "
                             f"must equal dd_in ({dd_in}); pass global_residual=False")
        self.inp_channels, self.out_channels = dd_in, in_chans
        self.global_residual = residual
        self.embed_dim = embed_dim

        # stochastic depth as released: rising over the encoder, constant in the bottleneck,
        # falling over the decoder (rates the release's slicing leaves undefined are 0)
        n_enc = sum(depths[:4])
        enc_dpr = [drop_path_rate * i / (n_enc - 1) if n_enc > 1 else 0.0 for i in range(n_enc)]
        dec_dpr = enc_dpr[::-1]

        def rates(values: list[float], start: int, depth: int) -> list[float]:
            chunk = values[start:start + depth]
            return chunk + [0.0] * (depth - len(chunk))

        def layer(i: int, dim: int, resolution: int, dpr: list[float], mod: bool) -> BasicUformerLayer:
            return BasicUformerLayer(dim, resolution, depths[i], num_heads[i], win_size, mlp_ratio,
                                     qkv_bias, qk_scale, drop_rate, attn_drop_rate, dpr, token_mlp,
                                     shift_flag, mod)

        e = embed_dim
        self.input_proj = InputProj(dd_in, e)
        self.output_proj = OutputProj(2 * e, in_chans)
        self.pos_drop = nn.Dropout(drop_rate)
        for i in range(4):
            start = sum(depths[:i])
            setattr(self, f"encoderlayer_{i}",
                    layer(i, e * 2 ** i, img_size // 2 ** i, rates(enc_dpr, start, depths[i]), False))
            setattr(self, f"dowsample_{i}", Downsample(e * 2 ** i, e * 2 ** (i + 1)))
        self.conv = layer(4, 16 * e, img_size // 16, [drop_path_rate] * depths[4], False)
        up_in = 16 * e
        for j in range(4):
            out = e * 2 ** (3 - j)
            setattr(self, f"upsample_{j}", Upsample(up_in, out))
            start = sum(depths[5:5 + j])
            setattr(self, f"decoderlayer_{j}",
                    layer(5 + j, 2 * out, img_size // 2 ** (3 - j), rates(dec_dpr, start, depths[5 + j]),
                          modulator))
            up_in = 2 * out
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.inp_channels:
            raise ValueError(f"expected an N×{self.inp_channels}×H×W tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = _pad_bottom_right(x, self.size_multiple)
        y = self.pos_drop(self.input_proj(x))
        skips = []
        for i in range(4):
            y = getattr(self, f"encoderlayer_{i}")(y)
            skips.append(y)
            y = getattr(self, f"dowsample_{i}")(y)
        y = self.conv(y)
        for j in range(4):
            y = getattr(self, f"upsample_{j}")(y)
            y = getattr(self, f"decoderlayer_{j}")(torch.cat([y, skips[3 - j]], dim=1))
        y = self.output_proj(y)
        if self.global_residual:
            y = y + x
        return y[:, :, :h, :w]


# ------------------------------------------------------------------------------- presets
# this family's named presets (slkd.models.registry), registered when the module is imported


def checkpoint_variant(kwargs: dict[str, Any], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The options an official checkpoint of another Uformer variant needs: with or without the
    modulator."""
    has_modulator = any(k.endswith(".modulator.weight") for k in state)
    return {"modulator": has_modulator} if has_modulator != bool(kwargs["modulator"]) else {}


# the release's get_arch(): win_size 8, linear token projection, LeFF, modulator on; img_size
# is the training patch size of the checkpoint (GoPro 256, SIDD 128), see slkd.models.uformer
_UFORMER_DEFAULT: dict[str, Any] = dict(
    img_size=256,
    in_chans=3,
    dd_in=3,
    embed_dim=32,
    depths=[2, 2, 2, 2, 2, 2, 2, 2, 2],
    num_heads=[1, 2, 4, 8, 16, 16, 8, 4, 2],
    win_size=8,
    mlp_ratio=4.0,
    token_projection="linear",
    token_mlp="leff",
    modulator=True,
)


def _uformer(**changes: Any) -> dict[str, Any]:
    return {**_UFORMER_DEFAULT, **changes}


_UFORMER_B_DEPTHS = [1, 2, 8, 8, 2, 8, 8, 2, 1]

_preset = preset_family(Uformer, checkpoint_variant)

_preset(
    "uformer-t", _uformer(embed_dim=16),
    "Uformer-T of the official release (embed_dim 16, 5.29 M params)",
)
_preset(
    "uformer-s", _uformer(embed_dim=32),
    "Uformer-S of the official release (embed_dim 32, 20.75 M params)",
)
_preset(
    "uformer-b", _uformer(depths=_UFORMER_B_DEPTHS),
    "Uformer-B (50.88 M params), as the released GoPro deblurring checkpoint (img_size 256)",
    student="ufor-sl",
)
_preset(
    "uformer-b-sidd", _uformer(depths=_UFORMER_B_DEPTHS, img_size=128),
    "Uformer-B as the released SIDD denoising checkpoint (img_size 128: no shift in the bottleneck)",
    student="ufor-sl",
)
_preset(
    "ufor-sl", _uformer(embed_dim=16, depths=[1, 1, 4, 4, 1, 4, 4, 1, 1]),
    "Ufor-SL student: half the width and about half the blocks of uformer-b",
    teacher="uformer-b",
)
_preset(
    "uformer-tiny", _uformer(embed_dim=8, img_size=32, win_size=4),
    "tiny Uformer teacher (embed_dim 8, 4×4 windows, img_size 32) for CPU runs",
    student="ufor-sl-tiny",
)
_preset(
    "ufor-sl-tiny",
    _uformer(embed_dim=4, img_size=32, win_size=4, depths=[1, 1, 1, 1, 1, 1, 1, 1, 1]),
    "tiny Ufor-SL student of uformer-tiny",
    teacher="uformer-tiny",
)
