"""Compiling a training step's forward (and, through autograd, its backward) with
``torch.compile``: :func:`compile_step`, and :func:`wants_compile`, the one rule that decides
when ``train.compile: auto`` compiles.

What is compiled is the module the trainer calls — for a distiller the whole objective: the
student, the frozen teachers' forwards and every distillation term, one graph with static shapes
(training crops have one size). On CUDA the graph is also captured as CUDA graphs
(``mode="reduce-overhead"``), so a step is a few graph launches instead of thousands of kernel
launches from Python. Compilation happens at the first step; its artefacts are cached on disk
(Inductor's FX-graph and AOTAutograd caches, under :func:`cache_dir`), so a later run of the
same networks and shapes starts warm. Recompilation is bounded (:data:`RECOMPILE_LIMIT`): a
shape that keeps changing falls back to eager code instead of compiling again and again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["COMPILE_MIN_ITERS", "RECOMPILE_LIMIT", "backend", "cache_dir", "compile_inference", "compile_step",
           "wants_compile"]

#: ``train.compile: auto`` compiles a CPU run of at least this many iterations: below it the
#: compilation (minutes cold) costs more than the faster steps save (BENCHMARKS.md §8)
COMPILE_MIN_ITERS = 1000
#: compiled variants of one function before the compiler gives up and runs it eagerly: every
#: network of one family shares its forward's code, so a teacher, its student and a few input
#: sizes in one process each take one; an input size that keeps changing stops compiling here
RECOMPILE_LIMIT = 8


def cache_dir() -> Path:
    """Where compiled artefacts are kept between runs: ``$TORCHINDUCTOR_CACHE_DIR`` if the user
    set it, else ``$XDG_CACHE_HOME/slkd/inductor`` (``~/.cache/slkd/inductor``) — not
    Inductor's default under the temporary folder, which a reboot may empty."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # importing Inductor writes its default into the variable: only another value is the user's
    if given and os.path.abspath(given) != os.path.abspath(default_cache_dir()):
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slkd" / "inductor"


def wants_compile(setting: bool | str, device: torch.device, iters: int) -> bool:
    """``train.compile``: True, False, or "auto" — on for CPU runs of at least
    :data:`COMPILE_MIN_ITERS` iterations, where it measured faster; off on CUDA until the GPU
    check has measured it there (BENCHMARKS.md §10)."""
    if isinstance(setting, bool):
        return setting
    return device.type == "cpu" and iters >= COMPILE_MIN_ITERS


def backend() -> str:
    """The compiler: Inductor, unless ``$SLKD_COMPILE_BACKEND`` names another torch.compile
    backend — tests and dry runs set ``eager`` to trace the very same graphs without generating
    code (seconds instead of minutes)."""
    return os.environ.get("SLKD_COMPILE_BACKEND", "inductor")


def _compile(module: nn.Module, **inductor) -> nn.Module:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir())
    import torch._dynamo

    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    if backend() != "inductor":
        return torch.compile(module, dynamic=False, backend=backend())
    return torch.compile(module, dynamic=False, **inductor)


def compile_step(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` compiled for training on ``device`` (the first call compiles)."""
    return _compile(module, mode="reduce-overhead" if device.type == "cuda" else None)


def compile_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` compiled for inference on ``device``: weights frozen into the graph (constant
    folding, pre-packed convolutions) on the CPU, CUDA graphs on a GPU; one compilation per input
    shape (the first call with it)."""
    if device.type == "cuda":
        return _compile(model, mode="reduce-overhead")
    return _compile(model, options={"freezing": True})
