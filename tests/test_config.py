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
    with pytest.raises(ConfigError, match="^teachers.a.weights: refusing to load .*evil.pth.*would run code"):
        build_teacher(spec, "teachers.a")
    assert not marker.exists()
    spec = TeacherConfig(name="restormer-tiny", weights=str(tmp_path / "other.pth"), options={"dim": 8})
    with pytest.raises(ConfigError, match="^teachers.b.weights: .*does not fit this model"):
        build_teacher(spec, "teachers.b")
    spec = TeacherConfig(name="restormer-huge", weights=str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="^teachers.a.name: unknown model 'restormer-huge'"):
        build_teacher(spec, "teachers.a")


# --------------------------------------------------------------------------------------------
# docs/reliability.md §8: names that leave output_dir, non-finite numbers, exponent floats, binary configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/some/other/dir", "../escape", "a/../../b", "..", ".", "a/b",
                                  "a\\b", "", "~"])
def test_run_name_cannot_leave_output_dir(name):
    """A run writes only into output_dir/name: an absolute name, '..' or a separator would
    replace files of another folder (docs/reliability.md §8, item 2)."""
    data = minimal()
    data["name"] = name
    with pytest.raises(ConfigError, match="^name: "):
        from_dict(TrainRunConfig, data)


@pytest.mark.parametrize("override, key", [
    ("train.optimizer.lr=.inf", "train.optimizer.lr"),
    ("train.optimizer.lr=.nan", "train.optimizer.lr"),
    ("train.optimizer.lr=-.inf", "train.optimizer.lr"),
    ("train.optimizer.betas=[0.9, .nan]", r"train.optimizer.betas\[1\]"),
    ("train.grad_clip=.inf", "train.grad_clip"),
    ("train.scheduler.min_lr=.nan", "train.scheduler.min_lr"),
    ("data.train.degradation.params.sigma=.nan", "data.train.degradation.params.sigma"),
    ("model.options.scale=.inf", "model.options.scale"),
])
def test_non_finite_numbers_are_refused_with_their_key(override, key):
    """NaN and infinity are never a valid setting; before, lr=.inf trained all-NaN weights and
    lr=.nan ended in a traceback (docs/reliability.md §8, items 6 and 9)."""
    with pytest.raises(ConfigError, match=f"^{key}: expected a finite number"):
        from_dict(TrainRunConfig, apply_overrides(minimal(), [override]))


def test_non_finite_distill_weights_are_refused():
    data = minimal(role="distill")
    data["teachers"] = {"a": {"name": "restormer-tiny", "weights": "a.pth"}}
    data["distill"] = {"method": "slkd", "irl": False, "loss_weights": {"kl": float("nan")}}
    with pytest.raises(ConfigError, match=r"^distill.loss_weights.kl: expected a finite number"):
        from_dict(TrainRunConfig, data)


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("1E-4", 1e-4), ("2e3", 2000.0), ("1E+3", 1000.0),
                                         (".5e3", 500.0), ("-3e-2", -0.03), ("+1.5e-3", 1.5e-3),
                                         ("5.0e-4", 5e-4)])
def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path, text, value):
    """``lr: 1e-4`` is how everyone writes a learning rate; YAML 1.1 read it as a string
    (docs/reliability.md §8, item 7). The file and the command line go through the same loader."""
    data = minimal()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data) + "seed: 0\n")
    text_cfg = path.read_text().replace("iters: 10", f"iters: 10\n  optimizer:\n    weight_decay: {text.lstrip('-')}")
    path.write_text(text_cfg)
    assert load_config(path).train.optimizer.weight_decay == pytest.approx(abs(value))
    assert apply_overrides({}, [f"x={text}"]) == {"x": pytest.approx(value)}
    if value > 0:
        cfg = load_config(path, [f"train.optimizer.lr={text}", "train.scheduler.min_lr=0"])
        assert cfg.train.optimizer.lr == pytest.approx(value)
    # what is not a number stays a string, and integers stay integers
    assert apply_overrides({}, ["a=1e", "b=e5", "c=1_000", "d=12", "e=1.5"]) == \
        {"a": "1e", "b": "e5", "c": 1000, "d": 12, "e": 1.5}


def test_binary_or_undecodable_config_is_a_config_error(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="weights.yaml.*not a text"):
        load_config(path)
    path.write_bytes(b"name: t\x00\x01\n")
    with pytest.raises(ConfigError, match="weights.yaml"):
        load_config(path)


@pytest.mark.parametrize("key, value, message", [
    ("mscn_c", 0.0, "must be > 0"),
    ("mscn_c", -1.0, "must be > 0"),
    ("gamma_stat", -1.0, "must be >= 0"),
    ("piqe_tau", -0.5, "must be >= 0"),
    ("piqe_block", 0, "must be >= 1"),
    ("fakd_pool", 0, "must be >= 1"),
])
def test_distill_numbers_are_checked_with_their_key(key, value, message):
    """Same class as the numbers of docs/reliability.md §8: mscn_c=-1 trained on a loss of 3.5e7
    without a word, and gamma_stat, piqe_block and fakd_pool were refused only when the distiller
    was built, without the key's path."""
    data = minimal(role="distill")
    data["teachers"] = {"a": {"name": "restormer-tiny", "weights": "a.pth"}, "b": None}
    data["distill"] = {"method": "slkd", "irl": False, key: value}
    with pytest.raises(ConfigError, match=rf"^distill.{key}: {message}"):
        from_dict(TrainRunConfig, data)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_seed_must_be_a_63_bit_number(seed):
    """A seed of 2**64 passed the schema and ended in an overflow traceback when seeding."""
    with pytest.raises(ConfigError, match=r"^seed: must be from 0 to 2\*\*63 - 1"):
        from_dict(TrainRunConfig, {**minimal(), "seed": seed})


def test_distill_scratch_needs_no_teachers_but_teacher_methods_do():
    """`distill.method: scratch` under `slkd distill` (the study's reference on the distillers'
    code path) runs no teacher, so it needs no teachers section; a method that runs one does."""
    data = minimal(role="distill")
    data["distill"] = {"method": "scratch"}
    cfg = from_dict(TrainRunConfig, data)
    assert cfg.teachers is None and cfg.distill.method == "scratch"
    data["distill"] = {"method": "fitnet"}
    with pytest.raises(ConfigError, match=r"^teachers: distill.method fitnet needs a teachers section "
                                          r"\(teachers.a: method 'fitnet' needs Teacher A"):
        from_dict(TrainRunConfig, data)
    del data["distill"]
    with pytest.raises(ConfigError, match=r"^distill: role 'distill' needs a distill section"):
        from_dict(TrainRunConfig, data)


def test_a_task_is_one_table_entry_from_which_the_config_and_its_labels_derive(monkeypatch):
    import argparse

    from slkd.cli import compress as compress_cli
    from slkd.data import tasks
    from slkd.engine.evaluation import Convention
    from slkd.metrics import task_uses_y_channel

    with pytest.raises(ConfigError, match=r"eval\.task: expected 'denoise' or .*'reconstruct', got 'desnow'"):
        from_dict(TrainRunConfig, minimal(**{"eval.task": "desnow"}))
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))  # the entry is gone after the test
    tasks.register_task(tasks.TaskSpec("desnow", y_channel=True, input_label="snowy input",
                                       layouts=(("snowy", "clear"),)))
    assert from_dict(TrainRunConfig, minimal(**{"eval.task": "desnow"})).eval.task == "desnow"
    assert task_uses_y_channel("desnow") and Convention.for_task("desnow").y_channel
    assert tasks.task_spec("desnow").input_label == "snowy input"
    parser = argparse.ArgumentParser()
    compress_cli.add_parser(parser.add_subparsers())
    assert parser.parse_args(["compress", "--teacher", "t", "--task", "desnow", "--train", "a",
                              "--val", "b"]).task == "desnow"
    with pytest.raises(ValueError, match="registered already"):
        tasks.register_task(tasks.TaskSpec("desnow", y_channel=False, input_label="x"))
