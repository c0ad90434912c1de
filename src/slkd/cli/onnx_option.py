"""``--onnx FILE`` in place of ``--model NAME --weights FILE``: ``slkd eval`` and ``slkd restore``
run an exported file (:class:`slkd.models.onnx_model.OnnxModel`) through the code path of a
PyTorch model."""

from __future__ import annotations

from slkd.errors import SlkdError

ONNX_HELP = ("an exported ONNX file (slkd export) to run with ONNX Runtime on the CPU in place of "
             "--model/--weights: same padding, tiling, clamping and metrics as the PyTorch model")


def check_model_or_onnx(args, *, weights_needed: bool) -> None:
    """One of ``--model`` (with ``--weights`` where ``weights_needed``) or ``--onnx``; with
    ``--onnx`` the options that only mean something for a PyTorch model are refused."""
    if args.onnx is None:
        if args.model is None:
            raise SlkdError("give --model NAME (with --weights FILE) or --onnx FILE")
        if weights_needed and not args.weights:
            raise SlkdError(f"--weights is required for --model {args.model} (or give --onnx FILE)")
        return
    given = [opt for opt, value in (("--model", args.model), ("--weights", args.weights)) if value]
    if given:
        raise SlkdError(f"--onnx {args.onnx} is the network (weights included): leave "
                        f"{' and '.join(given)} out")
    if getattr(args, "inference", "auto") != "auto":
        raise SlkdError(f"--inference {args.inference} prepares a PyTorch model; an ONNX file runs as "
                        "ONNX Runtime chooses: leave it out with --onnx")
    if getattr(args, "device", "auto") not in ("auto", "cpu"):
        raise SlkdError(f"--onnx runs on ONNX Runtime's CPU provider, not --device {args.device}; "
                        "leave --device out or give cpu")


def load_onnx(args):
    """The :class:`~slkd.models.onnx_model.OnnxModel` of ``args.onnx``; ``args.model`` becomes its
    name (the preset recorded at export, else the file name) for messages and reports."""
    from slkd.models.onnx_model import load_onnx_model

    model = load_onnx_model(args.onnx)
    args.model = f"{model.name} (ONNX {args.onnx})"
    return model
