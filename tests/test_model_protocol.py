"""The model protocol (slkd.models.RestorationModel): every family provides it, the engine and
the distillers read it, and neither names an architecture; slkd.distill stands without the
engine; load_pretrained is the one loader."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slkd.engine.tasks import SupervisedTask
from slkd.errors import CheckpointError, SlkdError
from slkd.models import (
    DECODER_LEVELS,
    ENCODER_LEVELS,
    FeatureTaps,
    RestorationModel,
    build_model,
    default_taps,
    list_models,
    load_pretrained,
    save_weights,
    size_multiple,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src" / "slkd"
TINY = ["restormer-tiny", "res-sl-tiny", "uformer-tiny", "ufor-sl-tiny", "drsformer-tiny", "drs-sl-tiny",
        "nafnet-tiny", "nafnet-sl-tiny"]


@pytest.mark.parametrize("name", list_models())
def test_every_preset_satisfies_the_protocol(name):
    with torch.device("meta"):
        model = build_model(name)
    assert isinstance(model, RestorationModel)
    assert size_multiple(model) >= 1 and model.inp_channels in (1, 3, 6)
    assert default_taps(model) == (ENCODER_LEVELS, DECODER_LEVELS)
    modules = dict(model.named_modules())
    for level, path in model.level_modules().items():
        assert level in ENCODER_LEVELS + DECODER_LEVELS and path in modules, (level, path)
    # every default level resolves to a module of the model
    for level in ENCODER_LEVELS + DECODER_LEVELS:
        assert level in modules or level in model.level_modules(), level


@pytest.mark.parametrize("name", TINY)
def test_the_teacher_b_check_reads_the_models_decoder_levels(name):
    """A clean → clean task reports the spread of each decoder level of any family (padding the
    image to its size multiple); a degraded → clean task reports nothing."""
    torch.manual_seed(0)
    model = build_model(name, global_residual=False).eval()
    item = {"gt": torch.rand(3, 21, 27), "lq": torch.rand(3, 21, 27)}
    check = SupervisedTask(model, clean_input=True).feature_check(model, item, torch.device("cpu"))
    assert check.event == "teacher_b_features"
    assert set(check.values) == {f"std_{n}" for n in DECODER_LEVELS}
    assert all(v > 0 for v in check.values.values())
    assert SupervisedTask(model).feature_check(model, item, torch.device("cpu")) is None


def test_a_flat_decoder_is_reported():
    class Flat(torch.nn.Module):
        size_multiple, inp_channels, global_residual = 1, 3, False
        decoder_taps = ("dec",)

        def __init__(self):
            super().__init__()
            self.dec = torch.nn.Conv2d(3, 2, 1)
            torch.nn.init.zeros_(self.dec.weight)
            torch.nn.init.zeros_(self.dec.bias)

        def forward(self, x):
            return x + self.dec(x).sum(1, keepdim=True)

    model = Flat()
    check = SupervisedTask(model, clean_input=True).feature_check(model, {"gt": torch.rand(3, 8, 8)},
                                                                  torch.device("cpu"))
    assert check.values == {"std_dec": 0.0} and "near-constant at dec" in check.warning


def test_the_trainer_and_the_distillers_name_no_architecture():
    """No import of an architecture, no test of a class name or of a module only some
    architectures have: what they need comes through the protocol."""
    forbidden = re.compile(r"import (Restormer|Uformer|NAFNet|DRSformer)\b|slkd\.models\.(restormer|uformer|nafnet|"
                           r"drsformer)|RESTORMER_|__name__ ==|hasattr\((self\.)?model|[\"']refinement[\"']")
    for path in [SRC / "engine" / "trainer.py", SRC / "engine" / "tasks.py", *(SRC / "distill").glob("*.py")]:
        found = forbidden.search(path.read_text(encoding="utf-8"))
        assert found is None, (path.name, found and found.group(0))


def test_slkd_distill_does_not_import_the_engine():
    code = "import sys, slkd.distill; print(sorted(m for m in sys.modules if m.startswith(('slkd.engine', 'slkd.cli'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_load_pretrained_reads_files_and_run_folders_and_adapts_official_variants(tmp_path):
    torch.manual_seed(0)
    source = build_model("restormer-tiny", LayerNorm_type="BiasFree")
    save_weights(source, tmp_path / "run" / "weights.pth")
    notes = []
    model = load_pretrained("restormer-tiny", tmp_path / "run", note=notes.append)  # a run folder
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    assert notes == ["note: weights.pth needs restormer-tiny with LayerNorm_type='BiasFree'; building it that way"]
    # an option the caller gives wins over the adaptation, and the file must then fit it
    with pytest.raises(CheckpointError, match="LayerNorm_type"):
        load_pretrained("restormer-tiny", tmp_path / "run" / "weights.pth", options={"LayerNorm_type": "WithBias"})
    with pytest.raises(SlkdError, match="unknown model 'restormer-huge'"):
        load_pretrained("restormer-huge", tmp_path / "run")
    with pytest.raises(SlkdError, match="no option.s. dimm"):
        load_pretrained("restormer-tiny", tmp_path / "run", options={"dimm": 3})
    with pytest.raises(CheckpointError, match="weights not found"):
        load_pretrained("restormer-tiny", tmp_path / "nowhere.pth")
    fresh = load_pretrained("res-sl-tiny")  # no weights: the preset as built
    assert not fresh.training and sum(p.numel() for p in fresh.parameters()) > 0


def test_feature_taps_use_the_models_own_level_map():
    model = build_model("nafnet-sl-tiny")
    with FeatureTaps(model, ["latent", "refinement"]) as taps:
        assert taps.paths == {"latent": "encoders.3", "refinement": "decoders.3"}
