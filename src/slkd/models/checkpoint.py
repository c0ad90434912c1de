"""Load and save model weights safely and with plain-words errors.

Loading never runs code from the file: ``torch.load(weights_only=True)`` for PyTorch files and
safetensors for ``.safetensors``. Accepted layouts, in order of preference:
``{'params_ema': sd}``, ``{'params': sd}``, ``{'state_dict': sd}`` or a bare state dict
``sd``; ``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile) prefixes are
stripped. Saving writes ``{'params': sd}`` (the Restormer/BasicSR convention) or a
``.safetensors`` file, atomically.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from slkd.errors import CheckpointError
from slkd.fileio import atomic_write

#: containers we look inside, most preferred first (EMA weights are what the authors evaluate)
STATE_DICT_KEYS = ("params_ema", "params", "state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_NORM_KEY = re.compile(r"(^|\.)norm\d?\.body\.(weight|bias)$")


@dataclass
class LoadReport:
    """What :func:`load_weights` did: which container it used and what did not match."""

    path: Path
    source_key: str | None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def read_checkpoint_file(path: str | Path) -> Any:
    """Load any PyTorch or safetensors file **without running code from it**, to the CPU.

    ``torch.load(weights_only=True)`` accepts tensors and plain containers only; a pickle that
    names any other Python object is refused with a :class:`CheckpointError` saying so (and
    nothing in it is executed). Every other failure is a CheckpointError naming the file too.
    """
    return _read_file(Path(path))


#: what a file begins with: torch.save's zip archive, its legacy format (a pickle, protocol 2+)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
#: the most a safetensors header may declare (the safetensors library's own limit)
_SAFETENSORS_HEADER_LIMIT = 100_000_000
_NOT_WEIGHTS = "not a PyTorch or safetensors weights file"


def _safetensors_header(head: bytes, size: int) -> str | None:
    """Why ``head`` (the first bytes of a file of ``size`` bytes) is not the start of a
    safetensors file (an 8-byte little-endian header length, then a JSON header), or None when
    it is."""
    if size < 10:
        return f"it has {size} byte(s), too few for a safetensors header"
    declared = int.from_bytes(head[:8], "little")
    if declared > min(size - 8, _SAFETENSORS_HEADER_LIMIT):
        return (f"its first 8 bytes, read as a safetensors header length, declare {declared} bytes "
                f"but the file has {size}")
    if head[8:9] != b"{":
        return "its safetensors header is not JSON"
    return None


def _looks_like(head: bytes, size: int) -> str:
    """What a file that is no weights file holds, in words (never more than a short excerpt)."""
    if size == 0:
        return "it is empty: 0 bytes"
    try:
        text = head[:64].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip() and all(c.isprintable() or c in "\r\n\t" for c in text):
        excerpt = " ".join(text.split())[:48]
        hint = " — a saved web address? download the file it names" if excerpt.startswith(("http://", "https://")) else ""
        return f"it holds text: {excerpt!r}{hint}"
    return f"it starts with the bytes {head[:8].hex(' ')}"


def _read_file(path: Path) -> Any:
    """Load ``path`` by what it holds (not by its name): safetensors through safetensors, a
    ``torch.save`` file through ``torch.load(weights_only=True)``. Every failure is one
    :class:`CheckpointError` naming the file and what it is not; torch's own text is never
    passed on (it advises turning ``weights_only`` off, which would run the file's code)."""
    if not path.exists():
        raise CheckpointError(f"weights file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"weights path is not a file: {path}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        return _torch_load(path, "a zip archive" if head.startswith(_ZIP_MAGIC) else "pickled data")
    why_not = _safetensors_header(head, size)
    if why_not is None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot read safetensors file {path}: {reason}") from None
    what = why_not if path.suffix == ".safetensors" and size else _looks_like(head, size)
    raise CheckpointError(f"cannot read {path}: {_NOT_WEIGHTS} ({what})")


def _torch_load(path: Path, container: str) -> Any:
    try:
        with warnings.catch_warnings():  # junk read as a pickle warns of an odd protocol first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the object the pickle asks for ("Unsupported global: GLOBAL x", "unsupported
        # GLOBAL posix.system whose module posix is blocked"); only that name is passed on
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if named is None and "global" not in str(exc).lower():
            raise CheckpointError(f"cannot read {path}: {_NOT_WEIGHTS} ({container} that "
                                  "torch.save did not write, or damaged)") from None
        what = f" ({named.group(1)})" if named else ""
        raise CheckpointError(
            f"refusing to load {path}: besides tensors it holds a pickled Python object{what} "
            "that would run code when loaded, so the file was not loaded. A weights file needs "
            "tensors only: ask for a plain state dict or a .safetensors file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler fails on junk with any error
        # (KeyError, struct.error, IndexError, EOFError, RuntimeError …): all mean the same
        kind = "truncated or damaged" if isinstance(exc, (EOFError, RuntimeError, zipfile.BadZipFile)) else "damaged"
        raise CheckpointError(f"cannot read {path}: {_NOT_WEIGHTS} ({container} that torch.save "
                              f"did not write, or {kind})") from None


def extract_state_dict(obj: Any, path: Path | str = "<memory>") -> tuple[dict[str, torch.Tensor], str | None]:
    """Find the state dict inside a loaded checkpoint; returns it and the container key used."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    source = None
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj, source = obj[key], key
            break
    state = _strip_prefixes(obj)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad or not state:
        what = f"non-tensor entries such as {bad[:3]}" if bad else "no tensors"
        raise CheckpointError(
            f"{path} is not a model state dict ({what}); expected a bare state dict or one "
            f"under {', '.join(repr(k) for k in STATE_DICT_KEYS)}"
        )
    check_finite(state, path)
    return state, source


def check_finite(state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Refuse weights holding NaN or infinities: they restore every image to NaN (black)."""
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            bad = value.numel() - int(torch.isfinite(value).sum())
            if bad:
                raise CheckpointError(
                    f"{path}: tensor {key} holds {bad} value(s) that are not finite (NaN or "
                    "infinity); these weights would turn every image into NaN. Was the training "
                    "diverging? Use an earlier checkpoint"
                )


#: what :func:`read_state_dict` read inside :func:`read_once`: (path, inode, size, mtime) → its result
_READ: dict[tuple[str, int, int, int], tuple[dict[str, torch.Tensor], str | None]] | None = None


@contextmanager
def read_once() -> Iterator[None]:
    """Within this context every weights file is read from disk once: :func:`read_state_dict`
    keeps what it read, keyed by the file's path, inode, size and modification time (a file
    written again since — slkd replaces files whole — is read again). A job that builds the same teacher in several places (a check
    before training, each stage, the report) reads its file once. Nested uses share one store;
    it is dropped when the outermost ends."""
    global _READ
    outermost = _READ is None
    if outermost:
        _READ = {}
    try:
        yield
    finally:
        if outermost:
            _READ = None


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read a weights file safely and return ``(state_dict, container_key)`` (the same tensors
    again for a file read before inside :func:`read_once`: load them, never change them)."""
    path = Path(path)
    if _READ is None:
        return extract_state_dict(_read_file(path), path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:  # missing: _read_file names the problem
        return extract_state_dict(_read_file(path), path)
    if key not in _READ:
        _READ[key] = extract_state_dict(_read_file(path), path)
    state, source = _READ[key]
    return dict(state), source


def layer_norm_type(state: Mapping[str, Any]) -> str | None:
    """'WithBias' or 'BiasFree' for Restormer-style norms (``*.body.bias`` ⇒ WithBias), else None."""
    norm_keys = [k for k in state if _NORM_KEY.search(k)]
    if not norm_keys:
        return None
    return "WithBias" if any(k.endswith(".body.bias") for k in norm_keys) else "BiasFree"


def _preview(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" … and {len(keys) - n} more" if len(keys) > n else "")


def check_compatible(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str, strict: bool) -> tuple[list[str], list[str]]:
    """Raise a CheckpointError that says in plain words why ``state`` does not fit ``model``."""
    expected = model.state_dict()
    file_ln, model_ln = layer_norm_type(state), layer_norm_type(expected)
    if file_ln and model_ln and file_ln != model_ln:
        raise CheckpointError(
            f"{path} was saved from a model with LayerNorm_type={file_ln!r} but this model uses "
            f"{model_ln!r}: build the model with LayerNorm_type={file_ln!r}"
            + (" (e.g. preset 'restormer-denoise')" if file_ln == "BiasFree" else "")
        )
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{path} does not fit this model: {len(mismatched)} tensor(s) have other shapes "
            f"(different width, channels or heads?): {_preview(mismatched, 3)}"
        )
    integer = [f"{k} is {str(v.dtype).removeprefix('torch.')}" for k, v in state.items()
               if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if integer:
        raise CheckpointError(
            f"{path} does not fit this model: {len(integer)} tensor(s) hold integers "
            f"({_preview(integer, 3)}) where the model needs floating-point values (a quantised "
            "or damaged file?)"
        )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} parameter(s) of the model are not in the file: {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) in the file are not in the model: {_preview(unexpected)}")
        raise CheckpointError(
            f"{path} does not match this model ({'; '.join(parts)}). Wrong preset or number of "
            "blocks? Pass strict=False to load the matching part only."
        )
    return missing, unexpected


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str, strict: bool = True, source_key: str | None = None) -> LoadReport:
    """Load an already-read state dict into ``model`` after the checks of :func:`check_compatible`."""
    missing, unexpected = check_compatible(model, state, path, strict)
    model.load_state_dict(state, strict=False)
    return LoadReport(path=Path(path), source_key=source_key, missing=missing, unexpected=unexpected)


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a weights file into ``model`` in place and report what happened."""
    state, source = read_state_dict(path)
    return load_state(model, state, path, strict, source)


def _cpu_state(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v.detach().cpu().contiguous() for k, v in _strip_prefixes(state).items()}


def save_weights(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Save deployable weights atomically: ``{'params': sd}``, or safetensors for ``.safetensors``."""
    path = Path(path)
    state = _cpu_state(model_or_state)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        else:
            atomic_write(path, lambda tmp: torch.save({"params": state}, tmp))
    except (OSError, RuntimeError) as exc:  # a full disk, a quota, a read-only folder
        # torch.save reports a failed write as a RuntimeError of its zip writer
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
        raise CheckpointError(f"cannot write {path}: {reason} (the previous file, if any, is "
                              "kept)") from None
    return path
