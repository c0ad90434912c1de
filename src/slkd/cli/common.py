"""Pieces shared by the sub-commands: building a model from a preset and a weights file,
choosing a device, printing notes."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

from slkd.engine.inference import INFERENCE_PATHS
from torch import nn

from slkd.engine.config import ConfigError, load_config
from slkd.engine.runner import log_stderr, run_config
from slkd.engine.text import DEVICE_NAME, resolve_device  # noqa: F401  (the CLI's --device)
from slkd.engine.trainer import RunWords
from slkd.errors import SlkdError
from slkd.models import list_models, load_pretrained

#: pseudo-model for evaluation: the degraded input itself (the "do nothing" baseline)
INPUT_MODEL = "input"


#: human-readable progress and remarks go to stderr so that --json stdout stays clean
note = log_stderr

#: how `slkd train` and `slkd distill` continue a stopped run and start another
RUN_WORDS = RunWords(resume="pass --resume to continue it", new_run="choose another name/output_dir")


def max_threads() -> int:
    """The CPUs this process may run on (its affinity; else ``os.cpu_count()``): the most a
    ``--threads`` option accepts (torch starts that many OpenMP threads; far more than the CPUs
    crashed the process)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def number(kind: type = float, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None):
    """The argparse ``type`` of every numeric option: an int or a finite float within
    ``[minimum, maximum]`` (and ``> above``), else one ``error: argument --x: …`` line. Python's
    ``float()`` accepts 'nan' and 'inf'; an option never does."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be > {above}, got {text}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def device_option(*, indexed: bool = True):
    """The argparse ``type`` of ``--device``: auto, cpu, cuda and (with ``indexed``) cuda:N.
    Anything else (mps, xla, a typo) is refused while parsing; it used to pass torch.device()
    and fail later with a traceback, or run on the CPU without a word."""
    accepted = "auto, cpu, cuda" + (" or cuda:N" if indexed else " (under torchrun each rank "
                                    "takes the GPU of its local rank)")

    def parse(text: str) -> str:
        if not DEVICE_NAME.match(text) or (not indexed and text.startswith("cuda:")):
            raise argparse.ArgumentTypeError(f"unknown device {text!r}; use {accepted}")
        return text

    parse.__name__ = "device"
    return parse


def load_model(name: str, weights: str | Path | None, device: torch.device, path: str = "eager") -> nn.Module:
    """:func:`slkd.models.load_pretrained` (official variants adapted, the note on stderr) on
    ``device``, in eval mode, prepared to run the ``path`` way
    (:func:`slkd.engine.inference.inference_model`: ``auto`` is the fastest measured on the
    device)."""
    from slkd.engine.inference import inference_model

    return inference_model(load_pretrained(name, weights, note=note).to(device).eval(), device, path)


def add_model_arguments(parser, *, weights_required: bool, onnx: bool = False) -> None:
    """``--model NAME`` and ``--weights FILE``; with ``onnx`` also ``--onnx FILE`` in their place
    (then neither is required by argparse: :func:`slkd.cli.onnx_option.check_model_or_onnx` asks
    for one of the two)."""
    parser.add_argument("--model", required=not onnx, metavar="NAME",
                        help=f"model preset ({', '.join(list_models())})")
    parser.add_argument("--weights", required=weights_required and not onnx, metavar="FILE",
                        help="weights file (.pth/.pt with params/params_ema/state_dict, or .safetensors)")
    if onnx:
        from slkd.cli.onnx_option import ONNX_HELP

        parser.add_argument("--onnx", metavar="FILE", default=None, help=ONNX_HELP)


#: --overlap and --blend when --tile is given without them
DEFAULT_OVERLAP, DEFAULT_BLEND = 32, "average"


def check_tiling(args) -> None:
    """Refuse a bad --tile/--overlap up front, as a user error instead of a traceback, and
    --overlap or --blend without --tile (they act on tiles only, and were ignored without a
    word); fill in their defaults."""
    given = [f"--{name}" for name in ("overlap", "blend") if getattr(args, name) is not None]
    if args.tile is None and given:
        raise SlkdError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to tiles "
                        "only: give --tile N too (without it every image is processed whole)")
    if args.overlap is None:
        args.overlap = DEFAULT_OVERLAP
    if args.blend is None:
        args.blend = DEFAULT_BLEND
    if args.tile is None:
        return
    if args.tile <= 0 or args.tile % 8:
        raise SlkdError(f"--tile must be a positive multiple of 8, got {args.tile}")
    if not 0 <= args.overlap < args.tile:
        raise SlkdError(
            f"--overlap must be >= 0 and smaller than --tile ({args.tile}), got {args.overlap}"
        )


def add_tiling_arguments(parser) -> None:
    parser.add_argument("--tile", type=number(int, minimum=8), default=None, metavar="N",
                        help="process in N×N tiles (multiple of 8) to bound memory on large images")
    parser.add_argument("--overlap", type=number(int, minimum=0), default=None, metavar="M",
                        help=f"overlap between tiles in pixels, with --tile (default {DEFAULT_OVERLAP})")
    parser.add_argument("--blend", choices=("average", "gaussian"), default=None,
                        help=f"how overlapping tiles are merged, with --tile (default: {DEFAULT_BLEND}, "
                        "as Restormer)")
    parser.add_argument("--device", type=device_option(), default="auto",
                        help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--inference", choices=("auto", *INFERENCE_PATHS), default="auto",
                        help="how the network runs: auto (default: the fastest measured on the device, "
                        "BENCHMARKS.md §8 and §10), eager, channels_last (weights laid out NHWC) or "
                        "compiled (torch.compile, one compilation per image size: for many images of "
                        "one size or a fixed --tile); the same outputs to float rounding")


def add_run_arguments(parser) -> None:
    """Arguments shared by the commands that run a training config (train, distill)."""
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--resume", action="store_true", help="continue the run in its run folder")
    parser.add_argument("--device", type=device_option(indexed=False), default="auto",
                        help="auto (default), cpu or cuda")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def train_run(args, *, roles: tuple[str, ...], command: str, make_task) -> dict | None:
    """One training run from a config file, shared by ``slkd train`` and ``slkd distill``: read
    and check the config (its role must be one of ``roles``), then
    :func:`slkd.engine.runner.run_config`. Returns the run's result on rank 0 (None on the
    other ranks)."""
    cfg = load_config(args.config, args.overrides)
    if cfg.role not in roles:
        other = "slkd distill" if cfg.role == "distill" else "slkd train"
        raise ConfigError(f"role: {args.config} is a {cfg.role!r} config; use `{other}` for it, "
                          f"not `slkd {command}`")
    return run_config(cfg, make_task=make_task, resume=args.resume, device=args.device,
                      argv=sys.argv, log=note, words=RUN_WORDS)


def run_training(args, *, roles: tuple[str, ...], command: str, make_task) -> int:
    """:func:`train_run`, then the result as one JSON line on stdout (rank 0)."""
    result = train_run(args, roles=roles, command=command, make_task=make_task)
    if result is not None:
        print(json.dumps(result))
    return 0
