"""Uformer, DRSformer and NAFNet: published parameter counts, official state-dict layout,
weights round trip, any input size, student presets, level taps and one SLKD step per pair,
also across architectures.

The official key layouts below are enumerated independently of slkd's modules, from a reading
of the releases (ZhendongWang6/Uformer ``model.py``, cschenxiang/DRSformer
``basicsr/models/archs/DRSformer_arch.py``, megvii-research/NAFNet
``basicsr/models/archs/NAFNet_arch.py``): each ``*_official_shapes`` function lists what the
release's ``state_dict()`` holds for a configuration, key by key.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from slkd.distill import build_distiller
from slkd.engine import restore
from slkd.errors import SlkdError
from slkd.models import (
    LEVEL_NAMES,
    DRSformer,
    FeatureTaps,
    NAFNet,
    Uformer,
    build_model,
    get_preset,
    level_modules,
    load_weights,
    save_weights,
)
from slkd.models.checkpoint import extract_state_dict, load_state
from slkd.models.complexity import count_macs, count_parameters
from slkd.models.nafnet import nafblock_parameters
from slkd.models.registry import variant_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

UFORMER_B = dict(embed_dim=32, depths=[1, 2, 8, 8, 2, 8, 8, 2, 1], modulator=True)
NAFNET_SIDD_32 = dict(width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2])
NAFNET_GOPRO_64 = dict(width=64, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1])


def on_meta(cls, **kwargs):
    """Shapes only: large models build instantly and take no memory."""
    with torch.device("meta"):
        return cls(**kwargs)


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def layout_hash(table: dict[str, tuple[int, ...]]) -> str:
    text = "\n".join(f"{k}:{','.join(map(str, v))}" for k, v in sorted(table.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ official layouts


def uformer_official_shapes(embed_dim=32, depths=(2,) * 9, heads=(1, 2, 4, 8, 16, 16, 8, 4, 2),
                            win=8, img_size=256, mlp_ratio=4.0, modulator=False, chans=3):
    """The release's Uformer(...).state_dict() (linear projection, LeFF)."""
    e, out = embed_dim, {}
    out["input_proj.proj.0.weight"], out["input_proj.proj.0.bias"] = (e, chans, 3, 3), (e,)
    out["output_proj.proj.0.weight"], out["output_proj.proj.0.bias"] = (chans, 2 * e, 3, 3), (chans,)

    def layer(name, dim, res, depth, nh, mod):
        w = min(win, res)  # windows shrink to stages no larger than the window
        hid = int(dim * mlp_ratio)
        for i in range(depth):
            p = f"{name}.blocks.{i}."
            if mod:
                out[p + "modulator.weight"] = (win * win, dim)
            out[p + "norm1.weight"] = out[p + "norm1.bias"] = (dim,)
            out[p + "attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, nh)
            out[p + "attn.relative_position_index"] = (w * w, w * w)
            out[p + "attn.qkv.to_q.weight"], out[p + "attn.qkv.to_q.bias"] = (dim, dim), (dim,)
            out[p + "attn.qkv.to_kv.weight"], out[p + "attn.qkv.to_kv.bias"] = (2 * dim, dim), (2 * dim,)
            out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = (dim, dim), (dim,)
            out[p + "norm2.weight"] = out[p + "norm2.bias"] = (dim,)
            out[p + "mlp.linear1.0.weight"], out[p + "mlp.linear1.0.bias"] = (hid, dim), (hid,)
            out[p + "mlp.dwconv.0.weight"], out[p + "mlp.dwconv.0.bias"] = (hid, 1, 3, 3), (hid,)
            out[p + "mlp.linear2.0.weight"], out[p + "mlp.linear2.0.bias"] = (dim, hid), (dim,)

    for i in range(4):
        c = e * 2 ** i
        layer(f"encoderlayer_{i}", c, img_size // 2 ** i, depths[i], heads[i], False)
        out[f"dowsample_{i}.conv.0.weight"], out[f"dowsample_{i}.conv.0.bias"] = (2 * c, c, 4, 4), (2 * c,)
    layer("conv", 16 * e, img_size // 16, depths[4], heads[4], False)
    for j, (cin, cout) in enumerate([(16 * e, 8 * e), (16 * e, 4 * e), (8 * e, 2 * e), (4 * e, e)]):
        out[f"upsample_{j}.deconv.0.weight"], out[f"upsample_{j}.deconv.0.bias"] = (cin, cout, 2, 2), (cout,)
        layer(f"decoderlayer_{j}", 2 * cout, img_size // 2 ** (3 - j), depths[5 + j], heads[5 + j], modulator)
    return out


def _mefc_shapes(out, name, c, steps=4, ops=8):
    p = f"{name}.layers."
    out[p + "0.ca_fc.0.weight"], out[p + "0.ca_fc.0.bias"] = (2 * steps * ops, c), (2 * steps * ops,)
    out[p + "0.ca_fc.2.weight"], out[p + "0.ca_fc.2.bias"] = (steps * ops, 2 * steps * ops), (steps * ops,)
    out[p + "1.preprocess.op.0.weight"] = (c, c, 1, 1)
    for s in range(steps):
        q = f"{p}1._ops.{s}."
        for o, k in enumerate((1, 3, 5, 7)):  # separable convs: dw, 1×1, ReLU, dw, 1×1
            for j, shape in ((0, (c, 1, k, k)), (1, (c, c, 1, 1)), (3, (c, 1, k, k)), (4, (c, c, 1, 1))):
                out[f"{q}_ops.{o}.op.{j}.weight"] = shape
        for o, k in ((4, 3), (5, 5), (6, 7)):  # dilated convs: dw, 1×1; op 7 is an average pool
            out[f"{q}_ops.{o}.op.0.weight"], out[f"{q}_ops.{o}.op.1.weight"] = (c, 1, k, k), (c, c, 1, 1)
        out[f"{q}_out.0.weight"] = (c, ops * c, 1, 1)


def drsformer_official_shapes(dim=48, blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), ffn=2.66, mefc=True):
    """The release's DRSformer(...).state_dict() (bias False, WithBias norms)."""
    out = {"patch_embed.proj.weight": (dim, 3, 3, 3)}

    def stage(name, n, d, nh):
        h = int(d * ffn)
        for i in range(n):
            p = f"{name}.{i}."
            for norm in ("norm1", "norm2"):
                out[f"{p}{norm}.body.weight"] = out[f"{p}{norm}.body.bias"] = (d,)
            out[p + "attn.temperature"] = (nh, 1, 1)
            out[p + "attn.qkv.weight"], out[p + "attn.qkv_dwconv.weight"] = (3 * d, d, 1, 1), (3 * d, 1, 3, 3)
            out[p + "attn.project_out.weight"] = (d, d, 1, 1)
            for a in range(1, 5):
                out[f"{p}attn.attn{a}"] = (1,)
            out[p + "ffn.project_in.weight"] = (2 * h, d, 1, 1)
            out[p + "ffn.dwconv3x3.weight"], out[p + "ffn.dwconv5x5.weight"] = (2 * h, 1, 3, 3), (2 * h, 1, 5, 5)
            out[p + "ffn.dwconv3x3_1.weight"], out[p + "ffn.dwconv5x5_1.weight"] = (h, 2, 3, 3), (h, 2, 5, 5)
            out[p + "ffn.project_out.weight"] = (d, 2 * h, 1, 1)

    if mefc:
        _mefc_shapes(out, "encoder_level0", dim)
    stage("encoder_level1", blocks[0], dim, heads[0])
    out["down1_2.body.0.weight"] = (dim // 2, dim, 3, 3)
    stage("encoder_level2", blocks[1], 2 * dim, heads[1])
    out["down2_3.body.0.weight"] = (dim, 2 * dim, 3, 3)
    stage("encoder_level3", blocks[2], 4 * dim, heads[2])
    out["down3_4.body.0.weight"] = (2 * dim, 4 * dim, 3, 3)
    stage("latent", blocks[3], 8 * dim, heads[3])
    out["up4_3.body.0.weight"], out["reduce_chan_level3.weight"] = (16 * dim, 8 * dim, 3, 3), (4 * dim, 8 * dim, 1, 1)
    stage("decoder_level3", blocks[2], 4 * dim, heads[2])
    out["up3_2.body.0.weight"], out["reduce_chan_level2.weight"] = (8 * dim, 4 * dim, 3, 3), (2 * dim, 4 * dim, 1, 1)
    stage("decoder_level2", blocks[1], 2 * dim, heads[1])
    out["up2_1.body.0.weight"] = (4 * dim, 2 * dim, 3, 3)
    stage("decoder_level1", blocks[0], 2 * dim, heads[0])
    if mefc:
        _mefc_shapes(out, "refinement", 2 * dim)
    out["output.weight"] = (3, 2 * dim, 3, 3)
    return out


def nafnet_official_shapes(width, enc_blk_nums, middle_blk_num, dec_blk_nums, chans=3):
    """The release's NAFNet(...).state_dict()."""
    out = {"intro.weight": (width, chans, 3, 3), "intro.bias": (width,),
           "ending.weight": (chans, width, 3, 3), "ending.bias": (chans,)}

    def blocks(name, n, c):
        for i in range(n):
            p = f"{name}.{i}."
            for conv, shape in (("conv1", (2 * c, c, 1, 1)), ("conv2", (2 * c, 1, 3, 3)), ("conv3", (c, c, 1, 1)),
                                ("sca.1", (c, c, 1, 1)), ("conv4", (2 * c, c, 1, 1)), ("conv5", (c, c, 1, 1))):
                out[f"{p}{conv}.weight"], out[f"{p}{conv}.bias"] = shape, (shape[0],)
            for norm in ("norm1", "norm2"):
                out[f"{p}{norm}.weight"] = out[f"{p}{norm}.bias"] = (c,)
            out[p + "beta"] = out[p + "gamma"] = (1, c, 1, 1)

    c = width
    for i, n in enumerate(enc_blk_nums):
        blocks(f"encoders.{i}", n, c)
        out[f"downs.{i}.weight"], out[f"downs.{i}.bias"] = (2 * c, c, 2, 2), (2 * c,)
        c *= 2
    blocks("middle_blks", middle_blk_num, c)
    for i, n in enumerate(dec_blk_nums):
        out[f"ups.{i}.0.weight"] = (2 * c, c, 1, 1)
        c //= 2
        blocks(f"decoders.{i}", n, c)
    return out


def n_elements(table) -> int:
    return sum(torch.Size(s).numel() for s in table.values())


# ---------------------------------------------------------------- published parameter counts


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # the release's Uformer_T / Uformer_S / Uformer_B (get_arch in utils/model_utils.py)
        (dict(embed_dim=16, modulator=True), 5_291_853),
        (dict(embed_dim=32, modulator=True), 20_751_197),
        (UFORMER_B, 50_880_946),  # paper: 50.88 M
        # without the modulator (5.23 M and 20.63 M)
        (dict(embed_dim=16), 5_230_413),
        (dict(embed_dim=32), 20_628_317),
    ],
    ids=["T", "S", "B", "T-no-modulator", "S-no-modulator"],
)
def test_uformer_published_counts(kwargs, expected):
    model = on_meta(Uformer, **kwargs)
    assert count_parameters(model) == expected
    official = uformer_official_shapes(**kwargs)
    # the relative-position index is a buffer: in the state dict, not a parameter
    index = {k: s for k, s in official.items() if k.endswith("relative_position_index")}
    assert n_elements(official) - n_elements(index) == expected
    assert round(count_parameters(on_meta(Uformer, **UFORMER_B)) / 1e6, 2) == 50.88


@pytest.mark.parametrize(
    "kwargs, expected",
    [(NAFNET_SIDD_32, 29_159_715), ({**NAFNET_SIDD_32, "width": 64}, 115_982_915),
     ({**NAFNET_GOPRO_64, "width": 32}, 17_111_907), (NAFNET_GOPRO_64, 67_888_835)],
    ids=["SIDD-32", "SIDD-64", "GoPro-32", "GoPro-64"],
)
def test_nafnet_published_counts(kwargs, expected):
    assert count_parameters(on_meta(NAFNet, **kwargs)) == expected
    # closed form: blocks (7c² + 33c), intro/ending, down (4·2c² + 2c) and up (2c·c) convs
    w, total, c = kwargs["width"], 0, kwargs["width"]
    total += 3 * w * 9 + w + w * 3 * 9 + 3
    for n in kwargs["enc_blk_nums"]:
        total += n * nafblock_parameters(c) + 8 * c * c + 2 * c
        c *= 2
    total += kwargs["middle_blk_num"] * nafblock_parameters(c)
    for n in kwargs["dec_blk_nums"]:
        total += 2 * c * c
        c //= 2
        total += n * nafblock_parameters(c)
    assert total == expected
    assert n_elements(nafnet_official_shapes(**kwargs)) == expected


def test_drsformer_published_counts():
    assert count_parameters(on_meta(DRSformer)) == 33_655_424
    assert count_parameters(on_meta(DRSformer, mefc=False)) == 32_610_304
    assert n_elements(drsformer_official_shapes()) == 33_655_424


# -------------------------------------------------------------------- official key layout

#: sha256 (16 hex) of the sorted "key:shape" lines of the published configurations, and a
#: readable sample of each layout; the full layouts are the *_official_shapes functions above
LAYOUTS = {
    "uformer-b": ("18b2cd4990c649d5", {
        "input_proj.proj.0.weight": (32, 3, 3, 3),
        "encoderlayer_0.blocks.0.attn.relative_position_bias_table": (225, 1),
        "encoderlayer_0.blocks.0.attn.relative_position_index": (64, 64),
        "encoderlayer_2.blocks.7.mlp.dwconv.0.weight": (512, 1, 3, 3),
        "conv.blocks.1.attn.qkv.to_kv.weight": (1024, 512),
        "upsample_0.deconv.0.weight": (512, 256, 2, 2),
        "decoderlayer_0.blocks.7.modulator.weight": (64, 512),
        "decoderlayer_3.blocks.0.mlp.linear2.0.weight": (64, 256),
        "output_proj.proj.0.weight": (3, 64, 3, 3),
    }),
    "drsformer": ("0b341fc6d7f86f4b", {
        "encoder_level0.layers.0.ca_fc.0.weight": (64, 48),
        "encoder_level0.layers.1._ops.3._ops.3.op.4.weight": (48, 48, 1, 1),
        "encoder_level0.layers.1._ops.0._out.0.weight": (48, 384, 1, 1),
        "encoder_level1.0.attn.attn4": (1,),
        "encoder_level1.0.ffn.dwconv5x5_1.weight": (127, 2, 5, 5),
        "latent.7.ffn.project_out.weight": (384, 2042, 1, 1),
        "refinement.layers.1.preprocess.op.0.weight": (96, 96, 1, 1),
        "output.weight": (3, 96, 3, 3),
    }),
    "nafnet-sidd-32": ("6f8c6da4303a6c33", {
        "intro.weight": (32, 3, 3, 3),
        "encoders.0.1.sca.1.weight": (32, 32, 1, 1),
        "encoders.3.7.beta": (1, 256, 1, 1),
        "downs.3.weight": (512, 256, 2, 2),
        "middle_blks.11.conv2.weight": (1024, 1, 3, 3),
        "ups.0.0.weight": (1024, 512, 1, 1),
        "decoders.3.1.norm2.bias": (32,),
        "ending.bias": (3,),
    }),
}

OFFICIAL = {
    "uformer-b": lambda: uformer_official_shapes(**UFORMER_B),
    "drsformer": drsformer_official_shapes,
    "nafnet-sidd-32": lambda: nafnet_official_shapes(**NAFNET_SIDD_32),
}


@pytest.mark.parametrize("preset", list(LAYOUTS))
def test_state_dict_layout_is_the_official_one(preset):
    with torch.device("meta"):
        table = shapes(build_model(preset))
    official = OFFICIAL[preset]()
    assert sorted(table) == sorted(official)
    assert table == official
    digest, sample = LAYOUTS[preset]
    for key, shape in sample.items():
        assert table[key] == shape, key
    assert layout_hash(table) == digest


@pytest.mark.parametrize(
    "cls, kwargs, official",
    [
        (Uformer, dict(embed_dim=8, img_size=32, win_size=4, modulator=True),
         lambda: uformer_official_shapes(embed_dim=8, img_size=32, win=4, modulator=True)),
        # img_size 64 with 8×8 windows: the bottleneck (4×4) gets a 4×4 window (7² bias rows)
        (Uformer, dict(embed_dim=8, img_size=64, depths=[1] * 9),
         lambda: uformer_official_shapes(embed_dim=8, img_size=64, depths=[1] * 9)),
        (DRSformer, dict(dim=16, num_blocks=[1, 1, 1, 2], mefc=False),
         lambda: drsformer_official_shapes(dim=16, blocks=(1, 1, 1, 2), mefc=False)),
        (NAFNet, dict(width=8, enc_blk_nums=[1, 2], middle_blk_num=1, dec_blk_nums=[2, 1]),
         lambda: nafnet_official_shapes(8, [1, 2], 1, [2, 1])),
    ],
    ids=["uformer-modulator", "uformer-small-img", "drsformer-no-mefc", "nafnet-2-levels"],
)
def test_synthetic_official_state_dict_loads_strictly(cls, kwargs, official, tmp_path):
    """A file laid out as the release saves it loads with strict=True and sets every tensor."""
    torch.manual_seed(0)
    table = official()
    ours = cls(**kwargs).state_dict()
    state = {}
    for key, shape in table.items():
        if key.endswith("relative_position_index"):  # fixed content, see the Swin-definition test
            state[key] = ours[key].clone()
        else:
            state[key] = torch.randn(shape)
    # Uformer's release saves {'state_dict': ..., 'epoch': ...} from DataParallel ('module.')
    container = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    path = tmp_path / "official.pth"
    torch.save(container, path)
    model = cls(**kwargs)
    report = load_weights(model, path, strict=True)
    assert report.source_key == "state_dict" and not report.missing and not report.unexpected
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_relative_position_index_matches_swin_definition():
    model = Uformer(embed_dim=8, img_size=32, win_size=4, depths=[1] * 9)
    index = model.encoderlayer_0.blocks[0].attn.relative_position_index
    win = 4
    coords = [(i, j) for i in range(win) for j in range(win)]
    expected = torch.tensor([[(a[0] - b[0] + win - 1) * (2 * win - 1) + (a[1] - b[1] + win - 1)
                              for b in coords] for a in coords])
    assert index.dtype == torch.int64 and torch.equal(index, expected)


# ------------------------------------------------------------------------ round trip, sizes

TINY = ["uformer-tiny", "ufor-sl-tiny", "drsformer-tiny", "drs-sl-tiny", "nafnet-tiny", "nafnet-sl-tiny"]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_round_trip(name, suffix, tmp_path):
    torch.manual_seed(1)
    model = build_model(name).eval()
    with torch.no_grad():  # non-trivial values for NAFNet's zero-initialised beta/gamma
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_weights(model, tmp_path / f"w{suffix}")
    if suffix == ".pth":
        raw = torch.load(path, weights_only=True)
        assert set(raw) == {"params"} and set(raw["params"]) == set(model.state_dict())
    fresh = build_model(name).eval()
    load_weights(fresh, path, strict=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("name", TINY)
def test_restore_handles_odd_sizes(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.rand(2, 3, 30, 45)
    out = restore(model, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # tiled, as slkd restore --tile does
    assert restore(model, x, tile=24, overlap=8).shape == x.shape


@pytest.mark.parametrize("name", ["uformer-tiny", "nafnet-sl-tiny"])
def test_uformer_and_nafnet_pad_themselves(name):
    """Both accept any size (NAFNet pads with zeros as released, Uformer replicates)."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        for size in [(1, 3, 30, 45), (1, 3, 7, 9), (2, 3, 48, 32)]:
            assert model(torch.rand(size)).shape == size
    with pytest.raises(ValueError, match="N×3×H×W"):
        model(torch.rand(1, 1, 32, 32))


def test_shift_mask_matches_the_release_construction():
    """The vectorised mask equals the release's: label the nine slices
    [0, -win), [-win, -shift), [-shift, end) of each axis, partition into windows, mask
    (-100) every pair of tokens with different labels."""
    from slkd.models.uformer import _partition, _shift_mask

    h, w, win, shift = 16, 24, 8, 4
    labels = torch.zeros(1, h, w, 1)
    count = 0
    for hs in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
        for ws in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
            labels[:, hs, ws, :] = count
            count += 1
    windows = _partition(labels, win).squeeze(-1)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    expected = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
    assert torch.equal(_shift_mask(h, w, win, shift, torch.zeros(())), expected)


def test_drsformer_checks_size_like_restormer():
    model = build_model("drs-sl-tiny").eval()
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 3, 20, 24))


def test_shift_and_window_rules_follow_img_size():
    """The release shrinks the window of a stage no larger than it and turns its shift off."""
    gopro = on_meta(Uformer, **UFORMER_B)  # img_size 256: bottleneck 16×16 > 8
    sidd = on_meta(Uformer, **UFORMER_B, img_size=128)  # bottleneck 8×8: no shift
    assert [b.shift for b in gopro.conv.blocks] == [0, 4]
    assert [b.shift for b in sidd.conv.blocks] == [0, 0]
    assert [b.shift for b in sidd.decoderlayer_0.blocks] == [0, 4] * 4
    assert shapes(gopro) == shapes(sidd)
    tiny = build_model("uformer-tiny")  # img_size 32, window 4: bottleneck 2×2 → window 2
    assert tiny.conv.win == 2 and tiny.encoderlayer_3.win == 4
    with pytest.raises(ValueError, match="modulator"):
        Uformer(embed_dim=8, img_size=32, win_size=8, modulator=True)
    assert get_preset("uformer-b-sidd").kwargs["img_size"] == 128


def test_global_residual_switch_keeps_names():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    for name in ("ufor-sl-tiny", "drs-sl-tiny", "nafnet-sl-tiny"):
        with_res = build_model(name).eval()
        without = build_model(name, global_residual=False).eval()
        assert with_res.global_residual and not without.global_residual
        without.load_state_dict(with_res.state_dict(), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(with_res(x) - without(x), x, atol=1e-5, rtol=0)


# -------------------------------------------------------------------------- student presets

PAIRS = [("uformer-b", "ufor-sl"), ("drsformer", "drs-sl"), ("nafnet-sidd-32", "nafnet-sl"),
         ("uformer-tiny", "ufor-sl-tiny"), ("drsformer-tiny", "drs-sl-tiny"),
         ("nafnet-tiny", "nafnet-sl-tiny")]


@pytest.mark.parametrize("teacher, student", PAIRS)
def test_students_cut_params_and_macs_by_80_percent(teacher, student):
    assert get_preset(student).teacher == teacher
    with torch.device("meta"):
        t, s = build_model(teacher), build_model(student)
    assert count_parameters(s) <= 0.2 * count_parameters(t)
    size = (1, 3, 128, 128)  # a multiple of Uformer's 16·8: no window padding inflates MACs
    assert count_macs(s, size, device="meta").total <= 0.2 * count_macs(t, size, device="meta").total


def test_nafnet_sl_is_also_a_compressed_restormer_student():
    with torch.device("meta"):
        t, s = build_model("restormer"), build_model("nafnet-sl")
    assert count_parameters(s) <= 0.2 * count_parameters(t)
    size = (1, 3, 64, 64)
    assert count_macs(s, size, device="meta").total <= 0.2 * count_macs(t, size, device="meta").total


def test_variant_overrides_recognise_official_files():
    drs_plain = {k: torch.empty(0) for k in drsformer_official_shapes(mefc=False)}
    assert variant_overrides("drsformer", drs_plain) == {"mefc": False}
    assert variant_overrides("drsformer-no-mefc", drs_plain) == {}
    uformer_plain = {k: torch.empty(0) for k in uformer_official_shapes(embed_dim=16)}
    assert variant_overrides("uformer-t", uformer_plain) == {"modulator": False}
    assert variant_overrides("nafnet-sl", {"intro.weight": torch.empty(0)}) == {}
    state, _ = extract_state_dict({"params": build_model("drs-sl-tiny", mefc=False).state_dict()})
    model = build_model("drs-sl-tiny", **variant_overrides("drs-sl-tiny", state))
    load_state(model, state, "<memory>", strict=True)


# ------------------------------------------------------------------------------ level taps

EXPECTED_PATHS = {
    "uformer-tiny": ["encoderlayer_0", "encoderlayer_1", "encoderlayer_2", "encoderlayer_3",
                     "decoderlayer_1", "decoderlayer_2", "decoderlayer_3", "decoderlayer_3"],
    "nafnet-tiny": ["encoders.0", "encoders.1", "encoders.2", "encoders.3",
                    "decoders.1", "decoders.2", "decoders.3", "decoders.3"],
    "drsformer-tiny": list(LEVEL_NAMES),
    "restormer-tiny": list(LEVEL_NAMES),
}


@pytest.mark.parametrize("name", list(EXPECTED_PATHS))
def test_level_taps_resolve_to_stages_of_the_same_resolution(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    with FeatureTaps(model, LEVEL_NAMES) as taps:
        assert [taps.paths[n] for n in LEVEL_NAMES] == EXPECTED_PATHS[name]
        with torch.no_grad():
            model(torch.rand(1, 3, 32, 48))
        sides = {n: tuple(taps[n].shape[-2:]) for n in LEVEL_NAMES}
    full, half, quarter, eighth = (32, 48), (16, 24), (8, 12), (4, 6)
    assert sides == {"encoder_level1": full, "encoder_level2": half, "encoder_level3": quarter,
                     "latent": eighth, "decoder_level3": quarter, "decoder_level2": half,
                     "decoder_level1": full, "refinement": full}


def test_level_names_edge_cases():
    no_mefc = build_model("drs-sl-tiny", mefc=False)
    assert level_modules(no_mefc) == {"refinement": "decoder_level1"}
    assert level_modules(build_model("res-sl-tiny")) == {}
    three = NAFNet(width=8, enc_blk_nums=[1, 1, 1], middle_blk_num=1, dec_blk_nums=[1, 1, 1])
    assert level_modules(three)["latent"] == "middle_blks"
    # module names still work, and a wrong name lists the level names
    model = build_model("nafnet-sl-tiny")
    assert FeatureTaps(model, ["middle_blks"]).paths == {"middle_blks": "middle_blks"}
    with pytest.raises(SlkdError, match="no module named 'latnet'.*did you mean latent.*level names"):
        FeatureTaps(model, ["latnet"])


# ------------------------------------------------------------------- one SLKD step per pair


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    lq = (gt + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    return {"lq": lq, "gt": gt}


@pytest.mark.parametrize(
    "teacher, student",
    [("uformer-tiny", "ufor-sl-tiny"), ("drsformer-tiny", "drs-sl-tiny"),
     ("nafnet-tiny", "nafnet-sl-tiny"), ("restormer-tiny", "nafnet-sl-tiny"),
     ("uformer-tiny", "res-sl-tiny")],
)
def test_slkd_step(teacher, student):
    torch.manual_seed(0)
    s = build_model(student)
    a, b = build_model(teacher), build_model(teacher, global_residual=False)
    d = build_distiller("slkd", s, a, b)
    loss, terms = d(_batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(terms) == {"loss_pix", "loss_kl", "loss_nc", "loss_et"}
    assert all(torch.isfinite(v) for v in terms.values())
    loss.backward()
    assert not [n for n, p in d.named_parameters() if p.grad is None]
    assert any(p.grad.abs().sum() > 0 for p in d.adapters.parameters())
    assert all(p.grad is None for t in (a, b) for p in t.parameters())
    d.close()


def test_teacher_b_with_residual_is_refused_for_new_architectures():
    for name in ("uformer-tiny", "nafnet-tiny", "drsformer-tiny"):
        with pytest.raises(SlkdError, match="global input-to-output residual"):
            build_distiller("slkd", build_model("nafnet-sl-tiny"), build_model(name), build_model(name))


def test_profile_command_knows_the_new_presets(cli):
    r = cli("profile", "--compare", "nafnet-tiny", "nafnet-sl-tiny", "--no-latency", "--size", "32", "32")
    assert r.code == 0, r.err
    assert "nafnet-sl-tiny vs nafnet-tiny" in r.out and "fewer MACs" in r.out


def test_distill_command_across_architectures(cli, tmp_path, make_distill_folder):
    """`slkd distill` end to end: Uformer teachers from weight files, a NAFNet student,
    validation on a 40×40 image (not a multiple of 16: both pad themselves)."""
    import yaml

    make_distill_folder(tmp_path, 1, train=2, size=40, teacher="uformer-tiny")
    noise = {"name": "gaussian_noise", "params": {"sigma": 25}}
    config = {
        "name": "cross", "role": "distill", "seed": 1, "output_dir": str(tmp_path / "runs"),
        "model": {"name": "nafnet-sl-tiny"},
        "teachers": {"a": {"name": "uformer-tiny", "weights": str(tmp_path / "teacher_a.pth")},
                     "b": {"name": "uformer-tiny", "weights": str(tmp_path / "teacher_b.pth"),
                           "options": {"global_residual": False}}},
        "distill": {"method": "slkd"},
        "data": {"root": str(tmp_path / "data"), "batch_size": 2,
                 "train": {"type": "degraded", "roots": ["train"], "patch_size": 16, "degradation": noise},
                 "val": [{"name": "val", "type": "degraded", "roots": ["val"], "degradation": noise}]},
        "train": {"iters": 2, "log_every": 1, "val_every": 2, "ckpt_every": 2},
    }
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(config))
    r = cli("distill", "--config", path, "--device", "cpu")
    assert r.code == 0, r.err
    weights = tmp_path / "runs" / "cross" / "weights.pth"
    student = build_model("nafnet-sl-tiny")
    load_weights(student, weights, strict=True)  # the student alone, no adapters
