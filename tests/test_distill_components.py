"""Unit tests of the SLKD building blocks (slkd.distill): SCM, Φ_N, Φ_E and the losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slkd.distill import (
    BRISQUE_STATS,
    PIQE_CUES,
    BrisqueExtractor,
    IdentityExtractor,
    PiqeExtractor,
    ScaleConversion,
    SLKDConfig,
    aggd_stats,
    block_cues,
    et_loss,
    gaussian_window,
    ggd_stats,
    image_l1,
    kl_loss,
    level_indices_from_sizes,
    mscn,
    nc_loss,
    pairwise_products,
    piqe_extractors,
    teacher_constant,
    total_loss,
)
from slkd.errors import SlkdError
from slkd.losses import pixel_loss


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inference(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` created under inference_mode, as a teacher's taps are."""
    with torch.inference_mode():
        out = t.clone()
    assert out.is_inference()
    return out


# --------------------------------------------------------------------------------- MSCN


def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window(7, 7 / 6)
    assert g.shape == (7,)
    assert g.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(g, g.flip(0))
    assert g.argmax().item() == 3


def test_mscn_of_constant_map_is_zero():
    x = torch.full((2, 3, 10, 12), 3.7)
    n = mscn(x)
    assert n.shape == x.shape
    assert n.abs().max().item() < 1e-6


def test_mscn_invariant_to_offset_and_nearly_to_scale():
    x = torch.randn(2, 3, 16, 16, generator=_gen(1))
    n = mscn(x)
    assert torch.allclose(mscn(x + 5.0), n, atol=1e-4)
    # exact scale invariance without the stabilising constant c
    assert torch.allclose(mscn(3.0 * x, c=0.0), mscn(x, c=0.0), atol=1e-3)
    # approximately with c = 1e-2: (x−μ)/(σ + c/a) vs (x−μ)/(σ + c)
    rel = (mscn(3.0 * x) - n).norm() / n.norm()
    assert 0 < rel.item() < 2e-2


def test_mscn_on_maps_smaller_than_the_window():
    x = torch.randn(1, 2, 2, 3, generator=_gen(2))
    n = mscn(x)  # reflect needs > 3 pixels: falls back to replicate padding
    assert n.shape == x.shape and torch.isfinite(n).all()


# ------------------------------------------------------------------- pairwise products


def test_pairwise_products_hand_values():
    n = torch.arange(9.0).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    p = pairwise_products(n)
    assert p.shape == (1, 1, 4, 2, 2)
    h, v, d1, d2 = p[0, 0]
    assert h.tolist() == [[0, 2], [12, 20]]  # n[i,j]·n[i,j+1]
    assert v.tolist() == [[0, 4], [18, 28]]  # n[i,j]·n[i+1,j]
    assert d1.tolist() == [[0, 5], [21, 32]]  # n[i,j]·n[i+1,j+1]
    assert d2.tolist() == [[3, 8], [24, 35]]  # n[i,j+1]·n[i+1,j]


# ---------------------------------------------------------------------- GGD / AGGD


def test_ggd_shape_proxy_gaussian_and_laplacian():
    g = torch.randn(1, 1, 512, 512, generator=_gen(3))
    rho, var = ggd_stats(g)[0, 0].tolist()
    assert rho == pytest.approx(math.pi / 2, rel=0.02)
    assert var == pytest.approx(1.0, rel=0.02)
    u = torch.rand(1, 1, 512, 512, generator=_gen(4)) - 0.5  # inverse-CDF Laplace(0, b=1)
    lap = -torch.sign(u) * torch.log1p(-2 * u.abs())
    rho_l, var_l = ggd_stats(lap)[0, 0].tolist()
    assert rho_l == pytest.approx(2.0, rel=0.02)
    assert var_l == pytest.approx(2.0, rel=0.03)  # Var of Laplace(b=1) is 2b²


def test_aggd_left_right_variances():
    # AGGD with α = 2 (Gaussian halves), σ_l = 1, σ_r = 3: the density is continuous at 0, so
    # each side carries mass σ_side/(σ_l + σ_r)
    z = torch.randn(1, 1, 512, 512, generator=_gen(5)).abs()
    left = torch.rand(1, 1, 512, 512, generator=_gen(55)) < 0.25
    p = torch.where(left, -z, 3.0 * z)
    shape, mean, lvar, rvar = aggd_stats(p)[0, 0].tolist()
    assert lvar == pytest.approx(1.0, rel=0.03)
    assert rvar == pytest.approx(9.0, rel=0.03)
    # η = (β_r − β_l)Γ(2/α)/Γ(1/α) with β = σ√2: 2√2/√π
    assert mean == pytest.approx(2 * math.sqrt(2 / math.pi), rel=0.03)
    assert shape == pytest.approx(math.pi / 2, rel=0.03)  # asymmetry-corrected proxy
    # symmetric sample: AGGD shape proxy ≈ GGD ρ
    g = torch.randn(1, 1, 512, 512, generator=_gen(56))
    assert aggd_stats(g)[0, 0, 0].item() == pytest.approx(ggd_stats(g)[0, 0, 0].item(), rel=0.01)


def test_stats_are_differentiable_and_finite_on_flat_maps():
    x = torch.zeros(1, 2, 8, 8, requires_grad=True)
    feats = BrisqueExtractor(scales=2)(x)
    loss = sum(m.abs().mean() for m in feats.maps) + feats.stats.sum()
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_brisque_extractor_shapes():
    x = torch.randn(2, 3, 16, 12, generator=_gen(6))
    one = BrisqueExtractor()(x)
    assert len(one.maps) == 5 and one.stats.shape == (2, 3, 18) == (2, 3, len(BRISQUE_STATS))
    assert one.maps[0].shape == (2, 3, 16, 12)
    assert all(m.shape == (2, 3, 15, 11) for m in one.maps[1:])
    two = BrisqueExtractor(scales=2)(x)
    assert len(two.maps) == 10 and two.stats.shape == (2, 3, 36)
    assert two.maps[5].shape == (2, 3, 8, 6)
    assert torch.equal(two.stats[..., :18], one.stats)
    with pytest.raises(ValueError):
        BrisqueExtractor(scales=3)


# ---------------------------------------------------------------------------- PIQE


def _pattern() -> torch.Tensor:
    """8×8 map of four 4×4 blocks: checkerboard ±1, constant 5, ramp 0..15, one spike 4."""
    x = torch.zeros(1, 1, 8, 8)
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    x[0, 0, :4, :4] = torch.where((i + j) % 2 == 0, 1.0, -1.0)
    x[0, 0, :4, 4:] = 5.0
    x[0, 0, 4:, :4] = torch.arange(16.0).reshape(4, 4)
    x[0, 0, 5, 6] = 4.0
    return x


def test_block_cues_hand_values():
    cues = block_cues(_pattern(), 4, ratio_eps=0.0)
    assert cues.shape == (1, 1, 2, 2, len(PIQE_CUES))
    c = cues[0, 0]
    # block variance (population)
    assert c[0, 0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert c[0, 1, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert c[1, 0, 0].item() == pytest.approx(21.25, abs=1e-4)  # Var(0..15) = (16²−1)/12
    assert c[1, 1, 0].item() == pytest.approx(1 - 0.0625, abs=1e-5)  # one 4 among 16 zeros
    # border stds of the ramp block [[0..3],[4..7],[8..11],[12..15]]
    top, bottom, left, right, ratio = c[1, 0, 1:].tolist()
    assert top == pytest.approx(math.sqrt(1.25), abs=1e-5)
    assert bottom == pytest.approx(math.sqrt(1.25), abs=1e-5)
    assert left == pytest.approx(4 * math.sqrt(1.25), abs=1e-5)
    assert right == pytest.approx(4 * math.sqrt(1.25), abs=1e-5)
    # centre {5,6,9,10}: var 4.25; ring of 12: var 323/12
    assert ratio == pytest.approx(math.sqrt(4.25) / math.sqrt(323 / 12), abs=1e-5)
    # checkerboard: every border and centre/ring has std 1
    assert c[0, 0, 1:].tolist() == pytest.approx([1, 1, 1, 1, 1], abs=1e-5)
    # constant block: stds at the eps floor
    assert c[0, 1, 1:5].abs().max().item() < 1e-5
    # the default guard shrinks the ratio: std_c/(std_s + 0.1)
    assert block_cues(_pattern(), 4)[0, 0, 1, 0, 5].item() == pytest.approx(
        math.sqrt(4.25) / (math.sqrt(323 / 12) + 0.1), abs=1e-5
    )


def test_block_cues_crop_and_small_blocks():
    x = torch.randn(2, 3, 10, 9, generator=_gen(7))
    cues = block_cues(x, 4)
    assert cues.shape == (2, 3, 2, 2, 6)
    assert torch.equal(cues, block_cues(x[..., :8, :8], 4))  # crop to a multiple of k
    small = block_cues(x, 2)
    assert small.shape == (2, 3, 5, 4, 6)
    assert torch.equal(small[..., 5], torch.ones_like(small[..., 5]))  # no interior for k<3
    assert block_cues(x[..., :3, :3], 8).shape == (2, 3, 1, 1, 6)  # k clipped to the map


def test_piqe_block_size_per_level_and_activity_weight():
    assert [e.block_size for e in piqe_extractors([0, 1, 2, 3])] == [8, 4, 2, 2]
    assert PiqeExtractor(block=8, level_index=1, min_block=8).block_size == 8
    ext = PiqeExtractor()
    assert ext.activity_weight(torch.tensor(0.1)).item() == pytest.approx(0.5)
    assert ext.activity_weight(torch.tensor(0.3)).item() > 0.99
    assert ext.activity_weight(torch.tensor(0.0)).item() < 0.01
    x = torch.randn(2, 3, 16, 16, generator=_gen(8))
    assert ext(x).shape == (2, 3, 2, 2, 6)
    assert torch.allclose(ext(x), block_cues(mscn(x), 8))
    assert level_indices_from_sizes([(4, 4), (8, 8), (16, 16), (16, 16)], (16, 16)) == [2, 1, 0, 0]


# ----------------------------------------------------------------------------- SCM


def test_scm_resize_channels_and_standardisation():
    # seeded: with some random 1×1 convs a channel's variance is small enough against eps 1e-5
    # that its standardised variance v/(v + eps) misses 1 by more than the 1e-3 below
    torch.manual_seed(0)
    scm = ScaleConversion([4, 8], [6, 10])
    assert len(scm) == 2
    assert sum(p.numel() for p in scm.parameters()) == (4 * 6 + 6) + (8 * 10 + 10)
    s = [torch.randn(2, 4, 8, 8, generator=_gen(9)), torch.randn(2, 8, 4, 4, generator=_gen(10))]
    t = [5 + 3 * torch.randn(2, 6, 16, 16, generator=_gen(11)),
         torch.randn(2, 10, 4, 4, generator=_gen(12))]
    cs, ct = scm(s, t)
    assert [x.shape for x in cs] == [(2, 6, 16, 16), (2, 10, 4, 4)]
    assert [x.shape for x in ct] == [(2, 6, 16, 16), (2, 10, 4, 4)]
    for x in cs + ct:
        assert x.mean(dim=(-2, -1)).abs().max().item() < 1e-5
        assert torch.allclose(x.var(dim=(-2, -1), unbiased=False), torch.ones(x.shape[:2]), atol=1e-3)


def test_standardize_channels_is_the_documented_formula_with_its_gradient():
    """(x − mean) / sqrt(population var + eps) per image and channel, gradient included (it runs
    as one native instance-norm kernel), and all zeros on a 1×1 map."""
    from slkd.distill.scm import standardize_channels

    x = (4 + 3 * torch.randn(2, 5, 7, 6, generator=_gen(30), dtype=torch.float64)).requires_grad_()
    g = torch.randn(2, 5, 7, 6, generator=_gen(31), dtype=torch.float64)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    expect = (x - mean) / torch.sqrt((x - mean).pow(2).mean(dim=(-2, -1), keepdim=True) + 0.5)
    got = standardize_channels(x, eps=0.5)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    (grad_got,) = torch.autograd.grad(got, x, g)
    (grad_expect,) = torch.autograd.grad(expect, x, g)
    torch.testing.assert_close(grad_got, grad_expect, rtol=1e-10, atol=1e-12)
    one = torch.randn(2, 3, 1, 1, generator=_gen(32))
    assert torch.equal(standardize_channels(one), torch.zeros_like(one))
    with pytest.raises(ValueError, match="B×C×H×W"):
        standardize_channels(torch.zeros(3, 4, 4))


def test_scm_without_standardisation_is_conv_then_bilinear():
    scm = ScaleConversion([4], [6], standardize=False)
    s = torch.randn(1, 4, 8, 8, generator=_gen(13))
    t = torch.randn(1, 6, 16, 16, generator=_gen(14))
    (cs,), (ct,) = scm([s], [t])
    expect = F.interpolate(scm.convs[0](s), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(cs, expect, atol=1e-6)
    assert torch.equal(ct, t)


def test_scm_rejects_mismatches():
    with pytest.raises(SlkdError):
        ScaleConversion([4, 8], [6])
    scm = ScaleConversion([4], [6])
    with pytest.raises(SlkdError):
        scm([torch.zeros(1, 5, 4, 4)], [torch.zeros(1, 6, 4, 4)])
    with pytest.raises(SlkdError):
        scm([torch.zeros(1, 4, 4, 4)], [torch.zeros(1, 6, 4, 4)] * 2)


def test_teacher_constant_handles_inference_tensors():
    t = _inference(torch.randn(2, 3))
    s = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="[Ii]nference"):
        (s * t).sum().backward()
    c = teacher_constant(t)
    assert not c.is_inference() and not c.requires_grad
    (s * c).sum().backward()
    assert torch.equal(s.grad, c)
    with torch.inference_mode():  # also from inside inference mode
        assert not teacher_constant(t).is_inference()


# ---------------------------------------------------------------------------- losses


def _feature_pair(seed: int, shapes):
    s = [torch.randn(*sh, generator=_gen(seed + i)) for i, sh in enumerate(shapes)]
    t = [torch.randn(*sh, generator=_gen(seed + 100 + i)) for i, sh in enumerate(shapes)]
    return s, t


SHAPES = [(2, 4, 16, 16), (2, 6, 8, 8)]


@pytest.mark.parametrize("which", ["nc", "et"])
def test_feature_losses_zero_for_identical_and_positive_otherwise(which):
    s, t = _feature_pair(20, SHAPES)

    def loss(a, b):
        if which == "nc":
            return nc_loss(a, b, BrisqueExtractor(scales=2))
        return et_loss(a, b, piqe_extractors([0, 1]))

    same = loss([x.clone().requires_grad_() for x in t], [_inference(x) for x in t])
    assert abs(same.item()) < 1e-7
    assert loss(s, [_inference(x) for x in t]).item() > 0.01


@pytest.mark.parametrize("which", ["nc", "et", "kl", "img"])
def test_gradients_reach_student_and_scm_never_teacher(which):
    torch.manual_seed(0)
    if which in ("nc", "et"):
        scm = ScaleConversion([3, 5], [4, 6])
        s = [torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 5, 8, 8, requires_grad=True)]
        t_inf = [_inference(torch.randn(2, 4, 16, 16)), _inference(torch.randn(2, 6, 8, 8))]
        t_grad = [torch.randn(2, 4, 16, 16, requires_grad=True),
                  torch.randn(2, 6, 8, 8, requires_grad=True)]
        for teacher in (t_inf, t_grad):
            cs, ct = scm(s, teacher)
            if which == "nc":
                loss = nc_loss(cs, ct, BrisqueExtractor())
            else:
                loss = et_loss(cs, ct, piqe_extractors([0, 1]))
            loss.backward()
            assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in scm.parameters())
            assert all(x.grad is None for x in teacher)
    else:
        s = torch.randn(2, 3, 8, 8, requires_grad=True)
        for teacher in (_inference(torch.randn(2, 3, 8, 8)), torch.randn(2, 3, 8, 8, requires_grad=True)):
            loss = kl_loss(s, teacher) if which == "kl" else image_l1(s, teacher)
            loss.backward()
            assert s.grad is not None and s.grad.abs().sum() > 0
            assert teacher.grad is None


def test_kl_loss_values():
    s = torch.randn(2, 3, 5, 4, generator=_gen(30))
    t = torch.randn(2, 3, 5, 4, generator=_gen(31))
    assert abs(kl_loss(t.clone(), _inference(t)).item()) < 1e-7
    assert kl_loss(s, t).item() > 0
    ref = F.kl_div(F.log_softmax(s.flatten(2), -1), F.log_softmax(t.flatten(2), -1),
                   log_target=True, reduction="sum") / 6
    assert kl_loss(s, t).item() == pytest.approx(ref.item(), rel=1e-5)
    # temperature: KL of the softened distributions times T²
    assert kl_loss(s, t, temperature=2.0).item() == pytest.approx(
        4 * kl_loss(s / 2, t / 2).item(), rel=1e-5
    )
    with pytest.raises(ValueError):
        kl_loss(s, t, temperature=0)


def test_identity_extractors_are_plain_l1():
    s, t = _feature_pair(40, SHAPES)
    plain = sum((a - b).abs().mean() for a, b in zip(s, t)).item()
    assert nc_loss(s, t, IdentityExtractor()).item() == pytest.approx(plain, rel=1e-6)
    assert et_loss(s, t, IdentityExtractor()).item() == pytest.approx(plain, rel=1e-6)
    assert et_loss(s, t, [IdentityExtractor(), IdentityExtractor()]).item() == pytest.approx(plain, rel=1e-6)


def test_nc_loss_gamma_and_et_weighting():
    s, t = _feature_pair(50, [(1, 2, 16, 16)])
    ext = BrisqueExtractor()
    fs, ft = ext(s[0]), ext(t[0])
    maps = sum((a - b).abs().mean() for a, b in zip(fs.maps, ft.maps)) / 5
    stats = (fs.stats - ft.stats).abs().mean()
    assert nc_loss(s, t, ext, gamma_stat=0.0).item() == pytest.approx(maps.item(), rel=1e-5)
    assert nc_loss(s, t, ext, gamma_stat=2.0).item() == pytest.approx((maps + 2 * stats).item(), rel=1e-5)
    pe = PiqeExtractor()
    cs, ct = pe(s[0]), pe(t[0])
    w = pe.activity_weight(ct[..., 0])
    expect = (w[..., None] * (cs - ct).abs()).sum() / (6 * w.sum())
    assert et_loss(s, t, pe).item() == pytest.approx(expect.item(), rel=1e-4)


def test_pixel_losses():
    out = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    one = torch.ones_like(out)
    assert pixel_loss("l1", out, one).item() == pytest.approx(1.0)
    assert pixel_loss("mse", out, one).item() == pytest.approx(1.5)
    assert pixel_loss("charbonnier", out, one).item() == pytest.approx(
        sum(math.sqrt(d * d + 1e-6) for d in (-1.0, 0.0, 1.0, 2.0)) / 4)
    assert image_l1(out, torch.zeros_like(out)).item() == pytest.approx(1.5)
    with pytest.raises(SlkdError, match="unknown loss 'l2'; known: l1, mse, charbonnier"):
        pixel_loss("l2", out, one)


def test_total_loss_weighting():
    w = SLKDConfig().loss_weights
    assert w == {"pix": 1.0, "kl": 0.5, "nc": 0.01, "et": 0.03, "img": 0.0}
    assert (SLKDConfig().gamma_stat, SLKDConfig().temperature) == (1.0, 1.0)
    terms = {k: torch.tensor(v) for k, v in dict(pix=1.0, kl=2.0, nc=3.0, et=4.0, img=5.0).items()}
    assert total_loss(terms, w).item() == pytest.approx(1 + 0.5 * 2 + 0.01 * 3 + 0.03 * 4)
    w2 = SLKDConfig(loss_weights={"img": 1.0, "nc": 0.0, "et": 0.1}).loss_weights
    terms["nc"] = torch.tensor(float("nan"))  # zero weight: skipped, no NaN leak
    assert total_loss(terms, w2).item() == pytest.approx(1 + 1 + 0.4 + 5)
    assert total_loss({"pix": torch.tensor(2.0)}, w).item() == 2.0
    with pytest.raises(ValueError):
        total_loss({"bogus": torch.tensor(1.0)}, w)
    with pytest.raises(SlkdError, match="distill.loss_weights.kl: expected a finite number >= 0"):
        SLKDConfig(loss_weights={"kl": -1.0})
    with pytest.raises(SlkdError, match="distill.temperature: must be > 0"):
        SLKDConfig(temperature=0)


# ------------------------------------------------------------- with real Restormer taps


def test_slkd_losses_on_restormer_taps():
    from slkd.models import DECODER_LEVELS, ENCODER_LEVELS, FeatureTaps, build_model

    torch.manual_seed(0)
    student = build_model("res-sl-tiny").train()
    teacher = build_model("restormer-tiny").eval()
    x = torch.rand(2, 3, 16, 16)
    y = torch.rand(2, 3, 16, 16)
    s_taps = FeatureTaps(student, ENCODER_LEVELS + DECODER_LEVELS)
    t_taps = FeatureTaps(teacher, ENCODER_LEVELS + DECODER_LEVELS)
    with s_taps, t_taps:
        with torch.inference_mode():
            t_out = teacher(x)  # Teacher A on the degraded image
            t_enc = [t_taps[n] for n in ENCODER_LEVELS]
            teacher(y)  # Teacher B (here the same network) on the clean image
            t_dec = [t_taps[n] for n in DECODER_LEVELS]
        assert all(t.is_inference() for t in t_enc + t_dec + [t_out])
        out = student(x)
        s_enc = [s_taps[n] for n in ENCODER_LEVELS]
        s_dec = [s_taps[n] for n in DECODER_LEVELS]

    scm_enc = ScaleConversion([f.shape[1] for f in s_enc], [f.shape[1] for f in t_enc])
    scm_dec = ScaleConversion([f.shape[1] for f in s_dec], [f.shape[1] for f in t_dec])
    levels = level_indices_from_sizes([f.shape[-2:] for f in t_dec], x.shape[-2:])
    assert levels == [2, 1, 0, 0]
    cfg = SLKDConfig()
    weights = cfg.loss_weights
    cs, ct = scm_enc(s_enc, t_enc)
    ds, dt = scm_dec(s_dec, t_dec)
    terms = {
        "pix": pixel_loss("l1", out, y),
        "kl": kl_loss(out, t_out, cfg.temperature),
        "nc": nc_loss(cs, ct, BrisqueExtractor(), cfg.gamma_stat),
        "et": et_loss(ds, dt, piqe_extractors(levels)),
    }
    assert all(torch.isfinite(v) and v.item() > 0 for v in terms.values())
    total_loss(terms, weights).backward()
    for name, p in list(student.named_parameters()) + list(scm_enc.named_parameters()) + list(
        scm_dec.named_parameters()
    ):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert all(p.grad is None for p in teacher.parameters())
