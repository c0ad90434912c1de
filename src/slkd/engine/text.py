"""How slkd writes numbers for people: durations, log values and table cells, and the device an
``auto`` request resolves to — each written once for the console, the logs and the reports."""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from slkd.errors import SlkdError

__all__ = ["DEVICE_NAME", "cell", "duration", "log_number", "resolve_device"]

#: the accepted device names: auto, cpu, cuda and cuda:N
DEVICE_NAME = re.compile(r"^(auto|cpu|cuda)$|^cuda:\d+$")


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``--device`` value: ``auto`` is the GPU when there is one, else
    the CPU. An unknown name, a CUDA request on a machine without CUDA and a GPU index the
    machine does not have are one :class:`~slkd.errors.SlkdError` line each."""
    if not isinstance(name, str) or not DEVICE_NAME.match(name):
        raise SlkdError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SlkdError(f"--device {name} requested but CUDA is not available on this machine")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise SlkdError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), numbered from 0")
    return device


def duration(seconds: float) -> str:
    """``1h02m`` from an hour on, else ``3m07s`` (whole seconds, rounded); ``?`` for an unknown
    (infinite) time, as an ETA before the first step's speed is known."""
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def log_number(value: Any) -> str:
    """A value of a log line: floats to four significant digits (tiny ones in exponent form)."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def cell(value: Any, spec: str) -> str:
    """A table cell: ``value`` in ``spec``; ``∞``/``−∞`` for an infinite score (a PSNR of
    outputs identical to their targets), ``–`` for a missing or NaN value."""
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)
