"""Reading a network's intermediate features for distillation: :class:`RecordingTaps` (forward
hooks that record only while a distiller runs) and :func:`probe` (one forward of a zero image
that gives each tapped feature's channels and size, from which adapters and extractors are
built; a wrong module name or a network that does not run fails there, with its role)."""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from slkd.errors import SlkdError
from slkd.models.protocol import input_channels, size_multiple
from slkd.models.taps import FeatureTaps

__all__ = ["PROBE_SIZE", "ProbeResult", "RecordingTaps", "probe"]

#: side of the zero image used to probe channel counts and feature sizes (rounded up to the
#: models' ``size_multiple``)
PROBE_SIZE = 32


class RecordingTaps(FeatureTaps):
    """:class:`FeatureTaps` that record only inside :meth:`recording`.

    The student is also the exported / evaluated network (and the EMA copy deep-copies its
    hooks); gating keeps validation and inference from filling the tap dict with features
    nobody reads.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.active = False
        super().__init__(model, names)

    def _recorder(self, name: str):
        record = super()._recorder(name)

        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self.active:
                record(module, inputs, output)

        return hook

    @contextmanager
    def recording(self) -> Iterator["RecordingTaps"]:
        self.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = False


@dataclass(frozen=True)
class ProbeResult:
    """Shapes seen in the probe forward of one model: its output and each tapped feature."""

    image_size: tuple[int, int]
    output_shape: tuple[int, ...]
    feature_shapes: dict[str, tuple[int, ...]]

    def channels(self, names: Sequence[str]) -> list[int]:
        return [self.feature_shapes[n][1] for n in names]

    def sizes(self, names: Sequence[str]) -> list[tuple[int, int]]:
        return [tuple(self.feature_shapes[n][-2:]) for n in names]


def _first_tensor(model: nn.Module) -> Tensor | None:
    for t in model.parameters():
        return t
    for t in model.buffers():
        return t
    return None


def probe(models: Mapping[str, tuple[nn.Module, RecordingTaps | None]]) -> dict[str, ProbeResult]:
    """One forward of a zero image through each model (``"student"`` first, then the teachers by
    role) with its taps: the shapes of its output and of each tapped feature."""
    multiple = 1
    for model, _ in models.values():
        multiple = math.lcm(multiple, size_multiple(model))
    size = multiple * math.ceil(PROBE_SIZE / multiple)
    channels = input_channels(models["student"][0])
    results = {}
    for role, (model, taps) in models.items():
        who = "the student" if role == "student" else f"Teacher {role.upper()}"
        wanted = input_channels(model, channels)
        if wanted != channels:
            raise SlkdError(
                f"{who} takes {wanted}-channel images but the student takes {channels}; "
                "distillation feeds them the same images"
            )
        ref = _first_tensor(model)
        x = torch.zeros(1, channels, size, size, device=ref.device if ref is not None else None,
                        dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
        was_training = model.training
        model.eval()  # no batch-norm statistics may see the probe
        try:
            with torch.inference_mode(), (taps.recording() if taps else nullcontext()):
                out = model(x)
                shapes = {n: tuple(taps.features[n].shape) for n in taps.names
                          if n in taps.features} if taps else {}
        except Exception as exc:  # noqa: BLE001 - report which network failed, and why
            raise SlkdError(f"probe forward of {who} on a {channels}×{size}×{size} zero image "
                            f"failed: {exc}") from exc
        finally:
            model.train(was_training and role == "student")
            if taps:
                taps.clear()
        if taps:
            silent = [n for n in taps.names if n not in shapes]
            if silent:
                raise SlkdError(f"{who}: tapped module(s) {', '.join(silent)} did not run in a forward pass")
            flat = [n for n, s in shapes.items() if len(s) != 4]
            if flat:
                raise SlkdError(f"{who}: tapped module(s) {', '.join(flat)} do not output B×C×H×W maps")
        results[role] = ProbeResult((size, size), tuple(out.shape), shapes)
    return results

