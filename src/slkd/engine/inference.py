"""Running a restoration network on whole images: padding, tiling and channel adaptation.

Restoration networks with down-sampling stages need H and W divisible by some factor, and
large images do not fit on the device in one piece. :func:`restore` handles both: it pads to a
multiple (reflect, so the border statistics look natural), and optionally cuts the image into
overlapping tiles, runs them one at a time and blends the results on a CPU canvas.

Tile placement follows the Restormer demo convention (stride = tile − overlap, plus a last tile
flush with the far border) so that results are comparable with published tiled numbers.

:func:`estimate_memory` predicts, before anything is allocated, how much memory a
:func:`restore` call will need, so that a command can refuse an image that would exhaust the
machine (and suggest tiling) instead of being killed by the kernel's OOM killer half-way.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "MemoryEstimate",
    "adapt_channels",
    "available_memory",
    "estimate_memory",
    "model_in_channels",
    "pad_to_multiple",
    "restore",
    "tile_starts",
    "tile_weights",
]

BLENDS = ("average", "gaussian")


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


def _first_parameter(model: nn.Module) -> torch.Tensor | None:
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

    ref = _first_parameter(model)
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


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

#: Measured memory of a forward pass relative to the peak of the tensors alive at once (what
#: :func:`estimate_memory` traces exactly). On CPU the process also holds memory the allocator
#: keeps after a free, and oneDNN's re-ordered copies and scratch buffers. Calibrated with
#: ``benchmarks/memory_model.py`` (``benchmarks/results/memory_model.json``): untiled
#: ``slkd restore`` of res-sl-tiny, restormer-tiny, res-sl and restormer at 9 image sizes from
#: 256×256 to 2000×1500, the largest of three runs each (the peak RSS of one case varied by up
#: to 207 MiB between runs); with these values the estimate was 1.03–1.15× the measured growth
#: of the peak RSS in every case and every run (glibc's allocator tuned as ``slkd`` does), never
#: below. CUDA has not been calibrated: its values only allow
#: for cuDNN workspaces and are a guess.
ACTIVATION_OVERHEAD = {"cpu": 1.5, "cuda": 1.25}
#: Fixed bytes a restoration adds whatever the image size (kernel caches, allocator arenas).
FIXED_OVERHEAD = {"cpu": 256 * 2**20, "cuda": 256 * 2**20}
#: Bytes per image sample (one channel of one pixel) that :func:`restore` and ``slkd restore``
#: hold besides the network: decoded file, float32 image, padded copy, output, clamped output and
#: the conversions of :func:`~slkd.data.image_io.write_image` (about 6 float32 copies).
BUFFER_BYTES_PER_SAMPLE = 24

# two model-input sizes from which peak bytes = a + b·pixels is fitted (checked exact against
# traces at 752×1000 for the four Restormer presets)
_PROBE_SIZES = ((32, 32), (64, 48))
_META_PROBE_SIZES = ((64, 64), (128, 96))
_coefficients: dict[tuple, tuple[float, float]] = {}


@dataclass(frozen=True)
class MemoryEstimate:
    """What one :func:`restore` call needs, in bytes.

    ``forward``: the peak bytes of the tensors alive at once in one forward pass on a model
    input of ``model_input`` size (the padded image, or one padded tile), input included — what
    the trace measures; ``activations``: the memory that pass needs on ``device`` (``forward``
    with the calibrated overheads); ``buffers``: the full-size image buffers, always in host
    memory. ``device_bytes`` / ``host_bytes`` split the total by where it must fit (the same
    memory on a CPU).
    """

    device: str
    model_input: tuple[int, int]
    forward: int
    activations: int
    buffers: int

    @property
    def device_bytes(self) -> int:
        return self.activations + (self.buffers if self.device == "cpu" else 0)

    @property
    def host_bytes(self) -> int:
        return self.buffers if self.device != "cpu" else self.device_bytes

    @property
    def total(self) -> int:
        return self.activations + self.buffers


class _PeakLiveBytes(TorchDispatchMode):
    """Follows every tensor storage created inside the mode and records the peak of the bytes
    alive at once (a storage counts until the last tensor using it is garbage)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._users: dict[int, int] = {}
        self._sizes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._users[key] -= 1
        if not self._users[key]:
            del self._users[key]
            self.live -= self._sizes.pop(key)



def _follow_storages(self: _PeakLiveBytes, func, types, args=(), kwargs=None):
    out = func(*args, **(kwargs or {}))
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            key = storage._cdata
            if key not in self._users:
                self._users[key] = 0
                self._sizes[key] = storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self._users[key] += 1
            weakref.finalize(t, self._release, key)
    return out


# Set after the class is made: a __torch_dispatch__ defined in the class body gets wrapped to
# keep torch.compile out, and that wrapper imports torch._dynamo on first use (~3 s).
_PeakLiveBytes.__torch_dispatch__ = _follow_storages


def _forward_peak(model: nn.Module, shape: tuple[int, int, int, int], dtype: torch.dtype,
                  device: torch.device) -> int:
    """Peak bytes of the tensors created by ``model`` on an input of ``shape``, input excluded."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    if device.type == "meta":
        tensors = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
    x = torch.zeros(shape, dtype=dtype, device=device)
    with torch.inference_mode(), _PeakLiveBytes() as tracker:
        out = torch.func.functional_call(model, tensors, (x,))
        del out
    return tracker.peak


def _signature(model: nn.Module) -> tuple:
    """What fixes a network's memory use: its class, structure, tensor shapes and dtypes, and the
    plain settings of its modules (two instances of one preset share it, weights do not count)."""
    parts: list = [type(model).__qualname__, repr(model)]
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        parts.append((name, tuple(t.shape), str(t.dtype)))
    for name, module in model.named_modules():
        settings = sorted((k, v) for k, v in vars(module).items()
                          if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str)))
        parts.append((name, tuple(settings)))
    return tuple(parts)


def _peak_coefficients(model: nn.Module, n: int, c: int, dtype: torch.dtype,
                       device: torch.device, multiple: int) -> tuple[float, float]:
    """``(a, b)`` with peak forward bytes = a + b·pixels, from forward passes at two small sizes
    on ``device`` (a few milliseconds to a second); a model that cannot run there is traced on
    the meta device (shapes only, no memory) at two larger sizes. Cached per architecture."""
    key = (_signature(model), n, c, dtype, multiple, device.type)
    if key in _coefficients:
        return _coefficients[key]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        try:
            if device.type == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("no CUDA here: trace on the meta device")
            sizes = _probe_sizes(_PROBE_SIZES, multiple)
            peaks = [_forward_peak(model, (n, c, h, w), dtype, device) for h, w in sizes]
        except (RuntimeError, NotImplementedError, TypeError, ValueError, AssertionError):
            sizes = _probe_sizes(_META_PROBE_SIZES, multiple)
            peaks = [_forward_peak(model, (n, c, h, w), dtype, torch.device("meta")) for h, w in sizes]
    finally:
        for module, mode in modes:
            module.training = mode
    (h0, w0), (h1, w1) = sizes
    b = max(0.0, (peaks[1] - peaks[0]) / (h1 * w1 - h0 * w0))
    a = max(0.0, peaks[0] - b * h0 * w0)
    _coefficients[key] = (a, b)
    return a, b


def _probe_sizes(sizes: tuple[tuple[int, int], ...], multiple: int) -> list[tuple[int, int]]:
    return [(-(-h // multiple) * multiple, -(-w // multiple) * multiple) for h, w in sizes]


def estimate_memory(
    model: nn.Module,
    height: int,
    width: int,
    *,
    batch: int = 1,
    channels: int = 3,
    tile: int | None = None,
    multiple: int = 8,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> MemoryEstimate:
    """Memory a :func:`restore` call on a ``batch``×``channels``×``height``×``width`` image needs.

    The model is not run on the image: it runs once at two tiny sizes (32×32 and 64×48, on
    ``device``; or traced on the meta device if it cannot) while every tensor it creates is
    followed, which gives the peak of the bytes alive at once as ``a + b·pixels`` — exact for
    networks whose intermediate tensors grow with the image, as convolutional and
    Restormer-style ones do — cached per architecture. The estimate is that peak at the padded image (or padded tile)
    size, plus the model input, times :data:`ACTIVATION_OVERHEAD` plus :data:`FIXED_OVERHEAD`
    for what the allocator and the kernels hold beyond live tensors, plus
    :data:`BUFFER_BYTES_PER_SAMPLE` per image sample for the full-size buffers (decoded file,
    input, output, canvases). Grey images on RGB
    models and RGB images on grey models are accounted as :func:`adapt_channels` runs them.

    ``device`` and ``dtype`` default to those of the model's first parameter.
    """
    if height < 1 or width < 1 or batch < 1:
        raise ValueError(f"image size and batch must be positive, got {batch}×{height}×{width}")
    ref = _first_parameter(model)
    device = torch.device(device if device is not None else (ref.device if ref is not None else "cpu"))
    if dtype is None:
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    in_c = model_in_channels(model) or channels
    n = batch * 3 if (channels == 3 and in_c == 1) else batch
    th, tw = (height, width) if tile is None else (min(tile, height), min(tile, width))
    ph, pw = -(-th // multiple) * multiple, -(-tw // multiple) * multiple
    a, b = _peak_coefficients(model, n, in_c, dtype, device, multiple)
    element = torch.empty((), dtype=dtype).element_size()
    forward = a + b * ph * pw + n * in_c * ph * pw * element
    kind = device.type if device.type in ACTIVATION_OVERHEAD else "cuda"
    activations = forward * ACTIVATION_OVERHEAD[kind] + FIXED_OVERHEAD[kind]
    samples = batch * channels * height * width
    buffers = BUFFER_BYTES_PER_SAMPLE * samples + (4 * height * width if tile is not None else 0)
    return MemoryEstimate(device=device.type, model_input=(ph, pw), forward=int(forward),
                          activations=int(math.ceil(activations)), buffers=int(buffers))


def _cgroup_available() -> int | None:
    """Memory left under this process's cgroup limit (containers), None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        stat = Path("/sys/fs/cgroup/memory.stat").read_text().split()
        reclaimable = int(stat[stat.index("inactive_file") + 1]) if "inactive_file" in stat else 0
        return max(0, int(limit) - used + reclaimable)
    except (OSError, ValueError, IndexError):
        return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``, or None when unknown.

    CUDA: free device memory plus what torch's caching allocator holds unused. CPU: Linux's
    ``MemAvailable`` (free memory plus reclaimable caches), lowered to the cgroup's remaining
    limit inside a container; elsewhere the free physical pages.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    limited = _cgroup_available()
    return found if limited is None else min(found, limited)
