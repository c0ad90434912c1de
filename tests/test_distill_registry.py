"""A new KD method is one file plus its registration: the toy method below is defined and
registered here, in a test file, and trained by `slkd distill` through the config path (and one
written into a temporary module is trained by `slkd distill --plugin`); the trainer tells a
distiller that asks its progress; the config's teacher rule and the distiller agree."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest
import torch
import yaml

from slkd.cli.main import main
from slkd.distill import (
    Distiller,
    DistillerConfig,
    build_distiller,
    distill_config,
    register_distiller,
    registered_methods,
)
from slkd.engine.config import TrainRunConfig, from_dict, load_config, to_dict
from slkd.errors import ConfigError, SlkdError
from slkd.losses import pixel_loss
from slkd.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the toy method: one file's worth


@dataclass
class ToyMatchConfig(DistillerConfig):
    """toy_match: L_pix + match·scale·mean((S(x) − A(x))²)."""

    scale: float = 1.0

    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "match": 0.5})

    def validate(self, path: str = "distill") -> None:
        super().validate(path)
        if self.scale <= 0:
            raise ConfigError(f"{path}.scale: must be > 0, got {self.scale}")


#: progress values the toy distiller saw, one per training step (read by the tests)
SEEN_PROGRESS: list[float] = []


@register_distiller("toy_match", ToyMatchConfig)
class ToyMatchDistiller(Distiller):
    progress = 0.0

    def set_progress(self, step: int, total: int) -> None:  # optional: the trainer calls it if present
        self.progress = step / total

    def compute_terms(self, x, y):
        if self.training:
            SEEN_PROGRESS.append(self.progress)
        out, _ = self.run_student(x)
        a_out, _ = self.run_teacher("a", x)
        return {"pix": self.pixel_term(out, y), "match": self.cfg.scale * (out - a_out).pow(2).mean()}


# ------------------------------------------------------------------ tiny data and teachers


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_distill_folder):
    return make_distill_folder(tmp_path_factory.mktemp("registry"), seed=2)


def config_data(setup: Path, name: str, distill: dict, **train) -> dict:
    return {
        "name": name, "role": "distill", "seed": 1, "output_dir": str(setup / "runs"),
        "model": {"name": "res-sl-tiny"},
        "teachers": {"a": {"name": "restormer-tiny", "weights": str(setup / "teacher_a.pth")},
                     "b": {"name": "restormer-tiny", "weights": str(setup / "teacher_b.pth"),
                           "options": {"global_residual": False}}},
        "distill": distill,
        "data": {"root": str(setup / "data"), "batch_size": 2,
                 "train": {"type": "degraded", "roots": ["train"], "patch_size": 16,
                           "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}},
                 "val": [{"name": "val", "type": "degraded", "roots": ["val"],
                          "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}}]},
        "train": {"iters": 2, "log_every": 1, "val_every": 2, "ckpt_every": 1, **train},
    }


def write(setup: Path, data: dict) -> Path:
    path = setup / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


# ------------------------------------------------------------------ the toy method end to end


def test_a_method_registered_outside_the_package_trains_through_the_config_path(setup, capsys):
    assert "toy_match" in registered_methods()
    cfg_path = write(setup, config_data(setup, "toy", {"method": "toy_match", "scale": 2.0,
                                                      "loss_weights": {"match": 0.25}}))
    cfg = load_config(cfg_path)
    assert isinstance(cfg.distill, ToyMatchConfig)
    assert cfg.distill.scale == 2.0 and cfg.distill.loss_weights == {"pix": 1.0, "match": 0.25}
    assert cfg.distill.teacher_roles() == ("a",)

    assert main(["distill", "--config", str(cfg_path), "--device", "cpu"]) == 0, capsys.readouterr().err
    run = setup / "runs" / "toy"
    logged = events(run, "train")
    assert [e["step"] for e in logged] == [1, 2]
    for e in logged:  # the total is the configured weighting of the method's own terms
        assert e["loss"] == pytest.approx(e["loss_pix"] + 0.25 * e["loss_match"], rel=1e-5)
    assert set(torch.load(run / "weights.pth", weights_only=True)["params"]) == \
        set(build_model("res-sl-tiny").state_dict())  # the student only
    stored = yaml.safe_load((run / "config.yaml").read_text())["distill"]
    assert stored == {"method": "toy_match", "loss_weights": {"pix": 1.0, "match": 0.25}, "scale": 2.0}
    # teachers.b is not loaded: the toy method does not run one (a missing file does not matter)
    capsys.readouterr()
    data = config_data(setup, "toy-no-b", {"method": "toy_match"})
    data["teachers"]["b"]["weights"] = str(setup / "nowhere.pth")
    assert main(["distill", "--config", str(write(setup, data)), "--device", "cpu"]) == 0
    assert "teachers.b" not in capsys.readouterr().err


def test_the_toy_methods_options_are_checked_with_their_key(setup):
    base = config_data(setup, "toy-bad", {"method": "toy_match"})
    for distill, message in [({"method": "toy_match", "scale": 0.0}, r"^distill.scale: must be > 0"),
                             ({"method": "toy_match", "scal": 1.0}, r"^distill.scal: unknown key; did you mean 'scale'"),
                             ({"method": "toy_match", "loss_weights": {"matc": 1.0}}, r"^distill.loss_weights: unknown term"),
                             ({"method": "toy_match", "loss_weights": {"pix": 0.0, "match": 0.0}},
                              r"^distill.loss_weights: every loss weight of toy_match .pix, match. is 0")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(TrainRunConfig, {**base, "distill": distill})
    # in Python, without YAML
    with pytest.raises(ConfigError, match="scale: must be > 0"):
        distill_config("toy_match", scale=-1.0)
    with pytest.raises(ConfigError, match="has no option.s. drl"):
        distill_config("toy_match", drl=True)


def test_registration_refuses_clashes():
    with pytest.raises(ValueError, match="already registered"):
        register_distiller("slkd", ToyMatchConfig)(ToyMatchDistiller)
    with pytest.raises(ValueError, match="already configures method 'toy_match'"):
        register_distiller("toy_other", ToyMatchConfig)(ToyMatchDistiller)
    with pytest.raises(TypeError, match="DistillerConfig"):
        register_distiller("toy_other", dict)
    with pytest.raises(ValueError, match="plain word"):
        register_distiller("toy other", ToyMatchConfig)
    assert "toy_other" not in registered_methods()


# ------------------------------------------------------------------ progress


def test_the_trainer_tells_the_distiller_its_progress_also_after_resume(setup, capsys):
    """Before step k (k = 0 … iters-1) the trainer calls ``set_progress(k, iters)`` on a
    distiller that has it; a resumed run continues from the checkpoint's step, so a schedule
    reads what an uninterrupted run reads."""
    SEEN_PROGRESS.clear()
    data = config_data(setup, "toy-progress", {"method": "toy_match"}, iters=4,
                       scheduler={"type": "constant"})
    path = write(setup, data)
    assert main(["distill", "--config", str(path), "--device", "cpu", "train.iters=2"]) == 0, \
        capsys.readouterr().err
    assert SEEN_PROGRESS == [0.0, 0.5]  # 2 planned iterations
    SEEN_PROGRESS.clear()
    assert main(["distill", "--config", str(path), "--device", "cpu", "--resume"]) == 0, \
        capsys.readouterr().err
    assert SEEN_PROGRESS == [0.5, 0.75]  # steps 2 and 3 of 4


# ------------------------------------------------------------------ one node for every method


def test_options_of_other_methods_are_checked_then_left_out(setup, capsys):
    """`slkd distill --config configs/denoise25/slkd_tiny.yaml distill.method=fitnet` (README):
    the SLKD keys of that file are not FitNet's; they are checked as SLKD checks them, left out
    of the run's config and named when the run starts."""
    repo_config = Path(__file__).resolve().parents[1] / "configs" / "denoise25" / "slkd_tiny.yaml"
    cfg = load_config(repo_config, ["distill.method=fitnet"])
    assert cfg.distill.method == "fitnet"
    # the file's feature: 1.0 and img: 0.0 (the feature baselines have an output term too)
    assert cfg.distill.loss_weights == {"pix": 1.0, "feature": 1.0, "img": 0.0}
    assert set(cfg.distill.ignored_options) == {"drl", "irl", "extractor_nc", "extractor_et", "teacher_b",
                                                "loss_weights.kl", "loss_weights.nc", "loss_weights.et"}
    assert "drl" not in to_dict(cfg)["distill"]
    assert from_dict(TrainRunConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"^distill.extractor_nc: expected 'brisque' or 'identity' or .*'affinity', "
                                          r"got 'sobel'"):
        load_config(repo_config, ["distill.method=fitnet", "distill.extractor_nc=sobel"])
    with pytest.raises(ConfigError, match=r"^distill.fakd_pool: must be >= 1"):
        load_config(repo_config, ["distill.fakd_pool=0"])  # FAKD's key under SLKD
    # the run says what it leaves out
    data = config_data(setup, "fitnet-from-slkd", {"method": "fitnet", "drl": False,
                                                    "loss_weights": {"kl": 0.5}})
    capsys.readouterr()
    assert main(["distill", "--config", str(write(setup, data)), "--device", "cpu", "train.iters=1"]) == 0
    assert "fitnet does not use distill.drl, distill.loss_weights.kl" in capsys.readouterr().err


# ------------------------------------------------------------------ the config and the distiller agree


SETTINGS = [
    ("slkd", {}),
    ("slkd", {"irl": False}),
    ("slkd", {"loss_weights": {"et": 0.0}}),
    ("slkd", {"teacher_b": "same_as_a"}),
    ("slkd", {"drl": False, "loss_weights": {"kl": 0.0, "img": 0.0}}),
    ("slkd", {"drl": False, "loss_weights": {"kl": 0.0, "img": 0.0}, "teacher_b": "same_as_a"}),
    ("slkd", {"loss_weights": {"nc": 0.0, "kl": 0.0, "img": 1.0, "et": 0.0}}),
    ("scratch", {}),
    ("output_kd", {}),
    ("fitnet", {}),
    ("at", {}),
    ("fakd", {}),
    ("toy_match", {}),
]


@pytest.mark.parametrize("method, options", SETTINGS)
def test_the_teacher_rule_is_the_same_for_the_config_check_and_the_distiller(setup, method, options):
    """One rule, ``teacher_roles()``: the distiller holds exactly those teachers, is built
    without the others, and the run config accepts a missing teachers.b exactly when it is not
    among them (e.g. ``loss_weights.et: 0`` needs no Teacher B)."""
    cfg = distill_config(method, **options)
    roles = cfg.teacher_roles()
    torch.manual_seed(0)
    nets = {"a": build_model("restormer-tiny"), "b": build_model("restormer-tiny", global_residual=False)}
    d = build_distiller(cfg, build_model("res-sl-tiny"), nets)
    assert tuple(r for r in d.probe if r != "student") == roles  # the teachers it holds (and probed)
    d.close()
    d = build_distiller(cfg, build_model("res-sl-tiny"), {r: nets[r] for r in roles})
    assert tuple(r for r in d.probe if r != "student") == roles
    d.close()
    for missing in roles:
        with pytest.raises(SlkdError, match=f"Teacher {missing.upper()}"):
            build_distiller(cfg, build_model("res-sl-tiny"), {r: nets[r] for r in roles if r != missing})
    data = config_data(setup, "rule", {"method": method, **options})
    data["teachers"]["b"] = None
    if "b" in roles:
        with pytest.raises(ConfigError, match="^teachers.b: SLKD with IRL on needs Teacher B"):
            from_dict(TrainRunConfig, data)
    else:
        assert from_dict(TrainRunConfig, data).distill == cfg


@pytest.mark.parametrize("loss", ["l1", "mse", "charbonnier"])
def test_train_loss_is_the_pixel_term_of_every_method_and_of_supervised_training(loss):
    """``train.loss`` means one function (slkd.losses.pixel_loss) for a teacher, a scratch
    student and every distiller's L_pix."""
    from slkd.engine.tasks import SupervisedTask

    gen = torch.Generator().manual_seed(4)
    batch = {"lq": torch.rand(2, 3, 16, 16, generator=gen), "gt": torch.rand(2, 3, 16, 16, generator=gen)}
    torch.manual_seed(0)
    student = build_model("res-sl-tiny")
    teacher = build_model("restormer-tiny")
    with torch.no_grad():
        expected = pixel_loss(loss, student(batch["lq"]), batch["gt"])
        supervised, _ = SupervisedTask(student, loss).loss(student, batch)
    assert torch.equal(supervised, expected)
    for method in ("scratch", "output_kd", "fitnet", "toy_match"):
        d = build_distiller(method, student, {"a": teacher}, pixel_loss=loss)
        with torch.no_grad():
            _, terms = d(batch["lq"], batch["gt"])
        assert torch.equal(terms["loss_pix"], expected), method
        d.close()
    with pytest.raises(SlkdError, match="unknown loss 'l2'"):
        build_distiller("scratch", student, pixel_loss="l2")
    assert not student._forward_hooks  # a refused build leaves no hook behind


# ------------------------------------------------------------------ a method in a module of the user's, from the command line

PLUGIN = '''
from dataclasses import dataclass
from types import MappingProxyType

from slkd.distill import Distiller, DistillerConfig, register_distiller


@dataclass
class GapConfig(DistillerConfig):
    DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "gap": 0.5})
    offset: float = 0.0


@register_distiller("toy_plugin_gap", GapConfig)
class GapDistiller(Distiller):
    def compute_terms(self, x, y):
        out, _ = self.run_student(x)
        a_out, _ = self.run_teacher("a", x)
        return {"pix": self.pixel_term(out, y), "gap": (out - a_out - self.cfg.offset).abs().mean()}
'''


def test_slkd_distill_plugin_trains_a_method_from_a_module_of_the_users(setup, tmp_path, capsys):
    plugin = tmp_path / "toy_plugin_gap_method.py"
    plugin.write_text(PLUGIN)
    data = config_data(setup, "plugin", {"method": "toy_plugin_gap", "offset": 0.1, "loss_weights": {"gap": 0.25}})
    path = write(setup, data)
    assert main(["distill", "--config", str(path), "--device", "cpu"]) == 2  # not registered without it
    assert "distill.method: expected" in capsys.readouterr().err
    assert main(["distill", "--plugin", str(plugin), "--config", str(path), "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    logged = events(setup / "runs" / "plugin", "train")
    assert [e["step"] for e in logged] == [1, 2]
    for e in logged:  # the plugin's own terms, weighted as configured
        assert e["loss_gap"] > 0 and e["loss"] == pytest.approx(e["loss_pix"] + 0.25 * e["loss_gap"], rel=1e-5)
    stored = yaml.safe_load((setup / "runs" / "plugin" / "config.yaml").read_text())["distill"]
    assert stored == {"method": "toy_plugin_gap", "loss_weights": {"pix": 1.0, "gap": 0.25}, "offset": 0.1}
    # slkd compress offers it as a --method once the plugin is given (the same --plugin)
    with pytest.raises(SystemExit):
        main(["compress", "--plugin", str(plugin), "--help"])
    assert "toy_plugin_gap" in capsys.readouterr().out


@pytest.mark.parametrize("body, message", [
    ("raise ValueError('no GPU here')\n", "cannot import it (ValueError: no GPU here)"),
    ("def broken(:\n", "cannot import it (SyntaxError"),
])
def test_a_plugin_that_fails_to_import_is_a_one_line_error_naming_it(tmp_path, capsys, body, message):
    plugin = tmp_path / "toy_broken_plugin.py"
    plugin.write_text(body)
    for command in ("distill", "compress"):
        assert main([command, "--plugin", str(plugin), "--help"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"slkd: error: --plugin {plugin}: {message}") and err.count("\n") == 1, err
    assert main(["distill", "--plugin", "toy_no_such_module", "--help"]) == 2
    assert capsys.readouterr().err == ("slkd: error: --plugin toy_no_such_module: cannot import it "
                                       "(ModuleNotFoundError: No module named 'toy_no_such_module')\n")


FAMILY_PLUGIN = '''
from slkd.models.registry import ModelPreset, register_preset
from slkd.models.restormer import Restormer

register_preset(ModelPreset("toy-plugin-net", Restormer, dict(dim=8, num_blocks=[1, 1, 1, 1],
                num_refinement_blocks=1, heads=[1, 1, 1, 1], ffn_expansion_factor=1.0),
                "a preset a user's module registers"))
'''


@pytest.fixture
def no_toy_preset_after():
    from slkd.models import registry

    yield
    registry._PRESETS.pop("toy-plugin-net", None)  # the rest of the suite sees the shipped presets


def test_every_command_takes_the_plugins_of_its_command_line(tmp_path, capsys, no_toy_preset_after):
    """A preset a user's module registers is a --model of every command that takes one (the
    studies evaluate their own presets through slkd eval --plugin)."""
    plugin = tmp_path / "toy_family_plugin.py"
    plugin.write_text(FAMILY_PLUGIN)
    assert main(["profile", "--model", "toy-plugin-net", "--size", "16", "16", "--no-latency"]) == 2
    capsys.readouterr()
    assert main(["profile", "--plugin", str(plugin), "--model", "toy-plugin-net", "--size", "16", "16",
                 "--no-latency", "--json"]) == 0
    assert "toy-plugin-net" in capsys.readouterr().out
    for command in ("models", "train", "distill", "compress", "eval", "restore", "export", "demo", "profile"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--plugin", str(plugin), "--help"])
        assert exc.value.code == 0 and "--plugin MODULE" in capsys.readouterr().out
