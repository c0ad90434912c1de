"""Config validation names the key; overrides follow the path; no code runs from YAML."""

from pathlib import Path

import pytest
import torch
import yaml

from slkd.engine.builders import build_model_for_run, build_teacher, build_train_set
from slkd.engine.config import (
    ConfigError,
    TeacherConfig,
    TrainRunConfig,
    apply_overrides,
    from_dict,
    load_config,
    to_dict,
)
from slkd.models import build_model, save_weights

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
    ("eval.tile=20", r"eval.tile: a positive multiple of 8 \(or null\), got 20"),
    ("eval={tile: 64, overlap: 64}", r"eval.overlap: must be >= 0 and smaller than eval.tile \(64\)"),
    ("eval.crop_border=-1", r"eval.crop_border: must be >= 0"),
    ("train.scheduler.min_lr=1", r"train.scheduler.min_lr: the cosine schedule decays from optimizer.lr"),
    ("train.scheduler.warmup_iters=-5", r"train.scheduler.warmup_iters: must be >= 0"),
    ("train.optimizer.weight_decay=-0.1", r"train.optimizer.weight_decay: must be >= 0"),
    ("data.train.limit=0", r"data.train.limit: must be >= 1"),
    ("data.batch_size=two", r"data.batch_size: expected an integer, got 'two'"),
    ("model=resnet", r"model: expected a mapping, got 'resnet'"),
    ("seed=[1]", r"seed: expected an integer"),
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


def test_empty_or_non_mapping_config_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="^name: required key is missing"):
        load_config(tmp_path / "empty.yaml")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_files_named_in_a_config_are_reported_with_their_key(tmp_path):
    """Model, initial weights, teachers and data folders: every failure names the key."""
    cfg = lambda **c: from_dict(TrainRunConfig, minimal(**c))  # noqa: E731
    with pytest.raises(ConfigError, match="^model.init_from: weights not found: .*nowhere.pth"):
        build_model_for_run(cfg(**{"model.init_from": str(tmp_path / "nowhere.pth")}))
    save_weights(build_model("restormer-tiny"), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="^model.init_from: .*other.pth does not fit this model"):
        build_model_for_run(cfg(**{"model.init_from": str(tmp_path / "other.pth")}))
    with pytest.raises(ConfigError, match="^model.name: unknown model 'resnet'"):
        build_model_for_run(cfg(**{"model.name": "resnet"}))
    with pytest.raises(ConfigError, match="^model.options: model 'res-sl-tiny' has no option.s. dimm"):
        build_model_for_run(cfg(**{"model.options.dimm": 8}))
    with pytest.raises(ConfigError, match=r"^data.train.roots: folder not found"):
        build_train_set(cfg(**{"data.root": str(tmp_path)}))

    marker = tmp_path / "pwned"
    torch.save({"params": build_model("restormer-tiny").state_dict(), "x": _Payload(marker)}, tmp_path / "evil.pth")
    spec = TeacherConfig(name="restormer-tiny", weights=str(tmp_path / "evil.pth"))
    with pytest.raises(ConfigError, match="^teachers.a.weights: refusing to load .*evil.pth.*could run code"):
        build_teacher(spec, "teachers.a")
    assert not marker.exists()
    spec = TeacherConfig(name="restormer-tiny", weights=str(tmp_path / "other.pth"), options={"dim": 8})
    with pytest.raises(ConfigError, match="^teachers.b.weights: .*does not fit this model"):
        build_teacher(spec, "teachers.b")
    spec = TeacherConfig(name="restormer-huge", weights=str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="^teachers.a.name: unknown model 'restormer-huge'"):
        build_teacher(spec, "teachers.a")
