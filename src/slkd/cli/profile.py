"""``slkd profile``: parameters, MACs and latency of presets, alone or side by side."""

from __future__ import annotations

import json

import torch

from slkd.cli.common import device_option, max_threads, note, number, resolve_device
from slkd.engine.memory import format_bytes, forward_memory, memory_shortfall
from slkd.errors import SlkdError
from slkd.models import build_model, list_models
from slkd.models.complexity import compare_latency, count_macs, count_parameters, format_count, latency_ratio

#: the most timed (or warm-up) passes --runs/--warmup accept
MAX_RUNS = 10_000

COUNTED = ("MACs = multiply-accumulates of one forward pass at batch 1: convolutions and matrix "
           "products, including the attention matmuls (q·kᵀ and attn·v); element-wise ops, "
           "norms, softmax, activations and pixel (un)shuffle are not counted")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile",
        help="parameters, MACs and latency of a model, or of two side by side",
        description=f"Profile model presets. {COUNTED}. Latency is the median of --runs "
        "forward passes under inference_mode after --warmup untimed ones; with --compare the "
        "two models are timed interleaved in one run, so their ratio is robust to machine noise.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", metavar="NAME", help=f"one of: {', '.join(list_models())}")
    target.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two presets, e.g. restormer res-sl")
    p.add_argument("--size", nargs=2, type=number(int, minimum=8), default=(256, 256), metavar=("H", "W"),
                   help="input height and width (multiples of 8; default 256 256)")
    p.add_argument("--runs", type=number(int, minimum=1, maximum=MAX_RUNS), default=10,
                   help=f"timed forward passes (default 10, at most {MAX_RUNS})")
    p.add_argument("--warmup", type=number(int, minimum=0, maximum=MAX_RUNS), default=2,
                   help="untimed passes first (default 2)")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=None,
                   help=f"CPU threads (default: torch's; at most the {max_threads()} CPUs this process may use)")
    p.add_argument("--device", type=device_option(), default="cpu",
                   help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--no-latency", action="store_true", help="count parameters and MACs only")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.set_defaults(func=run)


def profile(names: list[str], size: tuple[int, int], *, runs: int, warmup: int,
            threads: int | None, device: torch.device, latency: bool) -> dict:
    h, w = size
    if h <= 0 or w <= 0 or h % 8 or w % 8:
        raise SlkdError(f"--size must be positive multiples of 8 (the models down-sample 3 times), got {h} {w}")
    if not 1 <= runs <= MAX_RUNS or not 0 <= warmup <= MAX_RUNS:
        raise SlkdError(f"--runs must be 1 to {MAX_RUNS} and --warmup 0 to {MAX_RUNS}")
    if threads is not None and not 1 <= threads <= max_threads():
        # torch starts that many OpenMP threads: far more than the CPUs crashed the process
        raise SlkdError(f"--threads must be 1 to {max_threads()} (the CPUs this process may use), got {threads}")
    models = {name: build_model(name).eval() for name in dict.fromkeys(names)}
    if latency:  # the timed passes run the models on a real input: refuse what cannot fit
        for name, model in models.items():
            needed = forward_memory(model, h, w, device=device)
            free = memory_shortfall(needed, device)
            if free is not None:
                raise SlkdError(f"timing {name} at {h}×{w} needs about {format_bytes(needed)} on {device} "
                                f"but only {format_bytes(free)} is available; use a smaller --size, or "
                                "--no-latency to count parameters and MACs only")
    report: dict = {"input_size": [h, w], "counted": COUNTED, "device": str(device), "models": {}}
    for name, model in models.items():
        with torch.device("meta"):  # counting needs shapes only: no memory, no compute
            shape_only = build_model(name)
        macs = count_macs(shape_only, (1, getattr(model, "inp_channels", 3), h, w), device="meta")
        report["models"][name] = {
            "params": count_parameters(model),
            "macs": macs.total,
            "macs_convolution": macs.convolution,
            "macs_attention_matmul": macs.attention_matmul,
        }
    if latency:
        note(f"timing {', '.join(models)} at {h}×{w} ({runs} runs, interleaved) …")
        sizes = {n: (1, getattr(m, "inp_channels", 3), h, w) for n, m in models.items()}
        if len(set(sizes.values())) > 1:
            raise SlkdError("models with different input channels cannot be timed side by side")
        timings = compare_latency({n: m.to(device) for n, m in models.items()},
                                  next(iter(sizes.values())), runs=runs, warmup=warmup,
                                  threads=threads, device=device)
        for name, t in timings.items():
            report["models"][name].update(latency_ms_median=t.median_ms, latency_ms_min=t.min_ms,
                                          latency_runs=t.runs, threads=t.threads)
    if len(names) == 2:
        a, b = (report["models"][n] for n in names)
        ratios = {
            "params_reduction": 1 - b["params"] / a["params"],
            "macs_reduction": 1 - b["macs"] / a["macs"],
        }
        if latency:  # round by round: the median ratio and its spread (interquartile range)
            speed = latency_ratio(timings[names[0]], timings[names[1]])
            ratios.update(speedup=speed.median, speedup_iqr=[speed.q1, speed.q3])
        report["comparison"] = {"reference": names[0], "candidate": names[1], **ratios}
    return report


def _print_table(report: dict) -> None:
    h, w = report["input_size"]
    header = f"{'model':<24}{'params':>12}{'MACs':>14}{'conv':>14}{'attn matmul':>14}"
    timed = any("latency_ms_median" in m for m in report["models"].values())
    if timed:
        header += f"{'latency (median)':>19}"
    print(f"at {h}×{w} on {report['device']}")
    print(header)
    for name, m in report["models"].items():
        line = (f"{name:<24}{format_count(m['params']):>12}{format_count(m['macs']):>14}"
                f"{format_count(m['macs_convolution']):>14}{format_count(m['macs_attention_matmul']):>14}")
        if timed:
            line += f"{m['latency_ms_median']:>16.1f} ms"
        print(line)
    if "comparison" in report:
        c = report["comparison"]
        line = (f"{c['candidate']} vs {c['reference']}: {100 * c['params_reduction']:.1f}% fewer params, "
                f"{100 * c['macs_reduction']:.1f}% fewer MACs")
        if "speedup" in c:
            s, (q1, q3) = c["speedup"], c["speedup_iqr"]
            line += (f", {s:.2f}× faster" if s >= 1 else f", {1 / s:.2f}× slower") + (
                f" (median of the per-round ratios, interleaved; interquartile range {q1:.2f}–{q3:.2f}×)")
        print(line)
    print(f"({report['counted']})")


def run(args) -> int:
    names = list(args.compare) if args.compare else [args.model]
    if args.compare and args.compare[0] == args.compare[1]:
        raise SlkdError("--compare needs two different models")
    report = profile(names, tuple(args.size), runs=args.runs, warmup=args.warmup,
                     threads=args.threads, device=resolve_device(args.device),
                     latency=not args.no_latency)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0
