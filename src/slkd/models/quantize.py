"""INT8 export: a statically quantised ONNX student, calibrated on crops of the user's images and
refused when it loses more than a threshold on held-out crops.

:func:`export_int8` writes the graph :func:`slkd.models.export.build_onnx` builds, quantised by
ONNX Runtime's own tooling (nothing is hand-written here):

1. ``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference and ONNX
   Runtime's graph optimisations: the recommended first step of static quantisation);
2. ``onnxruntime.quantization.quantize_static`` in **QDQ** format, **per-channel** int8 weights,
   uint8 activations (ONNX Runtime's recommended pairing on x86 CPUs), calibration
   (:data:`DEFAULT_CALIBRATION`) on :class:`CalibrationSet` crops, with the node groups of
   :data:`DEFAULT_KEEP_FLOAT` left in float (``nodes_to_exclude``; see :data:`FLOAT_GROUPS`).

Then it is checked as ``slkd export --check`` checks a float graph: it must run at other sizes
and batch sizes than the calibration crops (1×C×4m×5m and 2×C×3m×7m; shapes and finite values),
and on the **hold-out** crops (crops of images the calibration did not see) its PSNR may fall at
most ``max_drop`` dB (:data:`DEFAULT_MAX_DROP`) below the float graph's. With ground truth
(paired folders, or clean images with synthetic noise) the PSNR is against the ground truth;
without it the float graph's output is the reference and the INT8 output must reach
:data:`MIN_FIDELITY_DB` against it. PSNR is the library's (uint8-quantised outputs, RGB).

Which nodes stay float was chosen by measurement (``python -m benchmarks.edge --float-sets``,
``benchmarks/results/edge_float_nodes.json``): PSNR of INT8 graphs of one committed student per
task (CBSD68 σ 25, Rain100L) for each candidate set of :data:`FLOAT_GROUPS`, against the float
graph. What it showed: ``quantize_static`` has no QDQ rule for the layer norms' and the GELU's
element-wise operators or for the softmax, but when it quantises the data-movement nodes around
them (the reshapes and slices of the attention and of the gated feed-forward, pixel
(un)shuffle), their inputs and outputs carry quantise/dequantise pairs and ONNX Runtime then runs
them as ``QLinearMul``/``QLinearAdd``/``QLinearSoftmax`` — the layer norms, the gate, the residual
additions and the softmax in 8 bits, which cost more PSNR than any group of convolutions.
Keeping the data movement in float (``data_movement``) keeps all of them in float; of the
convolutions, the two that touch the image (``patch_embed``, ``output``) gained most from float
for one layer each, while the attention's matrix products gained nothing and stay int8.
Percentile calibration (ONNX Runtime's default 99.999th percentile of each activation) lost less
than MinMax on the same set.

:data:`DEFAULT_MAX_DROP` is a guard against a broken graph (too few or unrepresentative
calibration crops, an architecture whose activations do not quantise), not the quality target:
it is about twice the drop the default set had in that measurement (on the denoising student,
the worse of the two tasks), so a normal export passes and one clearly worse is refused.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_KEEP_FLOAT",
    "DEFAULT_MAX_DROP",
    "FLOAT_GROUPS",
    "MIN_FIDELITY_DB",
    "CalibrationSet",
    "HoldoutScore",
    "Int8Result",
    "calibration_set",
    "export_int8",
    "float_nodes",
    "holdout_score",
    "quantize_graph",
]

#: node groups that can be kept in float: name → (what it is, test on an ONNX node). Node
#: names are the module paths the TorchScript exporter writes (``/encoder_level1/…/attn/MatMul``).
FLOAT_GROUPS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "attention_matmul": ("the attention's two matrix products (q·kᵀ and attn·v)",
                         lambda n: n.op_type == "MatMul" and "/attn/" in n.name),
    "output": ("the output convolution (features → image)",
               lambda n: n.op_type == "Conv" and n.name.startswith("/output/")),
    "patch_embed": ("the input convolution (image → features)",
                    lambda n: n.op_type == "Conv" and n.name.startswith("/patch_embed/")),
    "depthwise": ("the depth-wise 3×3 convolutions",
                  lambda n: n.op_type == "Conv" and "dwconv" in n.name),
    "resample": ("the convolutions of the down- and up-sampling and the skip reductions",
                 lambda n: n.op_type == "Conv" and re.match(r"^/(down|up|reduce_chan)", n.name) is not None),
    "full_resolution": ("every node of the full-resolution stages (encoder_level1, decoder_level1, "
                        "refinement)",
                        lambda n: re.match(r"^/(encoder_level1|decoder_level1|refinement)/", n.name) is not None),
    "data_movement": ("every node that is not a convolution or a matrix product (reshapes, slices, "
                      "transposes, pixel (un)shuffle …): only the compute is quantised",
                      lambda n: n.op_type not in ("Conv", "MatMul")),
}
#: kept in float by default (chosen by measurement, see the module docstring)
DEFAULT_KEEP_FLOAT: tuple[str, ...] = ("data_movement", "patch_embed", "output")
#: how activation ranges are calibrated (``onnxruntime.quantization.CalibrationMethod``; chosen
#: by the same measurement)
DEFAULT_CALIBRATION = "Percentile"
#: the most PSNR (dB) the INT8 graph may lose against the float graph on the hold-out crops
DEFAULT_MAX_DROP = 0.2
#: without ground truth: the least PSNR (dB) of the INT8 output against the float output
MIN_FIDELITY_DB = 40.0
#: calibration defaults: crops, their side, hold-out crops
CALIB_CROPS, CALIB_PATCH, HOLDOUT_CROPS = 32, 128, 8


def _require():
    try:
        import onnx
        import onnxruntime
        from onnxruntime import quantization
    except ImportError:
        raise SlkdError("INT8 export needs onnx and onnxruntime, which are not installed: "
                        "pip install 'slkd[export]'") from None
    return onnx, onnxruntime, quantization


# ------------------------------------------------------------------------------ calibration


@dataclass
class CalibrationSet:
    """Crops (1×C×P×P float32 arrays, network inputs) for calibration and for the hold-out check;
    ``*_targets`` are the clean crops, or None when the images have no ground truth."""

    inputs: list[np.ndarray]
    holdout: list[np.ndarray]
    holdout_targets: list[np.ndarray] | None
    described: str

    @property
    def has_targets(self) -> bool:
        return self.holdout_targets is not None


def _image_pairs(root: Path, sigma: float | None) -> tuple[list[tuple[Path, Path | None]], str]:
    """(network input, target) files of a calibration folder: a paired folder (any layout ``slkd
    eval`` reads) gives its pairs; a folder of images (searched recursively) gives (image, image)
    when ``sigma`` adds noise, else (image, None)."""
    from slkd.data.folders import PAIRED_LAYOUTS, scan_eval_folder
    from slkd.data.selection import collect_images

    if any((root / d).is_dir() and (root / c).is_dir() for d, c in PAIRED_LAYOUTS):
        if sigma is not None:
            raise SlkdError(f"calibration data {root} holds degraded/clean pairs; noise (sigma) is for "
                            "folders of clean images")
        folder = scan_eval_folder(root)
        return [(i.degraded, i.clean) for i in folder.items], f"{folder.layout.removeprefix('paired:')} pairs"
    files = collect_images(root, recursive=True)
    if not files:
        raise SlkdError(f"calibration data {root}: no images (expected images, or degraded/clean pairs "
                        "in a layout slkd eval reads)")
    if sigma is None:
        return [(f, None) for f in files], "images used as they are"
    return [(f, f) for f in files], f"clean images with Gaussian noise σ={sigma:g}"


def calibration_set(
    root: str | os.PathLike,
    *,
    sigma: float | None = None,
    crops: int = CALIB_CROPS,
    patch: int = CALIB_PATCH,
    holdout: int = HOLDOUT_CROPS,
    multiple: int = 8,
    channels: int = 3,
    seed: int = 0,
    exclude: Sequence[str] = (),
) -> CalibrationSet:
    """Seeded crops of the images under ``root`` (see :func:`_image_pairs`): ``crops`` for the
    calibration and ``holdout`` from other images (the last ones of a seeded shuffle; with a
    single image, from other places of it). ``patch`` is rounded down to ``multiple``; an image
    smaller than it gives one crop of its own size, rounded down likewise. ``exclude``: file
    stems left out (held-out test images). Noise of ``sigma`` (0-255) is seeded per crop."""
    from slkd.data.image_io import read_image

    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise SlkdError(f"calibration data {root}: folder not found")
    if crops < 1 or holdout < 1:
        raise SlkdError("calibration needs at least one crop and one hold-out crop")
    pairs, what = _image_pairs(root, sigma)
    skip = set(exclude)
    pairs = [p for p in pairs if p[0].stem not in skip]
    if not pairs:
        raise SlkdError(f"calibration data {root}: every image is excluded")
    rng = np.random.default_rng(seed)
    order = [pairs[i] for i in rng.permutation(len(pairs))]
    n_hold = 0 if len(order) == 1 else max(1, min(holdout, len(order) // 5 or 1))
    calib_files = order[: len(order) - n_hold][:crops]
    hold_files = order[len(order) - n_hold:] if n_hold else order
    side = max(multiple, patch // multiple * multiple)

    def cut(files, count, offset):
        inputs, targets = [], []
        per = math.ceil(count / len(files))
        for index, (src, tgt) in enumerate(files):
            image = read_image(src).tensor
            target = None if tgt is None else (image if tgt == src else read_image(tgt).tensor)
            if image.shape[0] != channels:
                image = image.mean(0, keepdim=True).expand(channels, -1, -1) if image.shape[0] < channels \
                    else image.mean(0, keepdim=True)
                target = None if target is None else (target.mean(0, keepdim=True).expand(channels, -1, -1)
                                                      if target.shape[0] < channels else target.mean(0, keepdim=True))
            h, w = image.shape[-2:]
            ch = max(multiple, min(side, h) // multiple * multiple)
            cw = max(multiple, min(side, w) // multiple * multiple)
            if ch > h or cw > w:
                raise SlkdError(f"calibration image {src.name} is {w}×{h}, smaller than {multiple} pixels")
            for k in range(per):
                if len(inputs) == count:
                    break
                y = int(rng.integers(0, h - ch + 1))
                x = int(rng.integers(0, w - cw + 1))
                crop = image[:, y:y + ch, x:x + cw]
                ref = None if target is None else target[:, y:y + ch, x:x + cw]
                if sigma is not None:
                    noise = torch.from_numpy(np.random.default_rng([seed, offset, index, k]).normal(
                        0.0, sigma / 255.0, size=tuple(crop.shape)).astype(np.float32))
                    crop = crop + noise
                inputs.append(np.ascontiguousarray(crop[None].numpy(), dtype=np.float32))
                if ref is not None:
                    targets.append(np.ascontiguousarray(ref[None].numpy(), dtype=np.float32))
        return inputs, (targets if targets else None)

    inputs, _ = cut(calib_files, crops, 0)
    hold, hold_targets = cut(hold_files, holdout, 1)
    described = (f"{len(inputs)} crops of up to {side}² from {len(calib_files)} of the {len(order)} images of "
                 f"{root} ({what}); hold-out: {len(hold)} crops of "
                 + (f"{n_hold} other image(s)" if n_hold else "the same image (only one)"))
    return CalibrationSet(inputs, hold, hold_targets, described)


# ------------------------------------------------------------------------------ quantisation


def float_nodes(proto, groups: Sequence[str]) -> list[str]:
    """Names of the nodes of ``proto`` in the :data:`FLOAT_GROUPS` named by ``groups``."""
    unknown = [g for g in groups if g not in FLOAT_GROUPS]
    if unknown:
        raise SlkdError(f"unknown node group(s) {', '.join(unknown)}; known: {', '.join(FLOAT_GROUPS)}")
    tests = [FLOAT_GROUPS[g][1] for g in groups]
    return [n.name for n in proto.graph.node if any(t(n) for t in tests)]


def quantize_graph(float_model, inputs: Sequence[np.ndarray], *, keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
                   calibrate_method: str = DEFAULT_CALIBRATION, preprocess: bool = True,
                   extra_options: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
    """``float_model`` (an ``onnx.ModelProto``) statically quantised by ONNX Runtime (QDQ,
    per-channel int8 weights, uint8 activations) on the calibration ``inputs``, the nodes of
    the ``keep_float`` groups left in float. Returns the quantised proto and what was done."""
    onnx, _, quantization = _require()
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = float_model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="slkd-int8-") as tmp:
        src = Path(tmp) / "float.onnx"
        onnx.save(float_model, str(src))
        if preprocess:
            pre = Path(tmp) / "pre.onnx"
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception as exc:  # shape inference or the optimiser can fail on unusual graphs
                raise SlkdError(f"ONNX Runtime's quantisation pre-processing failed: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            src = pre
        prepared = onnx.load(str(src))
        excluded = float_nodes(prepared, keep_float)
        out = Path(tmp) / "int8.onnx"
        try:
            method = getattr(CalibrationMethod, calibrate_method)
        except AttributeError:
            raise SlkdError(f"unknown calibration method {calibrate_method!r}") from None
        class Reader(CalibrationDataReader):
            """One crop per batch, one crop per collection: ONNX Runtime keeps every intermediate
            output of the crops of one collection (a full-size Restormer's, at 128², is over a
            GiB a crop) and merges the ranges and histograms across collections."""

            def __init__(self) -> None:
                self.feeds = iter(())

            def __len__(self) -> int:
                return len(inputs)

            def set_range(self, start_index: int, end_index: int) -> None:
                self.feeds = iter([{name: x} for x in inputs[start_index:end_index]])

            def get_next(self):
                return next(self.feeds, None)

        quantization.quantize_static(
            str(src), str(out), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded, calibrate_method=method,
            extra_options={"CalibStridedMinMax": 1, **dict(extra_options or {})},
        )
        quantized = onnx.load(str(out))
    ops = {n.op_type for n in prepared.graph.node}
    info = {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ", "per_channel": True, "weights": "int8", "activations": "uint8",
        "calibration": calibrate_method, "calibration_crops": len(inputs), "preprocess": preprocess,
        "keep_float": list(keep_float), "float_nodes": len(excluded),
        "quantized_nodes": _quantized_count(quantized),
        "op_types": sorted(ops),
    }
    return quantized, info


def _quantized_count(proto) -> int:
    """Convolutions with int8 weights and matrix products of two int8 operands."""
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in proto.graph.node
               if (n.op_type == "Conv" and n.input[1] in dequantized)
               or (n.op_type == "MatMul" and all(i in dequantized for i in n.input)))


# ------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class HoldoutScore:
    """PSNR (dB, uint8-quantised, RGB; mean over the hold-out crops) of the float and the INT8
    graph against the targets (``reference="ground truth"``) or of the INT8 graph against the
    float graph (``reference="float output"``: ``float_psnr`` is None)."""

    crops: int
    reference: str
    float_psnr: float | None
    int8_psnr: float

    @property
    def drop(self) -> float | None:
        return None if self.float_psnr is None else self.float_psnr - self.int8_psnr


def _session(model_bytes: bytes, threads: int | None = None):
    _, ort, _ = _require()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _psnr(output: np.ndarray, ref: np.ndarray) -> float:
    from slkd.metrics.fullref import psnr

    return float(psnr(torch.from_numpy(output).clamp(0, 1), torch.from_numpy(ref).clamp(0, 1)).mean())


def holdout_score(float_bytes: bytes, int8_bytes: bytes, calib: CalibrationSet,
                  threads: int | None = None) -> HoldoutScore:
    """Score the two graphs on the hold-out crops of ``calib`` (see :class:`HoldoutScore`)."""
    f_session, q_session = _session(float_bytes, threads), _session(int8_bytes, threads)
    name = f_session.get_inputs()[0].name
    f_scores, q_scores = [], []
    for i, x in enumerate(calib.holdout):
        f_out = f_session.run(None, {name: x})[0]
        q_out = q_session.run(None, {name: x})[0]
        if calib.has_targets:
            f_scores.append(_psnr(f_out, calib.holdout_targets[i]))
            q_scores.append(_psnr(q_out, calib.holdout_targets[i]))
        else:
            q_scores.append(_psnr(q_out, f_out))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    if calib.has_targets:
        return HoldoutScore(len(q_scores), "ground truth", mean(f_scores), mean(q_scores))
    return HoldoutScore(len(q_scores), "float output", None, mean(q_scores))


@dataclass
class Int8Result:
    """What :func:`export_int8` wrote."""

    path: Path
    size_bytes: int
    metadata: dict[str, str]
    holdout: HoldoutScore
    quantization: dict
    #: (shape, output finite and of the input's size) at the other sizes and batch sizes
    checks: list[tuple[tuple[int, ...], bool]] = field(default_factory=list)
    #: the float graph against PyTorch (``check_float_atol``), :class:`slkd.models.export.OnnxCheck`\ s
    float_checks: list = field(default_factory=list)


def _check_sizes(int8_bytes: bytes, channels: int, multiple: int) -> list[tuple[tuple[int, ...], bool]]:
    session = _session(int8_bytes)
    name = session.get_inputs()[0].name
    generator = np.random.default_rng(0)
    results = []
    for shape in ((1, channels, 4 * multiple, 5 * multiple), (2, channels, 3 * multiple, 7 * multiple)):
        x = generator.random(shape, dtype=np.float32)
        try:
            y = session.run(None, {name: x})[0]
            ok = y.shape[0] == shape[0] and tuple(y.shape[2:]) == shape[2:] and bool(np.isfinite(y).all())
        except Exception:  # onnxruntime's own error types
            ok = False
        results.append((shape, ok))
    return results


def export_int8(
    model: nn.Module,
    path: str | os.PathLike,
    calib: CalibrationSet,
    *,
    max_drop: float = DEFAULT_MAX_DROP,
    min_fidelity: float = MIN_FIDELITY_DB,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    calibrate_method: str = DEFAULT_CALIBRATION,
    opset: int | None = None,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    check_float_atol: float | None = None,
) -> Int8Result:
    """Export ``model`` to ``path`` as a statically quantised INT8 ONNX file (module docstring).
    Nothing is written (and the destination is left as it was) when the checks fail: a graph
    that does not run at other sizes, or a hold-out PSNR drop above ``max_drop`` dB (without
    ground truth: INT8 vs float below ``min_fidelity`` dB) — one :class:`SlkdError` line. With
    ``check_float_atol`` the float graph is first checked against PyTorch as ``export_onnx(check=True)``
    checks it."""
    onnx, _, _ = _require()
    from slkd.models.export import DEFAULT_OPSET, build_onnx, check_destination, check_onnx

    path = Path(path)
    check_destination(path, weights)
    if not max_drop >= 0:
        raise SlkdError(f"the largest PSNR drop must be >= 0 dB, got {max_drop}")
    float_model, props = build_onnx(model, opset=opset or DEFAULT_OPSET, model_name=model_name,
                                    weights=weights, metadata=metadata)
    float_checks = []
    if check_float_atol is not None:
        float_checks = check_onnx(float_model.SerializeToString(), model, atol=check_float_atol)
        bad = [c for c in float_checks if not c.ok]
        if bad:
            raise SlkdError(f"not written: the float ONNX graph differs from PyTorch by more than "
                            f"{check_float_atol:g} at " + ", ".join(
                                f"{'×'.join(map(str, c.shape))} ({c.max_abs_diff:.2e})" for c in bad))
    quantized, info = quantize_graph(float_model, calib.inputs, keep_float=keep_float,
                                     calibrate_method=calibrate_method)
    multiple = int(props["slkd.size_multiple"])
    channels = int(props["slkd.inp_channels"])
    int8_bytes = quantized.SerializeToString()
    checks = _check_sizes(int8_bytes, channels, multiple)
    bad = [shape for shape, ok in checks if not ok]
    if bad:
        raise SlkdError("not written: the INT8 graph does not run (or gives non-finite values) at "
                        + ", ".join("×".join(map(str, s)) for s in bad))
    score = holdout_score(float_model.SerializeToString(), int8_bytes, calib)
    if score.drop is not None and score.drop > max_drop:
        raise SlkdError(
            f"not written: on {score.crops} hold-out crops the INT8 graph scores {score.int8_psnr:.2f} dB "
            f"against {score.float_psnr:.2f} dB in float, {score.drop:.2f} dB lower, more than the "
            f"{max_drop:g} dB allowed; keep more nodes in float or calibrate on more crops")
    if score.drop is None and score.int8_psnr < min_fidelity:
        raise SlkdError(
            f"not written: on {score.crops} hold-out crops (no ground truth) the INT8 output is "
            f"{score.int8_psnr:.2f} dB from the float output, below the {min_fidelity:g} dB required; "
            "keep more nodes in float or calibrate on more crops")
    props = dict(props)
    props.update({
        "slkd.precision": "int8",
        "slkd.quantization": (f"{info['tool']}, {info['format']}, per-channel int8 weights, uint8 "
                              f"activations, {info['calibration']} calibration"),
        "slkd.calibration": calib.described,
        "slkd.keep_float": ",".join(keep_float),
        "slkd.holdout": (f"{score.crops} crops, reference {score.reference}: INT8 {score.int8_psnr:.3f} dB"
                         + ("" if score.float_psnr is None else f", float {score.float_psnr:.3f} dB")),
        "slkd.output": props["slkd.output"] + " (INT8 graph: float32 in and out, int8 inside)",
    })
    onnx.helper.set_model_props(quantized, props)
    quantized.doc_string = (f"{props['slkd.model']} exported by slkd, statically quantised to INT8 "
                            f"({props['slkd.quantization']}). Input {props['slkd.input']}. "
                            f"Before: {props['slkd.preprocess']}.")
    try:
        onnx.checker.check_model(quantized)
    except onnx.checker.ValidationError as exc:
        raise SlkdError(f"the INT8 graph does not pass onnx.checker: {str(exc).splitlines()[0]}") from None
    data = quantized.SerializeToString()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise SlkdError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Int8Result(path, len(data), props, score, info, checks, float_checks)
