"""``slkd eval``: PSNR/SSIM of a model on a benchmark folder, with the task's convention."""

from __future__ import annotations

import json
import math
from pathlib import Path

from slkd.cli.common import (
    INPUT_MODEL,
    add_model_arguments,
    add_tiling_arguments,
    check_tiling,
    load_model,
    note,
    number,
    resolve_device,
)
from slkd.cli.onnx_option import check_model_or_onnx, load_onnx
from slkd.data.folders import EvalSamples, scan_eval_folder
from slkd.data.image_io import write_image
from slkd.engine.evaluation import NO_REFERENCE, Convention, evaluate as evaluate_model
from slkd.errors import DatasetError, SlkdError
from slkd.fileio import file_in_the_way
from slkd.metrics import BENCHMARK_TASKS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="PSNR/SSIM of a model on a benchmark folder",
        description="Evaluate on a folder in one of the layouts of the shared benchmarks "
        "(paired input/target, noisy/mean, hazy/clear, blurred/gt, or clean images with seeded "
        "Gaussian noise). Pairs are matched by file name. Use --model input to score the "
        "degraded inputs themselves, --onnx FILE to score an exported network.",
    )
    add_model_arguments(p, weights_required=False, onnx=True)
    p.add_argument("--data", required=True, metavar="DIR", help="benchmark folder")
    p.add_argument("--task", required=True, choices=BENCHMARK_TASKS,
                   help="sets the metric convention: derain → Y channel, others → RGB")
    p.add_argument("--sigma", type=number(float, minimum=0, maximum=255), default=None,
                   help="noise level (0-255 scale) added to clean-only folders for --task denoise "
                   "(default 25; an error with paired folders, whose inputs are degraded already)")
    p.add_argument("--noise-seed", type=number(int, minimum=0, maximum=2**32 - 1), default=None,
                   help="seed re-set before each image's noise (default 0, as the literature)")
    space = p.add_mutually_exclusive_group()
    space.add_argument("--y-channel", dest="y_channel", action="store_true", default=None,
                       help="force Y-channel metrics")
    space.add_argument("--rgb", dest="y_channel", action="store_false", help="force RGB metrics")
    p.add_argument("--crop-border", type=number(int, minimum=0), default=0, metavar="K")
    p.add_argument("--matlab-compatible", action="store_true", help="round Y to uint8 (MATLAB)")
    p.add_argument("--limit", type=number(int, minimum=1), default=None, metavar="N",
                   help="first N images only")
    p.add_argument("--save", metavar="DIR", help="also write the restored images here (a folder "
                   "outside the data folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --save replace files that exist already (refused without it)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    add_tiling_arguments(p)
    p.set_defaults(func=run)


def _saver(args, report):
    """The per-image hook: save the output under --save and print one progress line."""

    def on_image(i, sample, output, row):
        if args.save:
            write_image(Path(args.save) / (sample["name"] + ".png"), output)
        note(f"[{i + 1}/{report['count']}] {sample['name']}: {report['line'](row)}")

    return on_image


def _no_reference(args, folder, items, model, device) -> dict:
    """BRISQUE/PIQE of the degraded inputs and (with a model) of its outputs, per image."""
    note(f"{args.model} on {folder.root} ({len(items)} images without ground truth): "
         "no-reference BRISQUE and PIQE on luminance (lower is better)")

    def line(row):
        text = f"input BRISQUE {row['input']['brisque']:.2f} PIQE {row['input']['piqe']:.2f}"
        if "output" in row:
            text += f" → output BRISQUE {row['output']['brisque']:.2f} PIQE {row['output']['piqe']:.2f}"
        return text

    result = evaluate_model(model, EvalSamples(items, args.task, reference=False), metrics=NO_REFERENCE,
                            device=device, tile=args.tile, overlap=args.overlap, blend=args.blend,
                            on_image=_saver(args, {"count": len(items), "line": line}))
    return {
        "metrics": list(result.metrics),
        "convention": {"description": "no-reference BRISQUE (LIVE SVR) and PIQE on BT.601 luminance "
                                      "of uint8-quantised images; lower is better"},
        "count": result.count,
        "mean": result.mean,
        "images": result.rows,
    }


def _full_reference(args, folder, items, model, device) -> dict:
    convention = Convention.for_task(args.task, y_channel=args.y_channel, crop_border=args.crop_border,
                                     matlab_compatible=args.matlab_compatible)
    synthetic = folder.layout == "clean-only"
    note(f"{args.model} on {folder.root} ({folder.layout}, {len(items)} images"
         + (f", Gaussian noise σ={args.sigma:g} seed {args.noise_seed}" if synthetic else "")
         + f"): {convention.describe()}")
    samples = EvalSamples(items, args.task, sigma=args.sigma, seed=args.noise_seed)
    result = evaluate_model(model, samples, convention=convention, device=device, tile=args.tile,
                            overlap=args.overlap, blend=args.blend,
                            on_image=_saver(args, {"count": len(items),
                                                   "line": lambda r: f"{r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}"}))
    return {
        "metrics": list(result.metrics),
        "sigma": args.sigma if synthetic else None,
        "convention": {**convention.as_dict(), "quantize": True, "description": convention.describe()},
        "count": result.count,
        "mean": result.mean,
        "images": result.rows,
    }


#: the defaults of the synthetic test noise (Restormer's test script: σ 25, np.random.seed(0))
DEFAULT_SIGMA, DEFAULT_NOISE_SEED = 25.0, 0


def _noise_settings(args, folder, no_reference: bool) -> None:
    """Fill in --sigma/--noise-seed for clean-only folders; refuse them where no noise is added
    (they used to be ignored without a word)."""
    if folder.layout == "clean-only" and not no_reference:
        args.sigma = DEFAULT_SIGMA if args.sigma is None else args.sigma
        args.noise_seed = DEFAULT_NOISE_SEED if args.noise_seed is None else args.noise_seed
        return
    given = [opt for opt, value in (("--sigma", args.sigma), ("--noise-seed", args.noise_seed))
             if value is not None]
    if given:
        what = (f"{folder.layout.removeprefix('paired:')} pairs (a paired folder)" if folder.paired
                else "images scored as they are (no-reference metrics)")
        raise SlkdError(f"{' and '.join(given)} set the noise synthesised for clean-only folders, "
                        f"but {folder.root} holds {what}, whose inputs are already degraded: "
                        f"{' and '.join(given)} would be ignored; leave {'them' if len(given) > 1 else 'it'} out")


def _check_save(args, folder, items) -> None:
    """--save writes only outside the evaluated data, one file per image, and replaces an
    existing file only with --overwrite: checked before anything is computed."""
    save = Path(args.save)
    if save.exists() and not save.is_dir():
        raise SlkdError(f"--save {save} is a file; give a folder")
    blocking = file_in_the_way(save)
    if blocking is not None:
        raise SlkdError(f"--save {save} is under {blocking}, which is a file; give a folder")
    target = save.resolve()
    protected = {folder.root.resolve()}
    protected.update(p.resolve().parent for item in items for p in (item.degraded, item.clean) if p is not None)
    for place in sorted(protected):
        if target == place or place in target.parents:
            raise SlkdError(f"--save {save} is inside the evaluated data ({place}): restored images "
                            f"would be written among or over the benchmark's own files; choose a "
                            f"folder outside {folder.root}")
    sources: dict[str, Path] = {}
    for item in items:
        name, src = item.name + ".png", item.degraded or item.clean
        if name in sources:
            raise SlkdError(f"--save: {sources[name].name} and {src.name} would both be saved as "
                            f"{name}; rename one of them")
        sources[name] = src
    existing = sorted(n for n in sources if (save / n).exists() or (save / n).is_symlink())
    if existing and not args.overwrite:
        shown = ", ".join(existing[:5]) + (" …" if len(existing) > 5 else "")
        raise SlkdError(f"--save {save} holds {len(existing)} of the {len(sources)} output file(s) "
                        f"already ({shown}); pass --overwrite to replace them (nothing was written)")


def evaluate(args) -> dict:
    folder = scan_eval_folder(args.data)
    for warning in folder.warnings:  # what the folder holds that is not scored, by name
        note(f"warning: {warning}")
    # without ground truth (a plain folder for --task real, or input/ alone) only
    # no-reference metrics make sense
    no_reference = folder.layout == "degraded-only" or (args.task == "real" and not folder.paired)
    if folder.layout == "degraded-only" and args.task != "real":
        raise DatasetError(
            f"{folder.root} has degraded images without ground truth; PSNR/SSIM need targets "
            "(use --task real for no-reference BRISQUE/PIQE)"
        )
    _noise_settings(args, folder, no_reference)
    items = folder.items[: args.limit] if args.limit else folder.items
    if args.save:
        _check_save(args, folder, items)
    device = resolve_device("cpu" if args.onnx else args.device)  # ONNX Runtime's CPU provider
    if args.onnx is not None:
        model = load_onnx(args)
    else:
        model = (None if args.model == INPUT_MODEL
                 else load_model(args.model, args.weights, device, path=args.inference))
    scores = (_no_reference if no_reference else _full_reference)(args, folder, items, model, device)
    return {
        "model": args.model,
        "weights": str(args.weights) if args.weights else None,
        "onnx": str(args.onnx) if args.onnx else None,
        "data": str(folder.root),
        "layout": "no-reference" if no_reference else folder.layout,
        "task": args.task,
        **scores,
    }


def _finite_or_null(obj):
    """Strict JSON has no Infinity: an identical pair's PSNR (∞) is written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return obj


def run(args) -> int:
    check_model_or_onnx(args, weights_needed=False)
    if args.onnx is None and args.model == INPUT_MODEL and args.weights:
        raise SlkdError(f"--model {INPUT_MODEL} scores the degraded inputs and takes no --weights")
    if args.onnx is None and args.model != INPUT_MODEL and not args.weights:
        raise SlkdError(f"--weights is required for --model {args.model} (or use --model {INPUT_MODEL})")
    check_tiling(args)
    result = evaluate(args)
    mean = result["mean"]
    if args.json:
        print(json.dumps(_finite_or_null(result), indent=2, allow_nan=False))
        return 0
    head = f"{result['model']} on {result['data']} ({result['count']} images, {result['convention']['description']})"
    if "psnr" in mean:
        print(f"{head}: PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.4f}")
    else:
        print(head + ": " + "; ".join(
            f"{side} BRISQUE {m['brisque']:.2f}, PIQE {m['piqe']:.2f}" for side, m in mean.items()))
    return 0
