"""How much memory a :func:`~slkd.engine.inference.restore` call will need, predicted before
anything is allocated, and how much the machine has left.

:func:`estimate_memory` lets a command refuse an image that would exhaust the machine (and
suggest tiling) instead of being killed by the kernel's OOM killer half-way;
:func:`available_memory` says what can still be allocated on a device.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from slkd.engine.inference import first_parameter, model_in_channels
from slkd.errors import SlkdError

__all__ = ["ACTIVATION_OVERHEAD", "BUFFER_BYTES_PER_SAMPLE", "FIXED_OVERHEAD", "MemoryEstimate",
           "available_memory", "check_batch_fits", "estimate_memory", "format_bytes", "forward_memory",
           "memory_shortfall"]

#: Measured memory of a forward pass relative to the peak of the tensors alive at once (what
#: :func:`estimate_memory` traces exactly). On CPU the process also holds memory the allocator
#: keeps after a free, and oneDNN's re-ordered copies and scratch buffers. Calibrated with
#: ``benchmarks/memory_model.py`` (untiled ``slkd restore`` of four presets at nine image sizes;
#: the measured ratios are in docs/reliability.md §5) so that the estimate is never below the
#: measured peak. CUDA has not been calibrated: its values only allow for cuDNN workspaces and
#: are a guess.
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
    ref = first_parameter(model)
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


def forward_memory(model: nn.Module, height: int, width: int, *, batch: int = 1,
                   device: torch.device | str = "cpu") -> int:
    """Memory one forward pass of ``model`` on ``batch`` images of ``height``×``width`` needs on
    ``device``: the traced peak of its live tensors (:func:`estimate_memory`'s trace, made on the
    meta device, so nothing is allocated whatever the batch or size) with the calibrated
    overheads, without the image buffers of a restoration. For a training step it is a lower
    bound: training also keeps the activations for the backward pass, the gradients and the
    optimiser's state."""
    device = torch.device(device)
    est = estimate_memory(model, height, width, batch=batch, channels=model_in_channels(model) or 3,
                          device="meta")
    kind = device.type if device.type in ACTIVATION_OVERHEAD else "cuda"
    return int(math.ceil(est.forward * ACTIVATION_OVERHEAD[kind] + FIXED_OVERHEAD[kind]))


def check_batch_fits(models: dict[str, nn.Module], patch: int, batch: int, device: torch.device | str,
                     *, batch_option: str = "--batch", patch_option: str = "--patch") -> None:
    """Refuse, before step 1, a training batch that cannot fit on ``device``: one forward pass of
    any of ``models`` (the network trained, the teachers run beside it) on ``batch`` patches of
    ``patch``×``patch`` (:func:`forward_memory`) is a lower bound of what a step needs.
    ``batch_option``/``patch_option`` name the settings in the message."""
    device = torch.device(device)
    needs = {name: forward_memory(model, patch, patch, batch=batch, device=device) for name, model in models.items()}
    name, needed = max(needs.items(), key=lambda kv: kv[1])
    free = memory_shortfall(needed, device)
    if free is not None:
        raise SlkdError(f"{batch_option} {batch} of {patch}×{patch} patches does not fit: one forward "
                        f"pass of {name} alone needs about {format_bytes(needed)} on {device} (a "
                        f"training step needs more) but only {format_bytes(free)} is available; use "
                        f"a smaller {batch_option} or {patch_option}")


def memory_shortfall(needed: int, device: torch.device | str = "cpu") -> int | None:
    """The memory available on ``device`` when it is less than ``needed`` bytes, else None
    (also when the available memory is unknown)."""
    free = available_memory(device)
    return free if free is not None and needed > free else None


def format_bytes(n: float) -> str:
    """``1.5 GiB`` / ``300 MiB``, as the memory messages write sizes."""
    if n >= 2**40:
        return f"{n / 2**40:.1f} TiB"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


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
