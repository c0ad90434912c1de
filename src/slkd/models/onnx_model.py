"""An exported ONNX file run by ONNX Runtime behind the ``model(x)`` call of a PyTorch network.

:class:`OnnxModel` is what ``slkd eval --onnx`` and ``slkd restore --onnx`` score and apply: it
goes through :func:`slkd.engine.restore` and :func:`slkd.engine.evaluation.evaluate` exactly as
a PyTorch model does (padding to a multiple of 8, optional tiling, clamping to [0, 1], uint8
rounding of the metrics), so the PSNR/SSIM of a deployed file compare with the PyTorch model's
line for line. It is an ``nn.Module`` without parameters: ``restore`` reads its device (the
CPU) and dtype (float32) from the absence of parameters.

What it reads from the file, and checks when it is opened (each problem one
:class:`~slkd.errors.SlkdError` line naming the file):

* one input and one output, both float N×C×H×W (rank 4) with a fixed channel count C and
  dynamic height and width (``slkd export`` writes ``input``/``output`` so);
* the size multiple from the metadata ``slkd.size_multiple`` (``slkd export`` writes it); a
  file from elsewhere without it gets the smallest power of two, up to 64, at which the graph
  runs; ``slkd.inp_channels``/``slkd.out_channels`` must agree with the graph;
* one probe run on a small image must give an output of the input's height and width — a
  classifier, a super-resolution network or a graph that fails at run time is refused here,
  not in the middle of an evaluation.

``forward`` does what the PyTorch model's caller would otherwise have to: the image's channels
are adapted to the graph's as :func:`slkd.engine.inference.adapt_channels` does for a PyTorch
model (grey → RGB and back; RGB planes through a grey model), and an image whose sides are not
multiples of the graph's size multiple is padded (reflect) and cropped back, as ``restore``
pads. Graphs that pad inside (NAFNet's and Uformer's traced padding) are found by the probe and
are not padded outside, as their PyTorch models are not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slkd.engine.inference import adapt_channels, pad_to_multiple
from slkd.errors import SlkdError

__all__ = ["OnnxModel", "load_onnx_model"]

#: channel counts an image can be adapted to (grey and RGB, see adapt_channels)
_CHANNELS = (1, 3)
#: the largest size multiple probed for a file without slkd.size_multiple
_MAX_PROBE = 64
#: the multiple ``restore`` pads to by default (its ``multiple``); a graph with a larger size
#: multiple that runs at it pads inside
_RESTORE_MULTIPLE = 8


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise SlkdError("running an ONNX file needs onnxruntime, which is not installed: "
                        "pip install 'slkd[export]' (or pip install onnxruntime)") from None
    return onnxruntime


def _dims(value) -> list[int | str | None]:
    """The dimensions of a graph input/output: ints where fixed, names (or None) where dynamic."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


class OnnxModel(nn.Module):
    """An ONNX restoration network (see the module docstring). ``threads``: ONNX Runtime's
    intra-op threads (default: its own choice, the physical cores)."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise SlkdError(f"ONNX file not found: {where}")
        ort = _require_onnxruntime()
        try:
            import onnx
        except ImportError:
            raise SlkdError("reading an ONNX file needs the onnx package: pip install 'slkd[export]'") from None
        try:
            proto = onnx.load(where, load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
            raise SlkdError(f"{where} is not an ONNX file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'cannot be parsed'})") from None
        if not proto.graph.node:
            raise SlkdError(f"{where} is not an ONNX model (no graph)")
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        initializers = {t.name for t in proto.graph.initializer}
        inputs = [v for v in proto.graph.input if v.name not in initializers]
        if len(inputs) != 1 or len(proto.graph.output) != 1:
            raise SlkdError(f"{where}: a restoration network has one input and one output image; this "
                            f"graph has {len(inputs)} input(s) and {len(proto.graph.output)} output(s)")
        inp, out = inputs[0], proto.graph.output[0]
        self.input_name, self.output_name = inp.name, out.name
        for role, value in (("input", inp), ("output", out)):
            elem = value.type.tensor_type.elem_type
            if elem != onnx.TensorProto.FLOAT:
                raise SlkdError(f"{where}: {role} {value.name!r} is "
                                f"{onnx.TensorProto.DataType.Name(elem).lower() if elem else 'not a tensor'}, "
                                "not float32 (N×C×H×W images in [0, 1])")
            dims = _dims(value)
            if len(dims) != 4:
                raise SlkdError(f"{where}: {role} {value.name!r} has rank {len(dims)} "
                                f"({'×'.join(str(d) for d in dims) or 'scalar'}); a restoration network "
                                "takes and returns N×C×H×W images")
        in_dims, out_dims = _dims(inp), _dims(out)
        channels = in_dims[1]
        if not isinstance(channels, int):
            raise SlkdError(f"{where}: the channel count of input {inp.name!r} is not fixed "
                            f"({channels or '?'}); slkd runs graphs of 1 (grey) or 3 (RGB) channels")
        if channels not in _CHANNELS:
            raise SlkdError(f"{where}: input {inp.name!r} has {channels} channels; slkd runs graphs of "
                            "1 (grey) or 3 (RGB) channels")
        if any(isinstance(d, int) for d in in_dims[2:]):
            raise SlkdError(f"{where}: input {inp.name!r} has a fixed height or width "
                            f"({'×'.join(str(d) for d in in_dims)}); slkd runs graphs with dynamic "
                            "height and width (slkd export writes them)")
        self.inp_channels = int(channels)
        self.out_channels = out_dims[1] if isinstance(out_dims[1], int) else None
        self._check_metadata(where)

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(where, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types (InvalidGraph, Fail …)
            raise SlkdError(f"{where}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        declared = self.metadata.get("slkd.size_multiple")
        if declared is not None:
            try:
                self.size_multiple = int(declared)
            except ValueError:
                raise SlkdError(f"{where}: metadata slkd.size_multiple is {declared!r}, not an integer") from None
            if self.size_multiple < 1:
                raise SlkdError(f"{where}: metadata slkd.size_multiple is {declared}, not a positive integer")
            self._probe(where, self.size_multiple, fail=True)
        else:
            self.size_multiple = self._find_multiple(where)
        # a graph that pads inside runs at restore's multiple: it is not padded outside
        self.pad_multiple = self.size_multiple
        if self.size_multiple > _RESTORE_MULTIPLE and self.size_multiple % _RESTORE_MULTIPLE == 0:
            odd = _RESTORE_MULTIPLE * (self.size_multiple // _RESTORE_MULTIPLE + 1)
            if self._probe(where, odd, fail=False):
                self.pad_multiple = _RESTORE_MULTIPLE

    def _check_metadata(self, where: str) -> None:
        for key, actual in (("slkd.inp_channels", self.inp_channels), ("slkd.out_channels", self.out_channels)):
            declared = self.metadata.get(key)
            if declared is not None and actual is not None and declared != str(actual):
                raise SlkdError(f"{where}: metadata {key} says {declared} but the graph has {actual}; "
                                "the file was changed after export")

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: array})[0]

    def _probe(self, where: str, side: int, *, fail: bool) -> bool:
        """Run once on a 1×C×side×(side·2) image (a constant grey); the output must be N×C'×H×W of
        the same height and width. ``fail``: raise instead of returning False."""
        x = np.full((1, self.inp_channels, side, 2 * side), 0.5, dtype=np.float32)
        try:
            y = self._run(x)
        except Exception as exc:
            if not fail:
                return False
            raise SlkdError(f"{where}: the graph fails on a 1×{self.inp_channels}×{side}×{2 * side} "
                            f"image ({str(exc).splitlines()[0]})") from None
        if y.ndim != 4 or y.shape[0] != 1 or tuple(y.shape[2:]) != (side, 2 * side):
            if not fail:
                return False
            raise SlkdError(f"{where}: not a restoration network: a 1×{self.inp_channels}×{side}×"
                            f"{2 * side} image gives an output of shape {'×'.join(map(str, y.shape))}, "
                            "not the input's height and width")
        if self.out_channels is None:
            self.out_channels = int(y.shape[1])
        return True

    def _find_multiple(self, where: str) -> int:
        side = 1
        while side <= _MAX_PROBE:
            if self._probe(where, side, fail=False):
                return side
            side *= 2
        self._probe(where, _MAX_PROBE, fail=True)  # says why
        raise AssertionError("unreachable")

    def extra_repr(self) -> str:
        return f"{self.path}, {self.inp_channels} channel(s), size multiple {self.size_multiple}"

    @property
    def name(self) -> str:
        """The model name recorded at export (``slkd.model``), else the file name."""
        return self.metadata.get("slkd.model", self.path.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"expected an N×C×H×W tensor, got {tuple(getattr(x, 'shape', ()))}")
        inp, undo = adapt_channels(x, self.inp_channels)
        padded, (h, w) = pad_to_multiple(inp, self.pad_multiple)
        array = np.ascontiguousarray(padded.detach().to("cpu", torch.float32).numpy())
        out = torch.from_numpy(self._run(array))
        return undo(out[:, :, :h, :w]).to(x.device)


def load_onnx_model(path: str | os.PathLike, *, threads: int | None = None) -> OnnxModel:
    """:class:`OnnxModel` of ``path`` (one-line errors for files that are not restoration networks)."""
    return OnnxModel(path, threads=threads)
