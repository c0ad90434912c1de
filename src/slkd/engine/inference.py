"""Running a restoration network on whole images: padding, tiling and channel adaptation.

Restoration networks with down-sampling stages need H and W divisible by some factor, and
large images do not fit on the device in one piece. :func:`restore` handles both: it pads to a
multiple (reflect, so the border statistics look natural), and optionally cuts the image into
overlapping tiles, runs them one at a time and blends the results on a CPU canvas.

Tile placement follows the Restormer demo convention (stride = tile − overlap, plus a last tile
flush with the far border) so that results are comparable with published tiled numbers. How
much memory a call will need is predicted by :mod:`slkd.engine.memory`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FASTEST_PATH",
    "INFERENCE_PATHS",
    "adapt_channels",
    "first_parameter",
    "inference_model",
    "model_in_channels",
    "pad_to_multiple",
    "restore",
    "tile_starts",
    "tile_weights",
]

BLENDS = ("average", "gaussian")

#: ways to run a network for inference: as written; with its weights laid out channels-last
#: (NHWC: every convolution and what follows it runs in that layout; inputs and outputs stay
#: NCHW); compiled by torch.compile (Inductor with frozen weights on the CPU, CUDA graphs on a
#: GPU; one compilation per input shape, so it pays off for many images of one size or a fixed
#: tile, not for one image)
INFERENCE_PATHS = ("eager", "channels_last", "compiled")
#: the fastest path measured per device type, what ``auto`` picks (BENCHMARKS.md §8 for the CPU,
#: §10 for CUDA: channels-last was slower there and compiled paths not measured yet)
FASTEST_PATH = {"cpu": "channels_last", "cuda": "eager"}


def inference_model(model: nn.Module, device: torch.device | str, path: str = "auto") -> nn.Module:
    """``model`` (already on ``device``) prepared to run inference the ``path`` way
    (:data:`INFERENCE_PATHS`; ``auto``: :data:`FASTEST_PATH` of the device). The same outputs to
    float rounding whatever the path; the weights are not copied (channels-last re-lays them out
    in place)."""
    device = torch.device(device)
    if path == "auto":
        path = FASTEST_PATH.get(device.type, "eager")
    if path not in INFERENCE_PATHS:
        raise ValueError(f"inference path: one of auto, {', '.join(INFERENCE_PATHS)}; got {path!r}")
    model.eval()
    if path == "channels_last":
        return model.to(memory_format=torch.channels_last)
    if path == "compiled":
        from slkd.engine.compiled import compile_inference

        return compile_inference(model, device)
    return model


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an N×C×H×W tensor on the right and bottom so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(h, w)`` for cropping back. Reflect padding is
    used because it avoids the artificial edges that zero padding would feed the network; an
    axis too short to reflect (pad >= size) is padded by replicating its last row/column.
    The input is returned unchanged (no copy) when no padding is needed.
    """
    if x.ndim != 4:
        raise ValueError(
            f"pad_to_multiple expects an N×C×H×W tensor, got shape {tuple(x.shape)}"
        )
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    out = x
    # Pad each axis separately so a short axis falling back to 'replicate' does not force the
    # other axis off 'reflect'.
    if pad_w:
        mode = "reflect" if pad_w < w else "replicate"
        out = F.pad(out, (0, pad_w, 0, 0), mode=mode)
    if pad_h:
        mode = "reflect" if pad_h < h else "replicate"
        out = F.pad(out, (0, 0, 0, pad_h), mode=mode)
    return out, (h, w)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis (Restormer demo convention).

    ``stride = tile - overlap``; starts are ``range(0, size - tile, stride)`` followed by
    ``size - tile`` so the last tile ends exactly at the border (it may overlap its neighbour
    by more than ``overlap``). When ``size <= tile`` there is a single tile starting at 0.

    Example: ``tile_starts(100, 32, 8) == [0, 24, 48, 68]``.
    """
    _check_tile(tile, overlap, multiple=1)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if size <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_weights(length: int, overlap: int, *, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D feathering weights for the ``"gaussian"`` blend (float32, strictly positive).

    Over the first/last ``overlap`` samples of a tile the weight rises as a raised cosine
    ``w(i) = sin²(π/2 · (i + ½) / overlap)`` and is 1 elsewhere; sides that lie on the image
    border (``ramp_start``/``ramp_end`` False) are not ramped because no other tile shares
    them. Where two neighbouring ramps coincide the weights sum to 1 (sin² + cos²); where they
    do not, the division by the accumulated weight still normalises. The half-sample offset
    keeps every weight > 0, so every pixel gets a finite, well-defined value. Feathering hides
    tile seams better than the uniform average because each tile's least reliable pixels (near
    its own edge, where the network saw padding instead of real context) get the least weight.
    """
    w = torch.ones(length, dtype=torch.float32)
    ramp_len = min(overlap, length)
    if ramp_len <= 0:
        return w
    i = torch.arange(ramp_len, dtype=torch.float64)
    ramp = torch.sin(0.5 * math.pi * (i + 0.5) / ramp_len).pow(2).to(torch.float32)
    if ramp_start:
        w[:ramp_len] = torch.minimum(w[:ramp_len], ramp)
    if ramp_end:
        w[length - ramp_len :] = torch.minimum(w[length - ramp_len :], ramp.flip(0))
    return w


def model_in_channels(model: nn.Module) -> int | None:
    """Input channel count of ``model``: that of the first ``nn.Conv2d`` in ``model.modules()``.

    Returns None when the model has no Conv2d (then no channel adaptation is done).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def adapt_channels(
    x: torch.Tensor, model_in_channels: int | None
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Make an N×C×H×W image fit a model with ``model_in_channels`` inputs.

    Returns ``(model_input, undo)`` where ``undo(model_output)`` brings the output back to the
    image's channel count, so a grey image restored by an RGB model is still grey and vice
    versa:

    * C = 1, model 3: the grey plane is repeated to RGB; ``undo`` averages the output channels
      (keepdim, one channel).
    * C = 3, model 1: the channels are folded into the batch (N·3×1×H×W), each restored as a
      grey image; ``undo`` unfolds N·3×1×H×W back to N×3×H×W.
    * equal counts (or ``None``): unchanged, ``undo`` is the identity.

    Raises:
        ValueError: any other combination, naming both channel counts.
    """
    if x.ndim != 4:
        raise ValueError(f"adapt_channels expects an N×C×H×W tensor, got shape {tuple(x.shape)}")
    n, c = int(x.shape[0]), int(x.shape[1])
    if model_in_channels is None or model_in_channels == c:
        return x, _identity
    if c == 1 and model_in_channels == 3:
        return x.expand(-1, 3, -1, -1), _mean_channels
    if c == 3 and model_in_channels == 1:

        def unfold(y: torch.Tensor) -> torch.Tensor:
            if y.shape[0] != n * 3 or y.shape[1] != 1:
                raise ValueError(
                    "a 1-channel model fed RGB planes must return one channel per plane, got "
                    f"output shape {tuple(y.shape)} for {n * 3} planes"
                )
            return y.reshape(n, 3, y.shape[-2], y.shape[-1])

        return x.reshape(n * 3, 1, x.shape[-2], x.shape[-1]), unfold
    raise ValueError(
        f"the image has {c} channel(s) but the model expects {model_in_channels}; only grey "
        "(1) <-> RGB (3) conversions are supported"
    )


def _identity(y: torch.Tensor) -> torch.Tensor:
    return y


def _mean_channels(y: torch.Tensor) -> torch.Tensor:
    return y.mean(dim=1, keepdim=True)


def _check_tile(tile: int, overlap: int, multiple: int) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile <= 0:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if tile % multiple:
        raise ValueError(
            f"tile must be a multiple of {multiple} (the model's size factor), got {tile}; "
            f"try {max(multiple, tile // multiple * multiple)}"
        )
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(
            f"overlap must be an integer with 0 <= overlap < tile ({tile}), got {overlap!r}"
        )


def first_parameter(model: nn.Module) -> torch.Tensor | None:
    """The first parameter of ``model`` (else its first buffer, else None): where its device and
    dtype are read from."""
    for p in model.parameters():
        return p
    for b in model.buffers():
        return b
    return None


def restore(
    model: nn.Module,
    x: torch.Tensor,
    *,
    tile: int | None = None,
    overlap: int = 32,
    multiple: int = 8,
    blend: str = "average",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    in_channels: int | None = None,
) -> torch.Tensor:
    """Run ``model`` on an N×C×H×W image batch in [0, 1]; return N×C×H×W float32 on the CPU.

    The output has the input's size and channel count and is clamped to [0, 1].

    * ``tile=None`` (or an image that fits in one tile): pad to ``multiple``, run once, crop.
    * ``tile=T``: T must be a positive multiple of ``multiple`` and ``0 <= overlap < T``.
      Tiles are placed with :func:`tile_starts` on each axis; an axis no longer than T gets a
      single tile that is padded to ``multiple`` instead. Tiles are run one at a time (all N
      images of the batch together), so the device only ever holds one tile batch; outputs
      are blended into a CPU float32 canvas as a running weighted mean, with the accumulated
      weights in a 1×1×H×W canvas (the only full-size buffers besides the input).
    * ``blend="average"``: uniform weights (Restormer's convention). ``blend="gaussian"``:
      raised-cosine feathering over the overlap, see :func:`tile_weights`.

    ``device`` defaults to the device of the model's parameters (CPU if it has none) and
    ``dtype`` (the dtype tiles are cast to before entering the model) to the dtype of its
    first floating parameter, else float32. ``in_channels`` overrides the channel count read
    from the model's first Conv2d; mismatches are handled by :func:`adapt_channels`. The model
    runs under ``torch.inference_mode()`` in eval mode; its previous train/eval mode is
    restored afterwards.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"restore expects an N×C×H×W tensor, got {shape}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")
    if tile is not None:
        _check_tile(tile, overlap, multiple)

    ref = first_parameter(model)
    if device is None:
        device = ref.device if ref is not None else torch.device("cpu")
    device = torch.device(device)
    if dtype is None:
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if in_channels is None:
        in_channels = model_in_channels(model)

    x = x.detach()
    if not x.is_floating_point():
        raise ValueError(f"restore expects a floating-point image in [0, 1], got {x.dtype}")
    n, _, h, w = (int(s) for s in x.shape)
    adapt_channels(x[:, :, :1, :1], in_channels)  # fail early on unsupported channel counts

    tile_h = h if tile is None else min(tile, h)
    tile_w = w if tile is None else min(tile, w)
    starts_y = [0] if tile is None else tile_starts(h, tile, overlap)
    starts_x = [0] if tile is None else tile_starts(w, tile, overlap)

    # Remember every submodule's mode: restoring just the top-level flag would e.g. un-freeze
    # a BatchNorm the caller deliberately kept in eval mode.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:

        def run_tile(y0: int, x0: int) -> torch.Tensor:
            crop = x[:, :, y0 : y0 + tile_h, x0 : x0 + tile_w].to(device=device)
            crop, (ch, cw) = pad_to_multiple(crop, multiple)
            inp, undo = adapt_channels(crop.to(dtype=dtype), in_channels)
            # Only the forward pass runs in inference mode, so the tensors handed back to
            # the caller are ordinary ones (inference tensors cannot be saved for backward).
            with torch.inference_mode():
                out = model(inp)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the model returned {type(out).__name__}, not a tensor")
            if tuple(out.shape[-2:]) != tuple(inp.shape[-2:]):
                raise ValueError(
                    f"the model changed the image size from {tuple(inp.shape[-2:])} to "
                    f"{tuple(out.shape[-2:])}; restore() only supports same-size outputs"
                )
            out = undo(out)[:, :, :ch, :cw]
            return out.to(device="cpu", dtype=torch.float32)

        if len(starts_y) == 1 and len(starts_x) == 1:
            # Out of place: with an identity-like model the output may alias the input.
            return run_tile(0, 0).clamp(0.0, 1.0).contiguous()

        canvas: torch.Tensor | None = None
        weight = torch.zeros(1, 1, h, w, dtype=torch.float32)
        for iy, y0 in enumerate(starts_y):
            if blend == "gaussian":
                wy = tile_weights(
                    tile_h, overlap, ramp_start=iy > 0, ramp_end=iy < len(starts_y) - 1
                )
            for ix, x0 in enumerate(starts_x):
                out = run_tile(y0, x0)
                if canvas is None:
                    canvas = torch.zeros(n, out.shape[1], h, w, dtype=torch.float32)
                ys = slice(y0, y0 + tile_h)
                xs = slice(x0, x0 + tile_w)
                if blend == "gaussian":
                    wx = tile_weights(
                        tile_w, overlap, ramp_start=ix > 0, ramp_end=ix < len(starts_x) - 1
                    )
                    wt = (wy[:, None] * wx[None, :])[None, None]
                else:
                    wt = torch.ones(1, 1, 1, 1, dtype=torch.float32)
                # Running weighted mean: mean += (out - mean) * w / sum(w). Algebraically the
                # same as sum(w·out) / sum(w), but where all tiles agree (e.g. an identity
                # model) the result is bit-exact: the first tile gives out·(w/w) = out and
                # later ones add (out - out)·r = 0.
                total = weight[:, :, ys, xs]
                total += wt
                region = canvas[:, :, ys, xs]
                region += (out - region) * (wt / total)
                del out, region, total  # release before the next tile runs
        assert canvas is not None
        return canvas.clamp_(0.0, 1.0)
    finally:
        for module, mode in modes:
            module.training = mode
