"""Model complexity: parameters, multiply–accumulate operations (MACs) and CPU/GPU latency.

MACs
----
:func:`count_macs` runs one forward pass under :class:`torch.utils.flop_counter.FlopCounterMode`
(inside :func:`torch.inference_mode`, model in eval mode) and reports MACs = FLOPs / 2: the
counter charges 2 FLOPs (one multiply, one add) per multiply–accumulate for every operation it
counts. The count depends on the input size (one image of ``input_size``, batch 1 by default;
MACs grow linearly with the batch).

What is counted (multiplications of the products only; bias additions are not counted):

* convolutions of any kind (``nn.Conv1d/2d/3d``, transposed, grouped and depth-wise):
  ``N · C_out · (C_in / groups) · prod(kernel) · prod(output spatial)`` for a regular
  convolution (for a transposed one, the input spatial size replaces the output's). Reported
  under ``'convolution'``.
* linear layers (``nn.Linear`` / ``F.linear``): they lower to ``mm`` / ``addmm``:
  ``rows · in_features · out_features``.
* matrix products of activations, ``@`` / ``torch.matmul`` / ``torch.bmm`` / ``torch.einsum``
  (einsum lowers to ``bmm``), e.g. the two attention products of every Restormer MDTA block,
  ``q @ kᵀ`` and ``attn @ v``, ``heads · (C/heads)² · H·W`` MACs each. Reported under
  ``'bmm'`` (``'mm'`` for plain 2-D operands).
* ``F.scaled_dot_product_attention``: ``batch · heads · L · S · (E + E_v)`` (the two products
  ``q kᵀ`` and ``attn v``; a causal mask does not reduce the count). What ``FlopCounterMode``
  does with this op depends on the torch version and device: torch 2.13 on CPU decomposes it
  into ``bmm`` and counts it, but where the counter meets a fused kernel it has no formula for
  (e.g. ``_scaled_dot_product_flash_attention_for_cpu``) it counts **0**. :func:`count_macs`
  therefore gives the counter its own formula for the SDPA ops, so the count never depends on
  the kernel chosen and appears under ``'scaled_dot_product_attention'`` (or under the fused op
  the counter already has a formula for, e.g. ``'_scaled_dot_product_efficient_attention'``).
* the fused fast paths of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
  (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) are counted as 0 by
  ``FlopCounterMode``; :func:`count_macs` switches that fast path off while counting (the same
  products then run as ``addmm`` + SDPA). As a backstop, any other attention-like op for which
  the counter records nothing raises :class:`NotImplementedError` instead of silently
  under-counting.

What is not counted: element-wise operations (additions, residuals, scaling by the
temperature, gating products), normalisations (layer/batch norm, ``F.normalize``), softmax,
activations (GELU, ReLU, ...), pooling, pixel (un)shuffle, interpolation, concatenation and
reshapes. They are memory-bound and conventionally excluded from MAC counts. Custom or
third-party kernels that ``FlopCounterMode`` has no formula for count 0.

For the default Restormer at 1×3×256×256 this gives 154.88 G MACs: 140.99 G in convolutions
(exactly the "~141 G" quoted in the literature, which thus leaves out the attention products)
plus 13.89 G in the MDTA attention matmuls.

Latency
-------
:func:`measure_latency` times ``runs`` forward passes of one model with ``time.perf_counter``
(after ``warmup`` untimed ones) and reports the median, minimum, mean and maximum in
milliseconds. :func:`compare_latency` times several models **interleaved** in one process
(round-robin: A, B, A, B, ...), so that slow phases of the machine (other processes, thermal or
frequency changes, memory pressure) hit every model equally; ratios of its medians are
trustworthy where numbers from separate runs, or from one model timed after the other, are not.
:func:`latency_ratio` compares two models round by round (the ratio of their times in each
round, whose median and interquartile range say how fast and how noisy): on a busy machine the
spread shows it, and two models of one architecture timed side by side must come out level.
Absolute latencies depend on the machine, the thread count and the torch build.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "LatencyRatio",
    "LatencyReport",
    "MacReport",
    "compare_latency",
    "count_macs",
    "count_parameters",
    "format_count",
    "latency_ratio",
    "measure_latency",
]

DEFAULT_INPUT_SIZE: tuple[int, ...] = (1, 3, 256, 256)

# by_op keys (op names without the "aten." prefix) that form each category of MacReport
_BATCHED_MATMUL_OPS = frozenset({"bmm", "baddbmm"})
_MATMUL_OPS = _BATCHED_MATMUL_OPS | {"mm", "addmm", "_scaled_mm", "matmul"}

# SDPA entry points and fused kernels whose first three arguments are query, key, value
_SDPA_OP_NAMES = (
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
)

# substrings of op names that do matrix products on their own (fused attention kernels);
# if FlopCounterMode records nothing for one of them, count_macs refuses to under-count
_FUSED_ATTENTION_MARKERS = ("attention", "_transformer_encoder_layer")


# --------------------------------------------------------------------------------------------
# parameters


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters once; buffers are not parameters).

    ``trainable_only=True`` counts only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# MACs


@dataclass(frozen=True)
class MacReport:
    """Multiply–accumulate operations of one forward pass at ``input_size``.

    ``by_op`` maps op names as the counter sees them (``'convolution'``, ``'bmm'``, ``'mm'``,
    ``'addmm'``, ``'scaled_dot_product_attention'``, ...) to MACs; ``total`` is their sum.
    """

    total: int
    by_op: dict[str, int] = field(hash=False)
    input_size: tuple[int, ...]

    @property
    def convolution(self) -> int:
        """MACs of all convolutions (regular, grouped, depth-wise, transposed)."""
        return sum(v for k, v in self.by_op.items() if "conv" in k)

    @property
    def matmul(self) -> int:
        """MACs of all matrix products: linear layers (``mm``/``addmm``), ``@``/``bmm``/einsum
        and fused attention."""
        return sum(v for k, v in self.by_op.items() if k in _MATMUL_OPS or "attention" in k)

    @property
    def attention_matmul(self) -> int:
        """MACs of batched activation × activation products: ``bmm``/``baddbmm`` (``@`` on ≥3-D
        operands, einsum) and fused attention (SDPA). In Restormer these are exactly the two MDTA
        products per block. Linear layers lower to ``mm``/``addmm`` and are not included (they are
        in :attr:`matmul`); nor is an un-batched 2-D ``q @ kᵀ`` (also an ``mm``).
        """
        return sum(
            v for k, v in self.by_op.items() if k in _BATCHED_MATMUL_OPS or "attention" in k
        )

    @property
    def other(self) -> int:
        """MACs of counted ops that are neither convolutions nor matrix products."""
        return self.total - self.convolution - self.matmul

    def __str__(self) -> str:
        size = "×".join(str(s) for s in self.input_size)
        return (
            f"{format_count(self.total, 'MACs')} at {size} "
            f"(convolution {format_count(self.convolution, 'MACs')}, "
            f"matmul {format_count(self.matmul, 'MACs')})"
        )


def _op_name(packet: Any) -> str:
    """'aten.convolution' -> 'convolution'; ops of other namespaces keep 'namespace.op'."""
    qualified = getattr(packet, "_qualified_op_name", None)
    if isinstance(qualified, str):
        namespace, _, name = qualified.partition("::")
        return name if namespace == "aten" else f"{namespace}.{name}"
    name = str(packet)
    return name[len("aten.") :] if name.startswith("aten.") else name


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs (2 per MAC) of q·kᵀ and attn·v for query (..., L, E), key (..., S, E), value
    (..., S, Ev). The batch/head dimensions are the query's (grouped-query attention
    broadcasts key and value heads to them)."""
    *batch, length, embed = query_shape
    source = key_shape[-2]
    value_embed = value_shape[-1]
    return 2 * math.prod(batch) * length * source * (embed + value_embed)


def _sdpa_mapping() -> dict[Any, Callable[..., int]]:
    """custom_mapping entries for FlopCounterMode: every SDPA op (packet and overloads)."""
    mapping: dict[Any, Callable[..., int]] = {}
    for name in _SDPA_OP_NAMES:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:  # not in this torch version
            continue
        mapping[packet] = _sdpa_flops
        for overload in packet.overloads():
            mapping[getattr(packet, overload)] = _sdpa_flops
    return mapping


class _UncountedAttentionGuard(TorchDispatchMode):
    """Sits on top of FlopCounterMode; raises if a fused attention kernel is counted as 0."""

    def __init__(self, counter: FlopCounterMode) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func._overloadpacket)
        watched = "backward" not in name and any(m in name for m in _FUSED_ATTENTION_MARKERS)
        if not watched:
            return func(*args, **kwargs)
        before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        empty = any(isinstance(a, torch.Tensor) and a.numel() == 0 for a in args)
        if self.counter.get_total_flops() == before and not empty:
            raise NotImplementedError(
                f"count_macs: FlopCounterMode has no FLOP formula for the fused attention op "
                f"'{name}' and would count its matrix products as 0, under-reporting the MACs. "
                "Call the attention through F.scaled_dot_product_attention or explicit matmuls, "
                "or extend count_macs with a formula for this op."
            )
        return out


@contextlib.contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    """Switch off the fused nn.MultiheadAttention/TransformerEncoderLayer fast path (counted as 0
    by FlopCounterMode); the slow path computes the same products with countable ops."""
    mha = getattr(torch.backends, "mha", None)
    getter = getattr(mha, "get_fastpath_enabled", None)
    setter = getattr(mha, "set_fastpath_enabled", None)
    if getter is None or setter is None:
        yield
        return
    previous = getter()
    setter(False)
    try:
        yield
    finally:
        setter(previous)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each module's own training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _resolve_device(model: nn.Module, device: str | torch.device) -> torch.device:
    """The device to build the input on; refuses a model whose parameters live elsewhere
    (moving the model would change the caller's object)."""
    wanted = torch.device(device)
    for tensor in list(model.parameters()) + list(model.buffers()):
        have = tensor.device
        if have.type != wanted.type or (wanted.index is not None and have.index != wanted.index):
            raise ValueError(
                f"the model is on {have} but device={str(wanted)!r}; move it first "
                f"(model.to({str(wanted)!r})) or pass device={str(have)!r}"
            )
        return have  # 'cuda' resolves to the model's own GPU
    return wanted


def _make_input(
    model: nn.Module, input_size: Sequence[int], device: str | torch.device
) -> torch.Tensor:
    """A reproducible input of ``input_size`` (values in [0, 1], like images) in the dtype of the
    model's parameters, on ``device`` (no data on the meta device)."""
    size = tuple(int(s) for s in input_size)
    if not size or any(s <= 0 for s in size):
        raise ValueError(f"input_size must be a tuple of positive sizes, got {tuple(input_size)!r}")
    where = _resolve_device(model, device)
    dtype = next(
        (p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype()
    )
    if where.type == "meta":
        return torch.empty(size, device=where, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(size, generator=generator).to(device=where, dtype=dtype)


def count_macs(
    model: nn.Module,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    *,
    device: str | torch.device = "cpu",
) -> MacReport:
    """MACs of one forward pass of ``model`` on an input of ``input_size`` (N, C, H, W).

    See the module docstring for what is counted. ``device='meta'`` (with a model built under
    ``torch.device('meta')``) counts without computing anything, which is instant even for
    large inputs. The model is left on its device and in its previous training mode.
    """
    x = _make_input(model, input_size, device)
    size = tuple(x.shape)
    counter = FlopCounterMode(display=False, custom_mapping=_sdpa_mapping())
    with _eval_mode(model), _mha_fastpath_disabled(), torch.inference_mode():
        with counter, _UncountedAttentionGuard(counter):
            model(x)
    by_op: dict[str, int] = {}
    for packet, flops in counter.get_flop_counts().get("Global", {}).items():
        name = _op_name(packet)
        by_op[name] = by_op.get(name, 0) + int(flops) // 2
    return MacReport(total=sum(by_op.values()), by_op=by_op, input_size=size)


# --------------------------------------------------------------------------------------------
# latency


@dataclass(frozen=True)
class LatencyReport:
    """Wall-clock time of single forward passes, in milliseconds."""

    median_ms: float
    min_ms: float
    mean_ms: float
    max_ms: float
    times_ms: tuple[float, ...]
    runs: int
    warmup: int
    threads: int
    device: str
    input_size: tuple[int, ...]

    @classmethod
    def from_times(
        cls,
        times_ms: Sequence[float],
        *,
        warmup: int,
        threads: int,
        device: str,
        input_size: Sequence[int],
    ) -> LatencyReport:
        times = tuple(float(t) for t in times_ms)
        if not times:
            raise ValueError("a latency report needs at least one timed run")
        return cls(
            median_ms=statistics.median(times),
            min_ms=min(times),
            mean_ms=statistics.fmean(times),
            max_ms=max(times),
            times_ms=times,
            runs=len(times),
            warmup=warmup,
            threads=threads,
            device=device,
            input_size=tuple(int(s) for s in input_size),
        )

    def __str__(self) -> str:
        return (
            f"median {self.median_ms:.2f} ms (min {self.min_ms:.2f}, mean {self.mean_ms:.2f}, "
            f"max {self.max_ms:.2f}; {self.runs} runs, {self.threads} threads, {self.device})"
        )


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
    """Temporarily use ``threads`` intra-op threads (None: keep the current setting)."""
    previous = torch.get_num_threads()
    if threads is None:
        yield previous
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _check_counts(runs: int, warmup: int) -> None:
    if int(runs) < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if int(warmup) < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def _timer(device: torch.device, clock: Callable[[], float] = time.perf_counter) -> Callable[[Callable[[], Any]], float]:
    """A function that runs ``fn`` once and returns its wall-clock time in ms by ``clock``
    (seconds; synchronising the GPU before and after on CUDA, so queued kernels are inside the
    measurement)."""
    sync: Callable[[], None]
    if device.type == "cuda":
        def sync() -> None:
            torch.cuda.synchronize(device)
    else:
        def sync() -> None:
            pass

    def time_once(fn: Callable[[], Any]) -> float:
        sync()
        start = clock()
        fn()
        sync()
        return (clock() - start) * 1000.0

    return time_once


def compare_latency(
    models: Mapping[str, nn.Module],
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    runs: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    *,
    device: str | torch.device = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, LatencyReport]:
    """Time several models **interleaved** in one process and return a report per name.

    Warm-up and timed rounds go round-robin over the models (A, B, A, B, ...; one forward pass
    each per round), so that machine noise — other processes, frequency/thermal changes, memory
    pressure — falls on all models alike. This is what makes the ratio of two medians
    trustworthy; timing one model completely and then the other is not. All models get the same
    input (``input_size``, built on ``device``; each model must already be there), run under
    :func:`torch.inference_mode` in eval mode (each module's training flag is restored after),
    and, if ``threads`` is given, with that many intra-op threads (the setting is restored).
    ``clock`` (seconds) is :func:`time.perf_counter`; tests give a fake one. Each report's
    ``times_ms[i]`` is of round ``i``, so :func:`latency_ratio` can pair them.
    """
    if not models:
        raise ValueError("compare_latency needs at least one model")
    _check_counts(runs, warmup)
    size = tuple(int(s) for s in input_size)
    names = list(models)
    inputs = {name: _make_input(models[name], size, device) for name in names}
    timers = {name: _timer(inputs[name].device, clock) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        used_threads = stack.enter_context(_num_threads(threads))
        for name in names:
            stack.enter_context(_eval_mode(models[name]))
        stack.enter_context(torch.inference_mode())
        for round_index in range(int(warmup) + int(runs)):
            for name in names:
                model, x = models[name], inputs[name]
                elapsed = timers[name](lambda: model(x))
                if round_index >= warmup:
                    times[name].append(elapsed)
    return {
        name: LatencyReport.from_times(
            times[name],
            warmup=int(warmup),
            threads=used_threads,
            device=str(inputs[name].device),
            input_size=size,
        )
        for name in names
    }


@dataclass(frozen=True)
class LatencyRatio:
    """How many times longer one model took than another, from the rounds of one
    :func:`compare_latency` call: the median of the per-round ratios and its interquartile range
    (``q1``–``q3``). A ratio taken round by round cancels the slow phases of the machine that hit
    both models of a round; the spread shows what remains."""

    median: float
    q1: float
    q3: float
    rounds: int

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median (0: every round agreed)."""
        return (self.q3 - self.q1) / self.median

    def __str__(self) -> str:
        return f"{self.median:.2f}× (interquartile range {self.q1:.2f}–{self.q3:.2f}×, {self.rounds} rounds)"


def latency_ratio(slow: LatencyReport, fast: LatencyReport) -> LatencyRatio:
    """``slow``'s time over ``fast``'s, round by round (both from one :func:`compare_latency`
    call, so their ``times_ms`` are of the same rounds): > 1 when ``fast`` is faster."""
    if len(slow.times_ms) != len(fast.times_ms) or not slow.times_ms:
        raise ValueError("latency_ratio needs two reports of the same timed rounds")
    ratios = sorted(a / b for a, b in zip(slow.times_ms, fast.times_ms))
    if len(ratios) == 1:
        q1 = q3 = ratios[0]
    else:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return LatencyRatio(median=statistics.median(ratios), q1=q1, q3=q3, rounds=len(ratios))


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    *,
    runs: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> LatencyReport:
    """Time ``runs`` forward passes of ``model`` (after ``warmup`` untimed ones), in ms.

    Runs under :func:`torch.inference_mode` with the model in eval mode (each module's training
    flag is restored after), timed with :func:`time.perf_counter`, synchronising CUDA around each
    pass. ``threads`` temporarily sets :func:`torch.set_num_threads`. To compare models, use
    :func:`compare_latency`, which interleaves them.
    """
    return compare_latency(
        {"model": model}, input_size, runs=runs, warmup=warmup, threads=threads, device=device
    )["model"]


# --------------------------------------------------------------------------------------------
# formatting

_SUFFIXES = ("", "K", "M", "G", "T", "P", "E")


def format_count(n: float, unit: str = "") -> str:
    """Human-readable count with decimal (SI) prefixes and two decimals.

    ``format_count(26_126_644)`` -> ``'26.13 M'``, ``format_count(140_990_000_000, 'MACs')`` ->
    ``'140.99 GMACs'``, ``format_count(512, 'MACs')`` -> ``'512 MACs'``.
    """
    value = float(n)
    if abs(value) < 1000:
        number = f"{int(value)}" if value == int(value) else f"{value:.2f}"
        return f"{number} {unit}".rstrip()
    exponent = 0
    while abs(value) >= 1000 and exponent < len(_SUFFIXES) - 1:
        value /= 1000.0
        exponent += 1
    if round(abs(value), 2) >= 1000 and exponent < len(_SUFFIXES) - 1:  # 999.999 K -> 1.00 M
        value /= 1000.0
        exponent += 1
    return f"{value:.2f} {_SUFFIXES[exponent]}{unit}"
