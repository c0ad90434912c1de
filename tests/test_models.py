"""Restormer parameter table, presets, feature taps."""

import pytest
import torch

from slkd.errors import SlkdError
from slkd.models import (
    DECODER_LEVELS,
    ENCODER_LEVELS,
    FeatureTaps,
    Restormer,
    build_model,
    list_models,
)
from slkd.models.complexity import count_macs, count_parameters


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_default_restormer_matches_official_counts():
    model = Restormer()
    assert count_parameters(model) == 26_126_644
    assert len(model.state_dict()) == 494


# (key, shape) facts of the official Restormer release (docs/spec.md §4): GDFN hidden widths
# 127/255/510/1021, bias-free up/down-sampling convs, no channel reduction at level 1.
OFFICIAL_SHAPES = {
    "patch_embed.proj.weight": (48, 3, 3, 3),
    "encoder_level1.0.norm1.body.weight": (48,),
    "encoder_level1.0.attn.temperature": (1, 1, 1),
    "encoder_level1.0.attn.qkv.weight": (144, 48, 1, 1),
    "encoder_level1.0.attn.qkv_dwconv.weight": (144, 1, 3, 3),
    "encoder_level1.0.attn.project_out.weight": (48, 48, 1, 1),
    "encoder_level1.0.ffn.project_in.weight": (254, 48, 1, 1),
    "encoder_level1.0.ffn.dwconv.weight": (254, 1, 3, 3),
    "encoder_level1.0.ffn.project_out.weight": (48, 127, 1, 1),
    "encoder_level2.5.ffn.project_out.weight": (96, 255, 1, 1),
    "encoder_level3.5.ffn.project_in.weight": (1020, 192, 1, 1),
    "latent.7.attn.temperature": (8, 1, 1),
    "latent.7.ffn.project_out.weight": (384, 1021, 1, 1),
    "down1_2.body.0.weight": (24, 48, 3, 3),
    "down3_4.body.0.weight": (96, 192, 3, 3),
    "up4_3.body.0.weight": (768, 384, 3, 3),
    "reduce_chan_level3.weight": (192, 384, 1, 1),
    "reduce_chan_level2.weight": (96, 192, 1, 1),
    "up2_1.body.0.weight": (192, 96, 3, 3),
    "decoder_level1.3.attn.qkv.weight": (288, 96, 1, 1),
    "refinement.3.norm2.body.weight": (96,),
    "output.weight": (3, 96, 3, 3),
}


@pytest.mark.parametrize(
    "kwargs, n_params, n_tensors, present, absent",
    [
        ({}, 26_126_644, 494, ["encoder_level1.0.norm1.body.bias"], ["output.bias", "skip_conv.weight"]),
        (
            {"LayerNorm_type": "BiasFree"}, 26_111_668, 406, [],
            ["encoder_level1.0.norm1.body.bias", "output.bias"],
        ),
        (
            # BiasFree total minus 48·2·9 (patch_embed) and 2·96·9 (output)
            {"inp_channels": 1, "out_channels": 1, "LayerNorm_type": "BiasFree"}, 26_109_076, 406,
            [], ["encoder_level1.0.norm1.body.bias"],
        ),
        (
            # default plus 48·3·9 (three more input channels) and skip_conv 96·48
            {"inp_channels": 6, "dual_pixel_task": True}, 26_132_548, 495,
            ["skip_conv.weight"], ["skip_conv.bias"],
        ),
        # bias=True: 8C + 4·hidden per block over the 44 blocks (139,488), plus the two channel
        # reductions and the output conv (192 + 96 + 3); six bias tensors per block plus three
        ({"bias": True}, 26_126_644 + 139_488 + 291, 494 + 6 * 44 + 3,
         ["output.bias", "encoder_level1.0.attn.qkv.bias"], []),
    ],
    ids=["WithBias", "BiasFree", "grey", "dual-pixel", "bias"],
)
def test_key_shape_table(kwargs, n_params, n_tensors, present, absent):
    table = shapes(Restormer(**kwargs))
    assert sum(torch.Size(s).numel() for s in table.values()) == n_params
    assert len(table) == n_tensors
    in_c = kwargs.get("inp_channels", 3)
    out_c = kwargs.get("out_channels", 3)
    for key, shape in OFFICIAL_SHAPES.items():
        if "norm" in key or key.startswith(("patch_embed", "output")):
            continue
        assert table[key] == shape, key
    assert table["patch_embed.proj.weight"] == (48, in_c, 3, 3)
    assert table["output.weight"] == (out_c, 96, 3, 3)
    for key in present:
        assert key in table
    for key in absent:
        assert key not in table
    if kwargs.get("dual_pixel_task"):
        assert table["skip_conv.weight"] == (96, 48, 1, 1)


def test_official_shapes_default():
    table = shapes(Restormer())
    for key, shape in OFFICIAL_SHAPES.items():
        assert table[key] == shape, key


def test_global_residual_switch_keeps_names_and_changes_output():
    torch.manual_seed(0)
    with_res = Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])
    without = Restormer(
        dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2], global_residual=False
    )
    assert shapes(with_res) == shapes(without)
    without.load_state_dict(with_res.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.allclose(with_res(x) - without(x), x, atol=1e-6)


def test_forward_shapes_and_size_check():
    model = build_model("res-sl-tiny").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 24, 40)).shape == (2, 3, 24, 40)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 3, 20, 24))
    with pytest.raises(ValueError, match="N×3×H×W"):
        model(torch.rand(1, 1, 24, 24))


def test_residual_needs_matching_channels():
    with pytest.raises(ValueError, match="global residual"):
        Restormer(inp_channels=1, out_channels=3)
    Restormer(inp_channels=1, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1],
              global_residual=False)


@pytest.mark.parametrize("student, teacher", [("res-sl", "restormer"), ("res-sl-tiny", "restormer-tiny"),
                                              ("res-sl-tiny-deep", "restormer-tiny")])
def test_students_cut_params_and_macs_by_80_percent(student, teacher):
    import benchmarks.families  # noqa: F401  (res-sl-tiny-deep, the study's, registers from there)

    s, t = build_model(student), build_model(teacher)
    assert count_parameters(s) <= 0.2 * count_parameters(t)
    size = (1, 3, 64, 64)
    assert count_macs(s, size).total <= 0.2 * count_macs(t, size).total


def test_presets_build_and_overrides():
    names = list_models()
    for required in ("restormer", "res-sl", "restormer-tiny", "res-sl-tiny", "restormer-denoise"):
        assert required in names
    assert count_parameters(build_model("restormer-denoise")) == 26_111_668
    grey = build_model("res-sl-tiny", inp_channels=1, out_channels=1)
    assert grey.patch_embed.proj.weight.shape[1] == 1


def test_unknown_preset_lists_known_names():
    with pytest.raises(SlkdError, match="unknown model 'restormr'.*restormer-tiny"):
        build_model("restormr")


def test_unknown_override_is_named():
    with pytest.raises(SlkdError, match="no option.*widht"):
        build_model("restormer-tiny", widht=3)
    with pytest.raises(SlkdError, match="cannot build"):
        build_model("restormer-tiny", LayerNorm_type="Other")


def test_feature_taps_record_named_outputs():
    model = build_model("res-sl-tiny").eval()
    taps = FeatureTaps(model, ENCODER_LEVELS + DECODER_LEVELS)
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 48))
    dim = 8
    expected = {
        "encoder_level1": (dim, 32, 48), "encoder_level2": (2 * dim, 16, 24),
        "encoder_level3": (4 * dim, 8, 12), "latent": (8 * dim, 4, 6),
        "decoder_level3": (4 * dim, 8, 12), "decoder_level2": (2 * dim, 16, 24),
        "decoder_level1": (2 * dim, 32, 48), "refinement": (2 * dim, 32, 48),
    }
    for name, shape in expected.items():
        assert tuple(taps[name].shape) == (1, *shape)
    assert [t.shape for t in taps.ordered()] == [taps[n].shape for n in taps.names]
    taps.remove()
    assert not model.encoder_level1._forward_hooks


def test_feature_taps_values_equal_manual_forward_and_keep_gradients():
    model = build_model("res-sl-tiny")
    x = torch.rand(1, 3, 16, 16)
    with FeatureTaps(model, ["encoder_level1", "latent"]) as taps:
        model(x)
        manual = model.encoder_level1(model.patch_embed(x))
        assert torch.equal(taps["encoder_level1"], manual)
        taps["latent"].pow(2).mean().backward()
    assert model.patch_embed.proj.weight.grad is not None
    assert model.output.weight.grad is None  # the latent does not depend on the output conv
    assert not model.latent._forward_hooks


def test_feature_taps_wrong_name_fails_at_setup():
    model = build_model("res-sl-tiny")
    with pytest.raises(SlkdError, match="no module named 'encoder_levl1'.*did you mean encoder_level1"):
        FeatureTaps(model, ["encoder_levl1"])
    with pytest.raises(SlkdError, match="repeat"):
        FeatureTaps(model, ["latent", "latent"])
    taps = FeatureTaps(model, ["latent"])
    with pytest.raises(SlkdError, match="run the model first"):
        taps["latent"]
    with pytest.raises(SlkdError, match="not tapped"):
        taps["encoder_level1"]


TOY_FAMILY = """
import torch
from torch import nn

from slkd.models import ModelPreset, register_preset


class Toy(nn.Module):
    def __init__(self, width=4, bias=True):
        super().__init__()
        self.body = nn.Conv2d(3, 3, 1, bias=bias)

    def forward(self, x):
        return x + self.body(x)


def variant(kwargs, state):
    return {"bias": False} if "body.bias" not in state and kwargs["bias"] else {}


register_preset(ModelPreset("toy", Toy, {"width": 4, "bias": True}, "a toy family", variants=variant))
"""


def test_a_model_family_is_its_own_file_and_one_import(tmp_path, monkeypatch):
    """A family outside slkd: one file that registers its presets, imported once."""
    import importlib

    from slkd.models import registry

    monkeypatch.setattr(registry, "_PRESETS", dict(registry._PRESETS))  # gone after the test
    (tmp_path / "toy_family.py").write_text(TOY_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "toy_family", raising=False)
    importlib.import_module("toy_family")
    assert list_models()[-1] == "toy"
    model = build_model("toy", bias=False)
    assert model.body.bias is None
    assert registry.variant_overrides("toy", {"body.weight": torch.zeros(3, 3, 1, 1)}) == {"bias": False}
    assert registry.variant_overrides("toy", model.state_dict() | {"body.bias": torch.zeros(3)}) == {}
    with pytest.raises(SlkdError, match="'toy' is registered already"):
        registry.register_preset(registry.get_preset("toy"))
