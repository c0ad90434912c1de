"""Export a restoration network to ONNX for deployment, and check the export numerically.

:func:`export_onnx` writes one self-contained ``.onnx`` file whose input ``input`` and output
``output`` are float N×C×H×W tensors with **dynamic batch, height and width**. What stays
outside the graph, exactly as in :func:`slkd.engine.restore`:

* **padding** — the graph expects H and W that are multiples of the model's ``size_multiple``
  (8 for Restormer, DRSformer and their students: three 2× down-samplings; 16 for Uformer and
  NAFNet, whose padding inside ``forward`` is traced too). Pad the image on the bottom and
  right to the next multiple (reflect; replicate where the pad is not smaller than the side),
  run the graph, crop the output back to H×W. Other sizes fail inside ONNX Runtime with a
  Reshape error; the multiple is written into the file's metadata (``slkd.size_multiple``) so
  that a deployment can read it instead of hard-coding 8.
* **clamping** — the output is not clamped; clamp it to [0, 1] as ``restore`` does.
* the input checks of ``Restormer.forward`` (channel count, size multiple): Python ``if``\\ s
  are not recorded in a traced graph.

Metadata (``metadata_props``): ``slkd.version``, ``slkd.model``, ``slkd.size_multiple``,
``slkd.inp_channels``, ``slkd.out_channels``, ``slkd.input``, ``slkd.output``,
``slkd.preprocess``, ``slkd.opset``, ``slkd.exporter`` and, when exported from a file,
``slkd.weights`` and ``slkd.weights_sha256``.

Which exporter
--------------
This uses the **TorchScript exporter** (``torch.onnx.export(..., dynamo=False)``). Both were
tried on torch 2.13 (onnx 1.23, onnxscript 0.7, onnxruntime 1.32) with Restormer's attention
(reshape by heads, ``q @ kᵀ``), pixel (un)shuffle and dynamic N/H/W; both reproduce PyTorch to
< 1e-6 at sizes other than the example's, but:

* TorchScript works from any example input and exports res-sl-tiny in ~2 s, res-sl in ~2 s,
  restormer in 9-17 s (2 busy CPU cores), needing only ``onnx`` besides torch.
* dynamo (``torch.export``) took 16 s / 47 s / 89 s for the same models, needs ``onnxscript``,
  and has a silent trap: with a batch-1 example it **specialises the batch to 1** even when
  ``dynamic_shapes`` declares it dynamic (``Dim("batch")``: the graph input becomes ``[1, 3,
  height, width]``; ``Dim.AUTO``: the input is declared dynamic but the pixel-unshuffle
  Reshape keeps a constant 1, so batch 2 fails at run time). It needs an example batch ≥ 2,
  and by default writes the weights to a second file (``model.onnx.data``).

TorchScript is the simpler choice that works. It is deprecated upstream ("will be removed"; its
deprecation warnings are silenced here). If a later torch rejects ``dynamo=False``,
:func:`export_onnx` says so in one line; switching then means ``dynamo=True`` with
``dynamic_shapes`` (batch, height, width) and a batch-2 example, checked by the same tests.
Tested opsets: 9 to 20 (the TorchScript exporter's maximum); default 17.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from slkd import __version__
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes, file_in_the_way
from slkd.models.complexity import _eval_mode, _make_input

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportResult",
    "OnnxCheck",
    "check_destination",
    "check_onnx",
    "build_onnx",
    "export_onnx",
    "read_metadata",
    "require_packages",
]

DEFAULT_OPSET = 17
#: lowest opset tested (opset 7 fails: no expand_as; 9 and 10 write pixel shuffle as Reshape)
MIN_OPSET = 9
#: highest opset the TorchScript exporter writes
MAX_OPSET = 20

INPUT_NAME, OUTPUT_NAME = "input", "output"
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}

PREPROCESS = (
    "pad H and W on the bottom/right up to a multiple of slkd.size_multiple (reflect; "
    "replicate where the pad is not smaller than the side), run, crop the output back to H×W "
    "and clamp it to [0, 1] (as slkd.engine.restore does)"
)

#: model files whose forward() starts with Python input checks that tracing cannot record
_CHECKED_MODEL_FILES = ("restormer.py", "uformer.py", "drsformer.py", "nafnet.py")

# warnings of the export that are expected and say nothing about this graph
_EXPECTED_WARNINGS = re.compile(
    r"legacy TorchScript-based ONNX export|The feature will be removed"
)


@dataclass(frozen=True)
class OnnxCheck:
    """One comparison of :func:`check_onnx` at one input shape."""

    shape: tuple[int, ...]
    max_abs_diff: float
    ok: bool


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    size_bytes: int
    opset: int
    metadata: dict[str, str]
    #: the comparisons with PyTorch (empty unless ``check=True``)
    checks: list[OnnxCheck]


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise SlkdError(
            "ONNX export needs the onnx package, which is not installed: "
            "pip install 'slkd[export]' (or pip install onnx)"
        ) from None
    return onnx


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise SlkdError(
            "checking an ONNX file needs onnxruntime, which is not installed: "
            "pip install 'slkd[export]' (or pip install onnxruntime)"
        ) from None
    return onnxruntime


def require_packages(check: bool = False) -> None:
    """Raise a one-line :class:`SlkdError` now if ``onnx`` (and, for ``check``, ``onnxruntime``)
    is missing, before any slow work."""
    _require_onnx()
    if check:
        _require_onnxruntime()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_destination(path: str | os.PathLike, weights: str | os.PathLike | None = None) -> None:
    """Refuse, in one line, an ONNX destination that cannot or must not be written: the weights
    file the model comes from, a folder, or a place inside a file or an unwritable folder."""
    path = Path(path)
    weights = Path(weights) if weights is not None else None
    if weights is not None and (_same_file(path, weights) or path.resolve() == weights.resolve()):
        raise SlkdError(
            f"refusing to write the ONNX file onto the weights file it is exported from ({weights})"
        )
    if path.is_dir():
        raise SlkdError(f"ONNX output {path} is a folder; give a file name such as model.onnx")
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise SlkdError(f"cannot write {path}: {blocking} is a file, not a folder")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise SlkdError(f"cannot write {path}: folder {existing} is not writable")


def _trace(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    axes = {INPUT_NAME: dict(_DYNAMIC_AXES), OUTPUT_NAME: dict(_DYNAMIC_AXES)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                do_constant_folding=True,
            )
        except TypeError as exc:
            if "dynamo" not in str(exc):
                raise
            raise SlkdError(
                f"this torch ({torch.__version__}) has no TorchScript ONNX exporter "
                "(torch.onnx.export(dynamo=False)); slkd export needs torch 2.2 to 2.13"
            ) from None
        except torch.onnx.errors.OnnxExporterError as exc:
            raise SlkdError(f"ONNX export failed: {str(exc).splitlines()[0]}") from None
    for w in caught:
        text = str(w.message)
        if _EXPECTED_WARNINGS.search(text):
            continue
        # Python checks of the models' forward (input channels, size multiple) are evaluated
        # once while tracing and left out of the graph on purpose: the deployment pads outside.
        # (Uformer's and NAFNet's own padding is always traced, so it stays dynamic.)
        if issubclass(w.category, torch.jit.TracerWarning) and any(
            w.filename.endswith(os.path.join("slkd", "models", f)) for f in _CHECKED_MODEL_FILES
        ):
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return buffer.getvalue()


def build_onnx(
    model: nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
):
    """The ONNX graph of ``model`` as :func:`export_onnx` writes it (an ``onnx.ModelProto``,
    metadata set, validated by ``onnx.checker``) and its ``slkd.*`` metadata; nothing is written."""
    onnx = _require_onnx()
    weights_path = Path(weights) if weights is not None else None
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise SlkdError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    if weights_path is not None and not weights_path.is_file():
        raise SlkdError(f"weights file not found: {weights_path}")

    multiple = int(getattr(model, "size_multiple", 1) or 1)
    inp_channels = int(getattr(model, "inp_channels", 3))
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    # batch 2 and unequal sides, so that nothing size-1 or square gets specialised
    example = _make_input(model, (2, inp_channels, 4 * multiple, 6 * multiple), device)
    with _eval_mode(model), torch.no_grad():
        out_channels = int(model(example).shape[1])
        data = _trace(model, example, opset)

    proto = onnx.load_from_string(data)
    dtype = str(example.dtype).replace("torch.", "")
    props = {
        "slkd.version": __version__,
        "slkd.model": model_name or type(model).__name__,
        "slkd.size_multiple": str(multiple),
        "slkd.inp_channels": str(inp_channels),
        "slkd.out_channels": str(out_channels),
        "slkd.input": f"{INPUT_NAME}: {dtype} N×{inp_channels}×H×W, values in [0, 1]; "
                      f"H and W multiples of {multiple}",
        "slkd.output": f"{OUTPUT_NAME}: {dtype} N×{out_channels}×H×W, not clamped",
        "slkd.preprocess": PREPROCESS,
        "slkd.opset": str(opset),
        "slkd.exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__}",
    }
    if weights_path is not None:
        props["slkd.weights"] = weights_path.name
        props["slkd.weights_sha256"] = sha256_file(weights_path)
    props.update({str(k): str(v) for k, v in (metadata or {}).items()})
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = (
        f"{props['slkd.model']} exported by slkd {__version__}. Input {props['slkd.input']}. "
        f"Before: {PREPROCESS}."
    )
    proto.graph.input[0].doc_string = props["slkd.input"]
    proto.graph.output[0].doc_string = props["slkd.output"]
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise SlkdError(f"the exported graph does not pass onnx.checker: {exc}") from None
    return proto, props


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    check: bool = False,
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` (N×C×H×W → N×C'×H×W) to ``path`` with dynamic batch, height and width.

    The graph expects H and W that are multiples of ``model.size_multiple`` (1 if the model
    has none); padding stays outside (see the module docstring). ``model_name`` (default: the
    class name) and the values of ``metadata`` go into the file's ``metadata_props`` next to
    the ``slkd.*`` entries; ``weights``, the file the model was loaded from, is recorded by
    name and SHA-256 and is never overwritten. The file is validated with
    ``onnx.checker.check_model(full_check=True)`` before it is written, and written atomically
    (temporary file + rename): on any failure the destination is left as it was. With
    ``check=True`` the graph is first run in ONNX Runtime against the model (:func:`check_onnx`,
    default sizes) and nothing is written unless every max abs difference is ``<= atol``.
    The model's training flags, device and parameters are not changed.
    """
    _require_onnx()
    if check:
        _require_onnxruntime()
    path = Path(path)
    check_destination(path, weights)
    proto, props = build_onnx(model, opset=opset, model_name=model_name, weights=weights,
                              metadata=metadata)
    data = proto.SerializeToString()
    checks = check_onnx(data, model, atol=atol) if check else []
    bad = [c for c in checks if not c.ok]
    if bad:
        raise SlkdError(
            f"not written: the ONNX graph differs from PyTorch by more than {atol:g} at "
            + ", ".join(f"{'×'.join(map(str, c.shape))} ({c.max_abs_diff:.2e})" for c in bad)
        )
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise SlkdError(f"cannot write {path}: {exc.strerror or exc}") from None
    return ExportResult(path=path, size_bytes=len(data), opset=opset, metadata=props, checks=checks)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (weights are not loaded)."""
    onnx = _require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def check_onnx(
    onnx_model: str | os.PathLike | bytes,
    model: nn.Module,
    sizes: Sequence[Sequence[int]] | None = None,
    *,
    atol: float = 1e-4,
    threads: int | None = None,
    seed: int = 0,
) -> list[OnnxCheck]:
    """Run an ONNX file (path or serialized bytes) in ONNX Runtime (CPU) and ``model`` in PyTorch on the same random
    inputs and report the largest absolute difference per input size.

    ``sizes`` are N×C×H×W shapes (H, W multiples of the size multiple); by default two that
    differ from the export example in every dynamic dimension: 1×C×4m×5m and 2×C×3m×7m (m = 8
    for Restormer). Returns one :class:`OnnxCheck` per size; ``ok`` is ``max_abs_diff <= atol``.
    """
    ort = _require_onnxruntime()
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    channels = int(getattr(model, "inp_channels", 3))
    if sizes is None:
        sizes = [(1, channels, 4 * multiple, 5 * multiple), (2, channels, 3 * multiple, 7 * multiple)]
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None else torch.float32
    generator = torch.Generator().manual_seed(seed)
    results = []
    with _eval_mode(model), torch.inference_mode():
        for size in sizes:
            x = torch.rand(tuple(int(s) for s in size), generator=generator).to(dtype)
            expected = model(x.to(device)).cpu().numpy()
            got = session.run(None, {INPUT_NAME: x.numpy()})[0]
            if got.shape != expected.shape:
                diff = float("inf")
            else:
                diff = float(abs(got.astype("float64") - expected).max())
            results.append(OnnxCheck(shape=tuple(x.shape), max_abs_diff=diff, ok=diff <= atol))
    return results
