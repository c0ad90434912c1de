"""The variants of the distillation study: the teacher-term schedule (method ``slkd_decay``),
Φ_N as a dense MSCN comparison and Φ_E as an edge weighting of the decoder-feature distance.
The losing ones live in benchmarks/variants.py and register into the library's registries from
there, as a user's own module would."""

from __future__ import annotations

import pytest
import torch

from benchmarks.variants import EdgeWeightExtractor, MSCNExtractor
from slkd.distill import build_distiller, distill_config, et_loss, mscn, nc_loss
from slkd.errors import ConfigError
from test_distillers import CallLog, _batch, _nets


@pytest.mark.parametrize("mode, progress, factor", [
    ("none", 0.9, 1.0), ("linear", 0.5, 1.0), ("linear", 0.75, 1.0), ("linear", 0.875, 0.5),
    ("linear", 1.0, 0.0), ("step", 0.74, 1.0), ("step", 0.75, 0.0),
])
def test_teacher_factor_follows_the_schedule(mode, progress, factor):
    cfg = distill_config("slkd_decay", teacher_decay=mode, teacher_decay_start=0.75)
    assert cfg.teacher_factor(progress) == pytest.approx(factor)


@pytest.mark.parametrize("start", [-0.1, 1.0, 2])
def test_teacher_decay_start_must_be_a_fraction(start):
    with pytest.raises(ConfigError, match="teacher_decay_start"):
        distill_config("slkd_decay", teacher_decay="linear", teacher_decay_start=start)


def test_linear_decay_scales_every_teacher_term_but_not_pix():
    student, a, b = _nets()
    d = build_distiller(distill_config("slkd_decay", teacher_decay="linear", teacher_decay_start=0.5), student, a, b)
    batch = _batch()
    d.set_progress(0, 100)
    full, terms = d(batch)
    d.set_progress(75, 100)  # halfway through the decay: teacher terms at half weight
    half, terms_half = d(batch)
    w = d.weights
    expected = terms["loss_pix"] + 0.5 * sum(w[k] * terms[f"loss_{k}"] for k in ("kl", "nc", "et"))
    assert torch.allclose(half, expected, rtol=1e-5)
    assert torch.allclose(full, terms["loss_pix"] + sum(w[k] * terms[f"loss_{k}"] for k in ("kl", "nc", "et")),
                          rtol=1e-5)


def test_switched_off_teachers_are_not_run_and_adapters_get_zero_gradients():
    student, a, b = _nets()
    d = build_distiller(distill_config("slkd_decay", teacher_decay="step", teacher_decay_start=0.5), student, a, b)
    log_a, log_b = CallLog(a), CallLog(b)
    d.set_progress(60, 100)
    loss, terms = d(_batch())
    assert set(terms) == {"loss_pix"} and log_a.calls == 0 and log_b.calls == 0
    loss.backward()
    adapters = list(d.adapters.parameters())
    assert adapters and all(p.grad is not None and not p.grad.any() for p in adapters)
    assert any(p.grad.abs().sum() > 0 for p in d.student.parameters())


def test_mscn_extractor_compares_the_maps_densely():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 12, 12, generator=g), torch.randn(2, 4, 12, 12, generator=g)
    ext = MSCNExtractor(c=0.01)
    assert nc_loss([s], [t], ext).item() == pytest.approx((mscn(s, c=0.01) - mscn(t, c=0.01)).abs().mean().item(),
                                                          rel=1e-6)
    assert nc_loss([t], [t], ext).item() == 0.0
    # contrast normalisation: a brighter, higher-contrast copy of a map is (nearly) the same map
    assert nc_loss([3 * t + 1], [t], ext).item() < 0.02 * nc_loss([s], [t], ext).item()


def test_edge_weights_favour_the_teachers_edges():
    t = torch.zeros(1, 2, 16, 16)
    t[..., 8:] = 1.0  # a vertical step edge between columns 7 and 8
    w = EdgeWeightExtractor().weight(t)
    assert w.shape == (1, 1, 16, 16)
    assert w[..., 7:9].min() > 3 * w[..., :5].max()
    assert torch.allclose(w[..., :5], torch.ones(1, 1, 16, 5), atol=1e-3)  # flat: weight ~1


def test_edge_weighted_et_is_plain_l1_on_a_flat_teacher_and_edge_heavy_otherwise():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 2, 16, 16, generator=g)
    flat = torch.full((1, 2, 16, 16), 0.3)
    assert et_loss([s], [flat], EdgeWeightExtractor()).item() == pytest.approx((s - flat).abs().mean().item(), rel=1e-5)
    edge = torch.zeros(1, 2, 16, 16)
    edge[..., 8:] = 1.0
    off_edge, on_edge = edge.clone(), edge.clone()
    off_edge[..., 2] += 1.0  # the same error, once far from the edge, once on it
    on_edge[..., 8] += 1.0
    assert et_loss([on_edge], [edge], EdgeWeightExtractor()) > 2 * et_loss([off_edge], [edge], EdgeWeightExtractor())


@pytest.mark.parametrize("nc, et", [("mscn", "edge"), ("brisque", "edge"), ("mscn", "piqe")])
def test_slkd_trains_with_the_variant_extractors(nc, et):
    student, a, b = _nets()
    d = build_distiller(distill_config("slkd", extractor_nc=nc, extractor_et=et), student, a, b)
    loss, terms = d(_batch())
    assert {"loss_nc", "loss_et"} <= set(terms) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in d.adapters.parameters())


@pytest.mark.parametrize("method", ["fitnet", "at", "fakd"])
def test_feature_baselines_add_l1_to_teacher_output_only_when_weighted(method):
    from slkd.distill import image_l1

    student, a, b = _nets()
    plain = build_distiller(distill_config(method, loss_weights={"img": 0.0}), student, {"a": a})
    _, terms = plain(_batch())
    assert "loss_img" not in terms
    d = build_distiller(distill_config(method, loss_weights={"img": 0.5}), student, {"a": a})
    batch = _batch()
    loss, terms = d(batch)
    with torch.no_grad():
        expected_img = image_l1(student(batch["lq"]), a(batch["lq"]))
    assert terms["loss_img"].item() == pytest.approx(expected_img.item(), rel=1e-5)
    w = d.weights
    assert loss.item() == pytest.approx(
        terms["loss_pix"].item() + w["feature"] * terms["loss_feature"].item() + 0.5 * expected_img.item(), rel=1e-5)


# ---------------------------------------------------------------- the split with a working distance

ALL_LEVELS = ["encoder_level1", "encoder_level2", "encoder_level3", "latent",
              "decoder_level3", "decoder_level2", "decoder_level1", "refinement"]


def test_slkd_with_the_affinity_distance_on_every_level_of_teacher_a_is_fakd():
    """SLKD's DRL with ``extractor_nc: affinity`` over all eight levels, no IRL and no KL, is FAKD
    with its output term: the same terms, the same total, the same gradient."""
    student, a, _ = _nets()
    batch = _batch()
    fakd = build_distiller(distill_config("fakd"), student, a)
    f_loss, f_terms = fakd(batch)
    f_grad = torch.autograd.grad(f_loss, list(student.parameters()), allow_unused=True)
    fakd.close()
    w = fakd.weights
    slkd = build_distiller(distill_config("slkd", extractor_nc="affinity", irl=False, encoder_taps=ALL_LEVELS,
                                          loss_weights={"kl": 0.0, "nc": w["feature"], "img": w["img"]}),
                           student, a)
    assert len(slkd.adapters) == 0  # the affinity distance needs no SCM
    s_loss, s_terms = slkd(batch)
    s_grad = torch.autograd.grad(s_loss, list(student.parameters()), allow_unused=True)
    assert torch.equal(s_terms["loss_nc"], f_terms["loss_feature"])
    assert torch.equal(s_terms["loss_img"], f_terms["loss_img"])
    torch.testing.assert_close(s_loss, f_loss, rtol=1e-6, atol=0)
    for g1, g2 in zip(s_grad, f_grad):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-8)


def test_the_split_with_affinity_reads_teacher_b_on_the_clean_image_at_the_decoder():
    from slkd.distill import fakd_loss

    student, a, b = _nets()
    batch = _batch()
    d = build_distiller(distill_config("slkd", extractor_nc="affinity", extractor_et="affinity", affinity_pool=4,
                                       loss_weights={"kl": 0.0, "img": 0.0, "nc": 0.002, "et": 0.002}),
                        student, a, b)
    log_a, log_b = CallLog(a), CallLog(b)
    _, terms = d(batch)
    assert set(terms) == {"loss_pix", "loss_nc", "loss_et"} and len(d.adapters) == 0
    assert log_a.calls == 1 and torch.equal(log_a.inputs[0], batch["lq"])
    assert log_b.calls == 1 and torch.equal(log_b.inputs[0], batch["gt"])
    # the decoder term is FAKD's distance between the student's decoder on x and B's on y
    enc, dec = ALL_LEVELS[:4], ALL_LEVELS[4:]
    with torch.no_grad():
        s_feats = {}
        hooks = [dict(student.named_modules())[n].register_forward_hook(
            lambda m, i, o, n=n: s_feats.__setitem__(n, o)) for n in ALL_LEVELS]
        d.close()
        student(batch["lq"])
        t_feats = {}
        hooks += [dict(b.named_modules())[n].register_forward_hook(
            lambda m, i, o, n=n: t_feats.__setitem__(n, o)) for n in dec]
        b(batch["gt"])
        for h in hooks:
            h.remove()
    expected = fakd_loss([s_feats[n] for n in dec], [t_feats[n] for n in dec], pool=4)
    torch.testing.assert_close(terms["loss_et"], expected, rtol=1e-5, atol=1e-7)
    assert enc  # the encoder term reads Teacher A (checked by FAKD's equality above)


def test_affinity_pool_must_be_positive():
    with pytest.raises(ConfigError, match="affinity_pool"):
        distill_config("slkd", affinity_pool=0)


def test_extractors_register_from_outside_the_library_and_clashes_are_refused():
    """benchmarks/variants.py registered ``mscn`` and ``edge`` (imported above): they are choices
    of the config now, and the distiller builds them; a name cannot be taken twice."""
    from benchmarks.variants import SLKDDecayDistiller
    from slkd.distill import register_extractor

    student, a, b = _nets()
    d = build_distiller(distill_config("slkd", extractor_nc="mscn", extractor_et="edge"), student, a, b)
    assert isinstance(d.extractor_nc, MSCNExtractor) and isinstance(d.extractors_et, EdgeWeightExtractor)
    assert isinstance(build_distiller(distill_config("slkd_decay"), *_nets()), SLKDDecayDistiller)
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("nc", "mscn")(lambda cfg, levels: MSCNExtractor())
    with pytest.raises(ValueError, match="part 'nc' or 'et'"):
        register_extractor("xx", "other")
    with pytest.raises(ValueError, match="other than 'affinity'"):
        register_extractor("et", "affinity")
    with pytest.raises(ConfigError, match=r"^distill.extractor_et: expected 'piqe' or 'identity' or 'edge' or "
                                          r"'affinity', got 'sobel'"):
        distill_config("slkd", extractor_et="sobel")
