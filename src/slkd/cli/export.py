"""``slkd export``: write a model preset (with its weights) as a deployable ONNX file."""

from __future__ import annotations

from pathlib import Path

import torch

from slkd.cli.common import add_model_arguments, load_model, note, number
from slkd.errors import SlkdError
from slkd.models import get_preset
from slkd.models.export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    check_destination,
    export_onnx,
    require_packages,
)
from slkd.models.quantize import (
    CALIB_CROPS,
    CALIB_PATCH,
    DEFAULT_KEEP_FLOAT,
    DEFAULT_MAX_DROP,
    FLOAT_GROUPS,
    HOLDOUT_CROPS,
    MIN_FIDELITY_DB,
    calibration_set,
    export_int8,
)

#: tolerance of --check: max |ONNX Runtime − PyTorch| on random inputs in [0, 1]
CHECK_ATOL = 1e-4


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX (dynamic batch, height and width)",
        description="Export a model preset, with --weights or randomly initialised (seed 0), to "
        "an ONNX file with input 'input' and output 'output', float32 N×C×H×W, dynamic N, H "
        "and W. Padding stays OUTSIDE the graph: H and W must be multiples of the model's size "
        "multiple (8 for Restormer and DRSformer, 16 for Uformer and NAFNet; see metadata "
        "slkd.size_multiple); pad the image on the bottom/right (reflect), run, crop back and "
        "clamp to [0, 1], as slkd "
        "restore does. The file carries metadata_props slkd.model, slkd.version, "
        "slkd.size_multiple, slkd.weights_sha256 and more; it is validated with onnx.checker "
        "and written atomically; an existing OUT is kept unless --overwrite is given (and then "
        "only replaced by a complete, valid file). "
        "Needs the onnx package (pip install 'slkd[export]'); --check also onnxruntime. "
        "--int8 --calib DIR writes a statically quantised INT8 graph instead (ONNX Runtime's "
        "quantize_static: QDQ, per-channel int8 weights, calibrated on crops of the images in DIR) "
        "and refuses to write it when its PSNR on held-out crops falls more than --max-drop dB "
        "below the float graph's.",
    )
    add_model_arguments(p, weights_required=False)
    p.add_argument("--onnx", required=True, metavar="OUT",
                   help="ONNX file to write (e.g. res-sl.onnx); never the --weights file")
    p.add_argument("--opset", type=number(int, minimum=MIN_OPSET, maximum=MAX_OPSET),
                   default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (refused without it)")
    p.add_argument("--check", action="store_true",
                   help="run the file in onnxruntime (CPU) on two random inputs of other sizes "
                   "and batch sizes than the export's before writing, and write nothing "
                   f"unless it matches PyTorch within {CHECK_ATOL:g} (max abs diff)")
    int8 = p.add_argument_group("INT8 (static quantisation with ONNX Runtime)")
    int8.add_argument("--int8", action="store_true",
                      help="write a statically quantised INT8 graph (float32 input and output)")
    int8.add_argument("--calib", metavar="DIR",
                      help="calibration images: your training data, a paired folder (its degraded "
                      "inputs calibrate, its targets score the hold-out) or a folder of images "
                      "(searched recursively; used as they are, or as clean images with --calib-sigma)")
    int8.add_argument("--calib-sigma", type=number(float, above=0, maximum=255), metavar="S",
                      help="add Gaussian noise of S (0-255) to clean --calib images (denoisers)")
    int8.add_argument("--calib-crops", type=number(int, minimum=1, maximum=10_000), default=None,
                      metavar="N", help=f"calibration crops (default {CALIB_CROPS}; {HOLDOUT_CROPS} more "
                      "from other images are held out for the check)")
    int8.add_argument("--calib-patch", type=number(int, minimum=8), default=None, metavar="P",
                      help=f"crop side in pixels (default {CALIB_PATCH})")
    int8.add_argument("--max-drop", type=number(float, minimum=0), default=None, metavar="DB",
                      help=f"refuse a graph whose hold-out PSNR is more than DB below the float graph's "
                      f"(default {DEFAULT_MAX_DROP:g}; without ground truth the INT8 output must instead reach "
                      f"{MIN_FIDELITY_DB:g} dB PSNR against the float output)")
    int8.add_argument("--keep-float", nargs="+", choices=sorted(FLOAT_GROUPS), default=None, metavar="GROUP",
                      help=f"node groups left in float (default: {' '.join(DEFAULT_KEEP_FLOAT)}; "
                      f"choices: {', '.join(FLOAT_GROUPS)})")
    p.set_defaults(func=run)


_INT8_ONLY = ("calib", "calib_sigma", "calib_crops", "calib_patch", "max_drop", "keep_float")


def _int8_options(args) -> None:
    """--calib and friends need --int8, and --int8 needs --calib (checked before any work)."""
    if not args.int8:
        given = [f"--{o.replace('_', '-')}" for o in _INT8_ONLY if getattr(args, o) is not None]
        if given:
            raise SlkdError(f"{', '.join(given)} {'apply' if len(given) > 1 else 'applies'} to the INT8 "
                            "export only: add --int8")
        return
    if args.calib is None:
        raise SlkdError("--int8 needs --calib DIR: images to calibrate the quantisation on (crops of your "
                        "training data)")
    if not Path(args.calib).is_dir():
        raise SlkdError(f"--calib {args.calib}: folder not found")


def run(args) -> int:
    out = Path(args.onnx)
    get_preset(args.model)  # an unknown name fails here, listing the known ones
    if args.weights is not None and not Path(args.weights).is_file():
        raise SlkdError(f"weights file not found: {args.weights}")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise SlkdError(f"--opset must be from {MIN_OPSET} to {MAX_OPSET}, got {args.opset}")
    check_destination(out, args.weights)
    if (out.exists() or out.is_symlink()) and not args.overwrite:
        raise SlkdError(f"{out} exists; pass --overwrite to replace it (nothing was written)")
    _int8_options(args)
    require_packages(check=args.check or args.int8)
    if out.suffix.lower() != ".onnx":
        note(f"note: {out} does not end in .onnx")
    if out.is_file():
        note(f"note: {out} exists and will be replaced (--overwrite)")
    if args.weights is None:
        note(f"note: no --weights given; exporting {args.model} with random weights (seed 0)")
        torch.manual_seed(0)
    model = load_model(args.model, args.weights, torch.device("cpu"))
    if args.int8:
        return _run_int8(args, model, out)
    result = export_onnx(model, out, opset=args.opset, model_name=args.model,
                         weights=args.weights, check=args.check, atol=CHECK_ATOL)
    multiple = result.metadata["slkd.size_multiple"]
    channels = result.metadata["slkd.inp_channels"]
    for check in result.checks:
        shape = "×".join(str(s) for s in check.shape)
        print(f"checked {shape}: max |onnxruntime − pytorch| = {check.max_abs_diff:.2e} "
              f"(tolerance {CHECK_ATOL:g})")
    print(f"wrote {out} ({args.model}, opset {args.opset}, {result.size_bytes / 1e6:.1f} MB): "
          f"input N×{channels}×H×W float32 with H and W multiples of {multiple} "
          f"(pad outside the graph)")
    return 0


def _run_int8(args, model, out: Path) -> int:
    max_drop = DEFAULT_MAX_DROP if args.max_drop is None else args.max_drop
    calib = calibration_set(args.calib, sigma=args.calib_sigma, crops=args.calib_crops or CALIB_CROPS,
                            patch=args.calib_patch or CALIB_PATCH,
                            multiple=int(getattr(model, "size_multiple", 8)),
                            channels=int(getattr(model, "inp_channels", 3)))
    note(f"calibrating on {calib.described}")
    result = export_int8(model, out, calib, max_drop=max_drop, opset=args.opset, model_name=args.model,
                         weights=args.weights, keep_float=args.keep_float or DEFAULT_KEEP_FLOAT,
                         check_float_atol=CHECK_ATOL if args.check else None)
    for check in result.float_checks:
        print(f"checked float {'×'.join(map(str, check.shape))}: max |onnxruntime − pytorch| = "
              f"{check.max_abs_diff:.2e} (tolerance {CHECK_ATOL:g})")
    for shape, _ in result.checks:
        print(f"checked INT8 {'×'.join(map(str, shape))}: runs, finite, output of the input's size")
    h = result.holdout
    if h.drop is not None:
        score = (f"hold-out PSNR {h.int8_psnr:.2f} dB INT8 vs {h.float_psnr:.2f} dB float on {h.crops} crops "
                 f"(drop {h.drop:.2f} dB, at most {max_drop:g} allowed)")
    else:
        score = f"hold-out: INT8 output {h.int8_psnr:.2f} dB PSNR from the float output on {h.crops} crops"
    q = result.quantization
    print(f"wrote {out} ({args.model} INT8, {q['quantized_nodes']} convolutions/products quantised, "
          f"{'+'.join(q['keep_float']) or 'nothing'} kept in float, {result.size_bytes / 1e6:.1f} MB): {score}; "
          f"input N×{result.metadata['slkd.inp_channels']}×H×W float32 with H and W multiples of "
          f"{result.metadata['slkd.size_multiple']} (pad outside the graph)")
    return 0
