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
        "Needs the onnx package (pip install 'slkd[export]'); --check also onnxruntime.",
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
    p.set_defaults(func=run)


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
    require_packages(check=args.check)
    if out.suffix.lower() != ".onnx":
        note(f"note: {out} does not end in .onnx")
    if out.is_file():
        note(f"note: {out} exists and will be replaced (--overwrite)")
    if args.weights is None:
        note(f"note: no --weights given; exporting {args.model} with random weights (seed 0)")
        torch.manual_seed(0)
    model = load_model(args.model, args.weights, torch.device("cpu"))
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
