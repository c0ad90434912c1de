"""Config validation names the key; overrides follow the path; no code runs from YAML."""

from pathlib import Path

import pytest
import yaml

from slkd.engine.config import ConfigError, TrainRunConfig, apply_overrides, from_dict, load_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def minimal(**changes):
    data = {
        "name": "t",
        "model": {"name": "res-sl-tiny"},
        "data": {"train": {"type": "degraded", "roots": ["x"], "patch_size": 16,
                           "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}},
        "train": {"iters": 10},
    }
    return apply_overrides(data, [f"{k}={v}" for k, v in changes.items()])


def test_minimal_config_gets_defaults():
    cfg = from_dict(TrainRunConfig, minimal())
    assert cfg.train.optimizer.type == "adamw" and cfg.train.grad_clip is None
    assert cfg.data.batch_size == 8 and cfg.role == "teacher_a"
    assert from_dict(TrainRunConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.optimzer.lr=1", r"train.optimzer: unknown key; did you mean 'optimizer'"),
    ("train.iters=many", r"train.iters: expected an integer, got 'many'"),
    ("train.iters=0", r"train.iters: must be >= 1"),
    ("train.optimizer.lr=fast", r"train.optimizer.lr: expected a number, got 'fast'"),
    ("train.optimizer.type=sgd", r"train.optimizer.type: expected 'adam' or 'adamw', got 'sgd'"),
    ("data.train.patch_size=20", r"data.train.patch_size: must be a multiple of 8"),
    ("train.ema=1.5", r"train.ema: a decay in \(0, 1\)"),
    ("train.bf16=maybe", r"train.bf16: expected true/false"),
    ("data.train.roots=[]", r"data.train.roots: at least one folder"),
    ("role=teacher_b", r"model.options.global_residual: Teacher B .* must disable the global residual"),
    ("data.val=[{type: paired}]", r"data.val\[0\].roots: required key is missing"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainRunConfig, apply_overrides(minimal(), [override]))


def test_missing_required_section():
    data = minimal()
    del data["train"]
    with pytest.raises(ConfigError, match="^train: required key is missing"):
        from_dict(TrainRunConfig, data)


def test_overrides_parse_yaml_scalars_and_create_paths():
    data = apply_overrides(minimal(), ["train.iters=500", "model.options.dim=16", "train.grad_clip=null",
                                       "data.train.roots=[a, b]"])
    cfg = from_dict(TrainRunConfig, data)
    assert cfg.train.iters == 500 and cfg.model.options == {"dim": 16}
    assert cfg.train.grad_clip is None and cfg.data.train.roots == ["a", "b"]
    with pytest.raises(ConfigError, match="not of the form"):
        apply_overrides({}, ["train.iters"])
    listed = apply_overrides({"val": [{"limit": None}]}, ["val.0.limit=2"])
    assert listed == {"val": [{"limit": 2}]}
    with pytest.raises(ConfigError, match="val.1 is not an index of a 1-entry list"):
        apply_overrides(listed, ["val.1.limit=3"])
    with pytest.raises(ConfigError, match="train.iters is not a mapping"):
        apply_overrides({"train": {"iters": 5}}, ["train.iters.x=1"])


def test_yaml_cannot_execute_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)
    assert not (tmp_path / "pwned").exists()


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name and cfg.train.iters >= 1
    assert yaml.safe_load(path.read_text())["name"] == cfg.name
