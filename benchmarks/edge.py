"""Deployed on a CPU: INT8 against float students, hardware-shaped against paper-shaped students,
and the deployed student against the deployed float teacher — side by side in one run.

Two modes:

``python -m benchmarks.edge`` (the table; ``benchmarks/results/edge.json``)
    1. **PSNR, float vs INT8**: every committed study student (``benchmarks/weights/<task>/
       students/*.safetensors``, res-sl-tiny) exported to ONNX and to INT8
       (:func:`slkd.models.quantize.export_int8`, calibrated on crops of the study's own training
       data: BSDS500 without the CBSD68 names, σ 25; the Rain100L training pairs), both scored by
       the path ``slkd eval --onnx`` takes on CBSD68 σ 25 (RGB) and the Rain100L test split (Y).
    2. **Latency** (one process, interleaved rounds, :func:`slkd.models.complexity.compare_latency`,
       ``--threads`` for PyTorch and ONNX Runtime alike): INT8 vs float ONNX student (res-sl-tiny,
       a committed denoising student; and res-sl) at 256² and 1024²; the hardware-shaped student
       (res-sl-hw) against the paper's (res-sl) in PyTorch, ONNX float and ONNX INT8 at 256²;
       the deployed students against the deployed float teacher (restormer, ONNX Runtime) at 256²,
       with the MACs ratio beside each speed-up. The full-size networks carry seeded random
       weights (latency does not depend on the values); their INT8 graphs are calibrated on
       BSDS500 crops like the rest.

``python -m benchmarks.edge --float-sets`` (``benchmarks/results/edge_float_nodes.json``)
    How the default nodes kept in float (:data:`slkd.models.quantize.DEFAULT_KEEP_FLOAT`) were
    chosen: PSNR of INT8 graphs of one committed student per task, for each candidate set of
    node groups kept in float (and each calibration method for the chosen set), against the
    float graph, on the first ``--images`` test images. PSNR only: nothing is timed.

``python -m benchmarks.edge --int8-latency`` (``benchmarks/results/edge_int8_latency.json``)
    Where an INT8 graph's time goes: latency at 256² of the float graph and of INT8 graphs with
    each set of :data:`LATENCY_SETS` kept in float (the default set first), interleaved in one
    process, for the hardware-shaped and the tiny student (seeded random weights, calibrated on
    BSDS500 crops); then ONNX Runtime's own profile (per operator type, milliseconds per pass,
    ``--runs`` passes) of the float graph and of the default INT8 graph.

``--quick`` runs everything at toy size (tiny networks, 2 images, 32² timings, 3 rounds) so that
a test can check the benchmark end to end in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine, refuse_existing, write_report
from slkd.cli.common import max_threads, number
from slkd.data.folders import EvalSamples, scan_eval_folder
from slkd.engine.evaluation import Convention, evaluate
from slkd.models import build_model, compare_latency, count_macs, load_pretrained
from slkd.models.complexity import latency_ratio

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLKD_DATA", ROOT.parent / "shared" / "data"))
WEIGHTS = ROOT / "benchmarks" / "weights"
STUDENT = "res-sl-tiny"
#: task → (weights folder, test folder, slkd eval --task, calibration folder, calibration sigma)
TASKS = {
    "denoise25": ("denoise25", "CBSD68", "denoise", "BSDS500", 25.0),
    "derain": ("derain", "Rain100L/test", "derain", "Rain100L/train", None),
}
#: candidate sets of node groups kept in float (slkd.models.quantize.FLOAT_GROUPS)
FLOAT_SETS = (
    (),
    ("attention_matmul", "output"),
    ("full_resolution",),
    ("data_movement",),
    ("data_movement", "attention_matmul"),
    ("data_movement", "output"),
    ("data_movement", "attention_matmul", "output"),
    ("data_movement", "output", "patch_embed"),
    ("data_movement", "attention_matmul", "output", "patch_embed"),
    ("data_movement", "attention_matmul", "output", "depthwise"),
    ("data_movement", "attention_matmul", "output", "resample"),
)
#: the sets the other calibration methods are tried on
METHOD_SETS = (
    ("data_movement", "attention_matmul", "output"),
    ("data_movement", "output", "patch_embed"),
    ("data_movement", "attention_matmul", "output", "patch_embed"),
)
CALIBRATION_METHODS = ("MinMax", "Percentile")
#: --int8-latency: the default set, then more of the network kept in float
LATENCY_SETS = (
    ("data_movement", "patch_embed", "output"),
    ("data_movement", "patch_embed", "output", "depthwise"),
    ("data_movement", "patch_embed", "output", "attention_matmul"),
    ("data_movement", "patch_embed", "output", "depthwise", "attention_matmul"),
)


def _calibration(task: str, args, channels: int = 3):
    from slkd.models.quantize import calibration_set

    _, test, _, calib, sigma = TASKS[task]
    exclude = [p.stem for p in (DATA / test).rglob("*") if p.is_file()] if task == "denoise25" else []
    crops, holdout = (4, 2) if args.quick else (args.calib_crops, 8)
    patch = 32 if args.quick else 128
    return calibration_set(DATA / calib, sigma=sigma, crops=crops, patch=patch, holdout=holdout,
                           channels=channels, exclude=exclude)


def _samples(task: str, limit: int | None) -> tuple[EvalSamples, Convention]:
    _, test, eval_task, _, sigma = TASKS[task]
    folder = scan_eval_folder(DATA / test)
    items = folder.items[:limit] if limit else folder.items
    return (EvalSamples(items, eval_task, sigma=sigma or 25.0, seed=0), Convention.for_task(eval_task))


def _score(model, samples, convention) -> float:
    return evaluate(model, samples, convention=convention, metrics=("psnr",)).mean["psnr"]


def _students(task: str, quick: bool) -> list[Path]:
    found = sorted((WEIGHTS / TASKS[task][0] / "students").glob("*.safetensors"))
    return found[:1] if quick else found


def _onnx_pair(model, name: str, calib, folder: Path, keep_float=None) -> tuple[Path, Path, dict]:
    """Float and INT8 ONNX files of ``model`` under ``folder``."""
    from slkd.models.export import export_onnx
    from slkd.models.quantize import DEFAULT_KEEP_FLOAT, export_int8

    float_path, int8_path = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
    export_onnx(model, float_path, model_name=name)
    result = export_int8(model, int8_path, calib, model_name=name, max_drop=math.inf, min_fidelity=-math.inf,
                         keep_float=DEFAULT_KEEP_FLOAT if keep_float is None else keep_float)
    holdout = result.holdout
    return float_path, int8_path, {"holdout_float_psnr": holdout.float_psnr, "holdout_int8_psnr": holdout.int8_psnr,
                                   "float_mb": round(float_path.stat().st_size / 1e6, 3),
                                   "int8_mb": round(result.size_bytes / 1e6, 3), **result.quantization}


# --------------------------------------------------------------------------- float sets


def float_sets(args) -> dict:
    from slkd.models.export import build_onnx
    from slkd.models.onnx_model import OnnxModel
    from slkd.models.quantize import quantize_graph

    rows = []
    limit = 2 if args.quick else args.images
    sets = FLOAT_SETS[:2] if args.quick else FLOAT_SETS
    with tempfile.TemporaryDirectory(prefix="slkd-edge-") as tmp:
        for task in TASKS:
            weights = _students(task, args.quick)[0] if not args.quick else None
            torch.manual_seed(0)
            model = (load_pretrained(STUDENT, weights) if weights else build_model(STUDENT)).eval()
            calib = _calibration(task, args)
            samples, convention = _samples(task, limit)
            proto, _ = build_onnx(model, model_name=STUDENT)
            float_path = Path(tmp) / f"{task}.onnx"
            float_path.write_bytes(proto.SerializeToString())
            float_psnr = _score(OnnxModel(float_path, threads=args.threads), samples, convention)
            print(f"{task}: float {float_psnr:.3f} dB on {len(samples)} images", flush=True)
            methods = [(s, "MinMax") for s in sets] + [
                (keep, m) for m in CALIBRATION_METHODS[1:] for keep in METHOD_SETS if not args.quick]
            for keep, method in methods:
                started = time.perf_counter()
                groups = tuple(keep)
                quantized, info = quantize_graph(proto, calib.inputs, keep_float=groups, calibrate_method=method)
                path = Path(tmp) / f"{task}.int8.onnx"
                path.write_bytes(quantized.SerializeToString())
                psnr = _score(OnnxModel(path, threads=args.threads), samples, convention)
                row = {"task": task, "weights": str(weights.relative_to(ROOT)) if weights else "random (quick)",
                       "keep_float": list(groups), "calibration": method, "images": len(samples),
                       "float_psnr": float_psnr, "int8_psnr": psnr, "drop_db": float_psnr - psnr,
                       "float_nodes": info["float_nodes"], "quantized_nodes": info["quantized_nodes"],
                       "seconds": round(time.perf_counter() - started, 1)}
                rows.append(row)
                print(f"  keep float {'+'.join(groups) or '(none)':<45} {method:<10} INT8 {psnr:.3f} dB "
                      f"(drop {row['drop_db']:+.3f}; {info['quantized_nodes']} quantised)", flush=True)
    return {"benchmark": "edge_float_nodes",
            "what": "PSNR of INT8 graphs (quantize_static, QDQ, per-channel) of a committed student per task, "
                    "by the node groups kept in float and the calibration method, against its float graph",
            "calibration": {t: _calibration(t, args).described for t in TASKS}, "rows": rows}


# --------------------------------------------------------------------------- the table


def _macs(name: str, size: int) -> int:
    with torch.device("meta"):
        shape_only = build_model(name)
    return count_macs(shape_only, (1, 3, size, size), device="meta").total


def _stats(report) -> dict:
    return {"median_ms": report.median_ms, "min_ms": report.min_ms, "runs": report.runs}


def _time(models: dict, size: int, args) -> dict:
    runs, warmup = (3, 1) if args.quick else (args.runs, args.warmup)
    timings = compare_latency(models, (1, 3, size, size), runs=runs, warmup=warmup, threads=args.threads)
    return timings


def psnr_table(args, tmp: Path) -> list[dict]:
    from slkd.models.onnx_model import OnnxModel

    rows = []
    for task in TASKS:
        calib = _calibration(task, args)
        samples, convention = _samples(task, 2 if args.quick else None)
        for weights in _students(task, args.quick):
            torch.manual_seed(0)
            model = load_pretrained(STUDENT, weights).eval()
            float_path, int8_path, info = _onnx_pair(model, f"{task}-{weights.stem}", calib, tmp)
            f = _score(OnnxModel(float_path, threads=args.threads), samples, convention)
            q = _score(OnnxModel(int8_path, threads=args.threads), samples, convention)
            rows.append({"task": task, "student": str(weights.relative_to(ROOT)), "images": len(samples),
                         "float_psnr": f, "int8_psnr": q, "drop_db": f - q,
                         "holdout_drop_db": info["holdout_float_psnr"] - info["holdout_int8_psnr"]})
            print(f"{task} {weights.stem:<28} float {f:.3f} dB  INT8 {q:.3f} dB  drop {f - q:+.3f}", flush=True)
    return rows


def latency_table(args, tmp: Path) -> dict:
    from benchmarks.onnx_latency import OrtModel

    calib = _calibration("denoise25", args)
    sizes = [32] if args.quick else args.sizes
    deploy = 32 if args.quick else 256
    if args.quick:
        paper, hw, teacher = "res-sl-tiny", "res-sl-tiny", "restormer-tiny"
        student_weights = None
    else:
        paper, hw, teacher = "res-sl", "res-sl-hw", "restormer"
        student_weights = _students("denoise25", False)[0]
    graphs: dict[str, OrtModel | torch.nn.Module] = {}
    exports = {}
    for name in dict.fromkeys(["res-sl-tiny", paper, hw]):
        torch.manual_seed(0)
        model = (load_pretrained(name, student_weights) if name == "res-sl-tiny" and student_weights
                 else build_model(name)).eval()
        float_path, int8_path, info = _onnx_pair(model, name, calib, tmp)
        exports[name] = info
        graphs[f"{name} pytorch"] = model
        graphs[f"{name} onnx float"] = OrtModel(float_path, args.threads)
        graphs[f"{name} onnx int8"] = OrtModel(int8_path, args.threads)
    torch.manual_seed(0)
    teacher_model = build_model(teacher).eval()
    from slkd.models.export import export_onnx

    export_onnx(teacher_model, tmp / "teacher.onnx", model_name=teacher)
    graphs[f"{teacher} onnx float"] = OrtModel(tmp / "teacher.onnx", args.threads)
    del teacher_model

    result: dict = {"int8_vs_float": [], "hw_vs_paper": None, "deployed_vs_teacher": None, "exports": exports}
    for size in sizes:
        for name in dict.fromkeys(["res-sl-tiny", paper]):
            t = _time({"float": graphs[f"{name} onnx float"], "int8": graphs[f"{name} onnx int8"]}, size, args)
            speed = latency_ratio(t["float"], t["int8"])
            result["int8_vs_float"].append({"model": name, "size": size, "float": _stats(t["float"]),
                                            "int8": _stats(t["int8"]), "speedup": speed.median,
                                            "speedup_iqr": [speed.q1, speed.q3]})
            print(f"{name} {size}²: ONNX float {t['float'].median_ms:.1f} ms, INT8 {t['int8'].median_ms:.1f} ms, "
                  f"{speed.median:.2f}×", flush=True)
    names = [f"{n} {r}" for n in (paper, hw) for r in ("pytorch", "onnx float", "onnx int8")]
    t = _time({n: graphs[n] for n in names}, deploy, args)
    rows = []
    for runtime in ("pytorch", "onnx float", "onnx int8"):
        speed = latency_ratio(t[f"{paper} {runtime}"], t[f"{hw} {runtime}"])
        rows.append({"runtime": runtime, paper: _stats(t[f"{paper} {runtime}"]), hw: _stats(t[f"{hw} {runtime}"]),
                     "speedup": speed.median, "speedup_iqr": [speed.q1, speed.q3]})
        print(f"{hw} vs {paper} ({runtime}, {deploy}²): {speed.median:.2f}×", flush=True)
    result["hw_vs_paper"] = {"size": deploy, "macs": {paper: _macs(paper, deploy), hw: _macs(hw, deploy)},
                             "rows": rows}
    students = [f"{n} {r}" for n in dict.fromkeys([paper, hw]) for r in ("onnx float", "onnx int8")]
    t = _time({f"{teacher} onnx float": graphs[f"{teacher} onnx float"], **{n: graphs[n] for n in students}},
              deploy, args)
    teacher_macs = _macs(teacher, deploy)
    rows = []
    for n in students:
        arch = n.split(" ")[0]
        speed = latency_ratio(t[f"{teacher} onnx float"], t[n])
        macs_ratio = teacher_macs / _macs(arch, deploy)
        rows.append({"student": n, "latency": _stats(t[n]), "speedup": speed.median,
                     "speedup_iqr": [speed.q1, speed.q3], "macs_ratio": macs_ratio,
                     "share_of_macs_ratio": speed.median / macs_ratio})
        print(f"{n} vs {teacher} onnx float ({deploy}²): {speed.median:.2f}× of a {macs_ratio:.2f}× MACs ratio "
              f"({100 * speed.median / macs_ratio:.0f} %)", flush=True)
    result["deployed_vs_teacher"] = {"teacher": f"{teacher} onnx float", "size": deploy,
                                     "teacher_latency": _stats(t[f"{teacher} onnx float"]), "rows": rows}
    return result


def _profile(path: Path, size: int, runs: int, threads: int) -> dict[str, float]:
    """ONNX Runtime's own profile of ``runs`` passes at ``size``²: milliseconds per pass by
    operator type (the kernels' time), the first pass (which plans the memory) left out."""
    import json

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(runs + 1):
        session.run(None, {session.get_inputs()[0].name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    by_op: dict[str, float] = {}
    for e in kernels[len(kernels) // (runs + 1):]:  # every pass runs the same kernels, in order
        op = e["args"].get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3 / runs
    return dict(sorted(((k, round(v, 2)) for k, v in by_op.items()), key=lambda kv: -kv[1]))


def int8_latency(args) -> dict:
    """The --int8-latency mode (see the module docstring)."""
    import onnx

    from benchmarks.onnx_latency import OrtModel
    from slkd.models.export import export_onnx
    from slkd.models.quantize import quantize_graph

    calib = _calibration("denoise25", args)
    size = 32 if args.quick else 256
    models = ["res-sl-tiny"] if args.quick else ["res-sl-hw", "res-sl-tiny"]
    sets = LATENCY_SETS[:2] if args.quick else LATENCY_SETS
    rows = []
    with tempfile.TemporaryDirectory(prefix="slkd-edge-") as tmp:
        for name in models:
            torch.manual_seed(0)
            float_path = Path(tmp) / f"{name}.onnx"
            export_onnx(build_model(name).eval(), float_path, model_name=name)
            proto = onnx.load(str(float_path))
            graphs, paths = {"float": OrtModel(float_path, args.threads)}, {"float": float_path}
            for keep in sets:
                quantized, _ = quantize_graph(proto, calib.inputs, keep_float=keep)
                label = "int8 keep " + "+".join(keep)
                paths[label] = Path(tmp) / f"{name}.int8.{len(paths)}.onnx"
                onnx.save(quantized, str(paths[label]))
                graphs[label] = OrtModel(paths[label], args.threads)
            t = _time(graphs, size, args)
            for label in graphs:
                speed = latency_ratio(t["float"], t[label])
                rows.append({"model": name, "size": size, "graph": label,
                             "latency": {**_stats(t[label]), "times_ms": [round(v, 2) for v in t[label].times_ms]},
                             "speed_vs_float": speed.median, "speed_vs_float_iqr": [speed.q1, speed.q3]})
                print(f"{name} {size}²: {label:<70} {t[label].median_ms:8.1f} ms  "
                      f"{speed.median:.2f}× float's speed", flush=True)
            default = "int8 keep " + "+".join(sets[0])
            runs = 2 if args.quick else args.runs
            profile = {label: _profile(paths[label], size, runs, args.threads) for label in ("float", default)}
            rows.append({"model": name, "size": size, "profile_ms_per_pass": profile})
            for label, ops in profile.items():
                top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(ops.items())[:6])
                print(f"  profile {label} ({sum(ops.values()):.1f} ms): {top}", flush=True)
    return {"benchmark": "edge_int8_latency", "rows": rows,
            "what": "latency of the float graph against INT8 graphs with more of the network kept in "
                    "float, and ONNX Runtime's per-operator profile of the float and default INT8 graphs"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--float-sets", action="store_true", help="measure the node groups kept in float instead "
                   "(PSNR only; writes edge_float_nodes.json)")
    p.add_argument("--int8-latency", action="store_true", help="measure where an INT8 graph's time goes "
                   "instead (writes edge_int8_latency.json)")
    p.add_argument("--images", type=number(int, minimum=1), default=20,
                   help="--float-sets: test images per task (default 20)")
    p.add_argument("--sizes", nargs="+", type=number(int, minimum=8), default=[256, 1024], metavar="S",
                   help="INT8 vs float latency sides (default 256 1024)")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=2,
                   help="intra-op threads of PyTorch and ONNX Runtime (default 2)")
    p.add_argument("--runs", type=number(int, minimum=3), default=10, help="timed rounds (default 10)")
    p.add_argument("--warmup", type=number(int, minimum=1), default=2, help="untimed rounds (default 2)")
    p.add_argument("--calib-crops", type=number(int, minimum=1), default=32,
                   help="calibration crops per INT8 graph (default 32)")
    p.add_argument("--no-psnr", dest="psnr", action="store_false", help="latency only")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="PSNR only")
    p.add_argument("--quick", action="store_true", help="toy sizes, for the test (numbers mean nothing)")
    p.add_argument("--json", metavar="OUT", help="default benchmarks/results/edge.json "
                   "(edge_float_nodes.json with --float-sets)")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    args = p.parse_args(argv)
    if args.float_sets and args.int8_latency:
        p.error("--float-sets and --int8-latency are separate runs: give one")
    default = ("edge_float_nodes.json" if args.float_sets else
               "edge_int8_latency.json" if args.int8_latency else "edge.json")
    out = refuse_existing(args.json or ROOT / "benchmarks" / "results" / default, args.overwrite)
    if any(s % 8 for s in args.sizes):
        p.error("--sizes must be multiples of 8")
    import onnx
    import onnxruntime

    load_before = os.getloadavg()
    started = time.perf_counter()
    command = "python -m benchmarks.edge " + " ".join(argv if argv is not None else sys.argv[1:])
    info = {"command": command, "threads": args.threads, "quick": args.quick,
            "machine": {**machine(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                        "loadavg_before": [round(v, 2) for v in load_before]}}
    if args.float_sets:
        report = {**float_sets(args), **info}
    elif args.int8_latency:
        report = {**int8_latency(args), **info}
    else:
        report = {"benchmark": "edge", **info,
                  "what": "deployed students on this CPU: float vs INT8 ONNX (PSNR of the committed "
                          "students, latency), hardware-shaped vs paper-shaped students, deployed "
                          "students vs the deployed float teacher against the MACs ratio"}
        with tempfile.TemporaryDirectory(prefix="slkd-edge-") as tmp:
            if args.psnr:
                report["psnr"] = psnr_table(args, Path(tmp))
            if args.latency:
                report["latency"] = latency_table(args, Path(tmp))
    report["machine"]["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    report["total_s"] = round(time.perf_counter() - started, 1)
    write_report(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
