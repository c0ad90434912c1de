"""Weight files: accepted layouts, safety, plain-words errors, atomic saving."""

from pathlib import Path

import numpy as np
import pytest
import torch

from slkd.errors import CheckpointError
from slkd.models import build_model, layer_norm_type, load_weights, read_state_dict, save_weights


def tiny(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    return build_model("res-sl-tiny", **kw)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["params", "params_ema", "state_dict", "bare", "module", "compiled"])
def test_accepted_layouts(tmp_path, layout):
    src = tiny(seed=1)
    sd = src.state_dict()
    obj = {
        "params": {"params": sd},
        "params_ema": {"params_ema": sd},
        "state_dict": {"state_dict": sd, "epoch": 3},
        "bare": sd,
        "module": {"params": {f"module.{k}": v for k, v in sd.items()}},
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
    }[layout]
    torch.save(obj, tmp_path / "w.pth")
    dst = tiny(seed=2)
    assert not same_weights(src, dst)
    report = load_weights(dst, tmp_path / "w.pth")
    assert same_weights(src, dst)
    assert report.source_key == {"params": "params", "params_ema": "params_ema", "state_dict": "state_dict",
                                 "module": "params"}.get(layout)
    assert report.missing == [] and report.unexpected == []


def test_params_ema_preferred_over_params(tmp_path):
    ema, raw = tiny(seed=1), tiny(seed=2)
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, tmp_path / "w.pth")
    dst = tiny(seed=3)
    assert load_weights(dst, tmp_path / "w.pth").source_key == "params_ema"
    assert same_weights(dst, ema)


@pytest.mark.parametrize("name", ["w.pth", "w.safetensors"])
def test_save_round_trip_and_outputs(tmp_path, name):
    src = tiny(seed=4).eval()
    path = save_weights(src, tmp_path / "sub" / name)
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temp file left behind
    if name.endswith(".pth"):
        raw = torch.load(path, weights_only=True)
        assert set(raw) == {"params"}
    dst = tiny(seed=5).eval()
    load_weights(dst, path)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_layer_norm_mismatch_names_the_needed_type(tmp_path):
    save_weights(tiny(LayerNorm_type="BiasFree"), tmp_path / "bf.pth")
    assert layer_norm_type(read_state_dict(tmp_path / "bf.pth")[0]) == "BiasFree"
    with pytest.raises(CheckpointError, match="LayerNorm_type='BiasFree'.*uses 'WithBias'.*restormer-denoise"):
        load_weights(tiny(), tmp_path / "bf.pth")
    save_weights(tiny(), tmp_path / "wb.pth")
    with pytest.raises(CheckpointError, match="LayerNorm_type='WithBias'.*uses 'BiasFree'"):
        load_weights(tiny(LayerNorm_type="BiasFree"), tmp_path / "wb.pth")


def test_shape_mismatch_is_reported_with_shapes(tmp_path):
    save_weights(build_model("restormer-tiny"), tmp_path / "teacher.pth")
    with pytest.raises(CheckpointError, match=r"other shapes.*patch_embed.proj.weight: file \(16, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
        load_weights(tiny(), tmp_path / "teacher.pth")


def test_missing_and_unexpected_keys_in_plain_words(tmp_path):
    sd = tiny().state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("refinement")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save({"params": partial}, tmp_path / "p.pth")
    with pytest.raises(CheckpointError, match=r"parameter\(s\) of the model are not in the file: refinement\.0.*1 tensor\(s\) in the file are not in the model: extra.weight"):
        load_weights(tiny(), tmp_path / "p.pth")
    report = load_weights(tiny(), tmp_path / "p.pth", strict=False)
    assert report.unexpected == ["extra.weight"]
    assert report.missing and all(k.startswith("refinement") for k in report.missing)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.pth"):
        load_weights(tiny(), tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="not a file"):
        load_weights(tiny(), tmp_path)


def test_corrupt_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read .*junk.pth"):
        load_weights(tiny(), tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_weights(tiny(), tmp_path / "junk.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_weights(tiny(), tmp_path / "list.pth")
    torch.save({"params": {"a": 1}}, tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="not a model state dict"):
        load_weights(tiny(), tmp_path / "notensors.pth")


class _Payload:
    """Unpickling this object would create a file: the attack a weights file must not carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"params": tiny().state_dict(), "hook": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load .*evil.pth.*would run code"):
        load_weights(tiny(), tmp_path / "evil.pth")
    assert not marker.exists()


def test_every_load_in_the_package_refuses_code():
    """Static guard: each torch.load in src/slkd passes weights_only=True, and nothing else
    unpickles (pickle/dill/joblib loads, np.load with allow_pickle, yaml.load without SafeLoader)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "slkd"
    loads, problems = 0, []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(root)}:{node.lineno}"
            if name == "torch.load":
                loads += 1
                if kwargs.get("weights_only") != "True":
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "yaml.load",
                          "yaml.unsafe_load", "yaml.full_load"):
                problems.append(f"{where}: {name}")
            elif name in ("np.load", "numpy.load") and kwargs.get("allow_pickle") not in (None, "False"):
                problems.append(f"{where}: np.load with allow_pickle")
    assert loads >= 1 and not problems, problems


def test_refusal_of_code_says_plainly_that_nothing_was_loaded(tmp_path):
    """The refusal must not quote torch's hint to retry with weights_only=False, the unsafe fix
    (docs/reliability.md §8, item 8): it says the file would run code and was not loaded."""
    marker = tmp_path / "pwned"
    torch.save({"params": tiny().state_dict(), "hook": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as info:
        load_weights(tiny(), tmp_path / "evil.pth")
    message = str(info.value)
    assert "evil.pth" in message and "would run code" in message and "was not loaded" in message
    assert "weights_only" not in message and "False" not in message and "torch.load" not in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", ["w.pth", "w.safetensors"])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path, bad, name):
    """NaN weights gave black images with exit code 0 (docs/reliability.md §8, item 6)."""
    state = tiny().state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[key] = state[key].clone()
    state[key].view(-1)[3] = bad
    path = save_weights(state, tmp_path / name)
    with pytest.raises(CheckpointError, match=rf"{name}.*{key}.*not finite"):
        read_state_dict(path)
    model = tiny(seed=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="not finite"):
        load_weights(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_weights_are_refused(tmp_path, dtype):
    """An int32 copy of a float tensor was loaded (cast silently) (docs/reliability.md §8, item 10)."""
    state = tiny().state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[key] = (state[key] * 100).to(dtype)
    torch.save({"params": state}, tmp_path / "int.pth")
    with pytest.raises(CheckpointError, match=rf"int.pth.*{key}.*{str(dtype).removeprefix('torch.')}.*floating"):
        load_weights(tiny(), tmp_path / "int.pth")


def _junk_files(folder: Path) -> dict[str, bytes]:
    """Files that are no weights files, as users hand them over: a saved web address (text
    starting with 'h' was `KeyError: 101`), one letter ('J' was `struct.error`), random bytes
    (`IndexError`), nothing, one byte, a zip of junk, safetensors headers cut off or declaring
    far more than the file holds."""
    import io
    import struct
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", b"junk" * 8)
    rng = np.random.default_rng(0)
    files = {
        "url.pth": b"https://example.com/restormer.pth\n",
        "letter.pth": b"J",
        "empty.pth": b"",
        "one.pth": b"\x00",
        "zipped.pth": archive.getvalue(),
        "cut.safetensors": struct.pack("<Q", 100) + b'{"a":',
        "huge.safetensors": struct.pack("<Q", 2**62) + b"{}",
        "text.safetensors": b"hello, I am not a tensor file",
    }
    for i in range(12):  # random bytes, among them some starting as a pickle would (0x80)
        data = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        files[f"random{i}.pth"] = (b"\x80" + data) if i % 3 == 0 else data
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_files_that_are_not_weights_are_one_clear_error(tmp_path):
    """Each is one CheckpointError naming the file and saying it is not a weights file — never
    KeyError, struct.error or IndexError from inside torch's unpickler."""
    for name in _junk_files(tmp_path):
        with pytest.raises(CheckpointError) as info:
            read_state_dict(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message, message
        assert "not a PyTorch or safetensors weights file" in message and "weights_only" not in message
    url = str(pytest.raises(CheckpointError, read_state_dict, tmp_path / "url.pth").value)
    assert "it holds text: 'https://example.com/restormer.pth'" in url and "web address" in url


def test_weights_that_are_not_weights_are_one_line_in_every_command(tmp_path, cli, tiny_weights):
    """eval, restore and compress name the file in one line (they printed tracebacks)."""
    from slkd.data.image_io import write_image

    _junk_files(tmp_path / "junk")
    write_image(tmp_path / "data" / "img.png", torch.rand(3, 16, 16))
    for name in ("url.pth", "letter.pth", "random1.pth", "random3.pth"):
        bad = tmp_path / "junk" / name
        runs = {
            "eval": ["eval", "--model", "res-sl-tiny", "--weights", bad, "--data", tmp_path / "data",
                     "--task", "denoise"],
            "restore": ["restore", "--model", "res-sl-tiny", "--weights", bad, tmp_path / "data" / "img.png",
                        tmp_path / f"out-{name}.png"],
            "compress": ["compress", "--teacher", f"restormer-tiny:{bad}", "--task", "denoise", "--train",
                         tmp_path / "data", "--val", tmp_path / "data", "--out", tmp_path / "c", "--quick"],
        }
        for command, argv in runs.items():
            result = cli(*argv)
            lines = result.err.strip().splitlines()
            assert result.code == 2 and len(lines) == 1, (command, result.err)
            assert name in lines[0] and "not a PyTorch or safetensors weights file" in lines[0], lines[0]
    assert not (tmp_path / "c").exists()


class _Blocked:
    """A payload torch reports as blocked ("unsupported GLOBAL posix.system whose module posix
    is blocked"), with its own text: its advice to turn weights_only off must not be echoed."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_blocked_payload_is_refused_in_our_own_words(tmp_path, monkeypatch):
    torch.save({"params": tiny().state_dict(), "hook": _Blocked()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path / "evil.pth")
    message = str(info.value)
    assert "refusing to load" in message and "evil.pth" in message and "system" in message
    assert "was not loaded" in message and "\n" not in message
    for echoed in ("weights_only", "False", "torch.load", "arbitrary code", "trusted source", "Re-running"):
        assert echoed not in message, message
    # whatever torch's wording becomes, nothing of its advice is passed on
    import pickle

    def advice(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed. Re-running `torch.load` with "
                                     "`weights_only` set to `False` will likely succeed. GLOBAL os.system")

    monkeypatch.setattr(torch, "load", advice)
    message = str(pytest.raises(CheckpointError, read_state_dict, tmp_path / "evil.pth").value)
    assert "os.system" in message and "weights_only" not in message and "Re-running" not in message
