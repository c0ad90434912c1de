"""The distillers (slkd.distill.base / baselines / slkd_method / methods): SLKD and the baselines
on tiny random models — terms, gradients, frozen unregistered teachers, skipped teacher
forwards, ablation switches, the builder's errors and a short training smoke test."""

from __future__ import annotations

import math

import pytest
import torch

from slkd.distill import (
    DEFAULT_METHOD,
    Distiller,
    SLKDConfig,
    build_distiller,
    distill_config,
    distiller_class,
    registered_methods,
    kl_loss,
    image_l1,
)
from slkd.errors import SlkdError
from slkd.losses import pixel_loss
from slkd.models import DECODER_LEVELS, ENCODER_LEVELS, FeatureTaps, build_model

METHODS = ["scratch", "output_kd", "fitnet", "at", "fakd", "slkd"]

#: term keys with each method's default weights (pix 1, kl 0.5, nc 0.01, et 0.03, img 0; feature per method)
EXPECTED_TERMS = {
    "scratch": {"loss_pix"},
    "output_kd": {"loss_pix", "loss_kl"},
    "fitnet": {"loss_pix", "loss_feature"},
    "at": {"loss_pix", "loss_feature"},
    "fakd": {"loss_pix", "loss_feature", "loss_img"},  # FAKD as published: its teacher-output term on
    "slkd": {"loss_pix", "loss_kl", "loss_nc", "loss_et"},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _nets(seed: int = 0):
    """Fresh student, Teacher A and Teacher B (global residual off), random weights."""
    torch.manual_seed(seed)
    student = build_model("res-sl-tiny")
    teacher_a = build_model("restormer-tiny")
    teacher_b = build_model("restormer-tiny", global_residual=False)
    return student, teacher_a, teacher_b


def _batch(size: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, size, size, generator=g)
    lq = (gt + 0.1 * torch.randn(2, 3, size, size, generator=g)).clamp(0, 1)
    return {"lq": lq, "gt": gt}


def _weights(**changes: float) -> dict[str, float]:
    return {**SLKDConfig.DEFAULT_WEIGHTS, **changes}


def pixel_l1(out, gt):
    return pixel_loss("l1", out, gt)


class CallLog:
    """Counts forwards of a module with a pre-hook; records inputs and inference mode."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.inference: list[bool] = []
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args) -> None:
        self.inputs.append(args[0])
        self.inference.append(torch.is_inference_mode_enabled())

    @property
    def calls(self) -> int:
        return len(self.inputs)


def _teacher_params(*teachers):
    return [p for t in teachers for p in t.parameters()]


def _held(d) -> set[str]:
    """The teacher roles the distiller holds: those it probed at construction."""
    return set(d.probe) - {"student"}


# ------------------------------------------------------------------------ every method


@pytest.mark.parametrize("method", METHODS)
def test_forward_terms_gradients_and_frozen_teachers(method):
    student, teacher_a, teacher_b = _nets()
    teacher_a.train()
    teacher_b.train()
    d = build_distiller(distill_config(method=method), student, teacher_a, teacher_b)
    assert isinstance(d, distiller_class(method)) and d.method == method and d.cfg.method == method
    held = {"scratch": set(), "slkd": {"a", "b"}}.get(method, {"a"})
    assert _held(d) == held  # a teacher the method does not use is not held
    d.train()
    assert student.training
    for t in [{"a": teacher_a, "b": teacher_b}[role] for role in held]:
        assert not t.training
        assert not any(p.requires_grad for p in t.parameters())

    loss, terms = d.loss(d, _batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(terms) == EXPECTED_TERMS[method]
    assert all(not v.requires_grad and torch.isfinite(v) for v in terms.values())
    weights = distill_config(method=method).loss_weights
    expected = sum(weights[k[len("loss_"):]] * v for k, v in terms.items())
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)

    loss.backward()
    # every trainable parameter (student and adapters) gets a gradient: what DDP needs
    missing = [n for n, p in d.named_parameters() if p.grad is None]
    assert not missing, missing
    assert any(p.grad.abs().sum() > 0 for p in d.adapters.parameters()) or d.adapter_parameter_count() == 0
    for p in _teacher_params(teacher_a, teacher_b):
        assert p.grad is None
    d.train()
    assert all(not {"a": teacher_a, "b": teacher_b}[role].training for role in held)


@pytest.mark.parametrize("method", METHODS)
def test_teachers_are_not_registered(method):
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config(method=method), student, teacher_a, teacher_b)
    teacher_ids = {id(p) for p in _teacher_params(teacher_a, teacher_b)}
    assert not teacher_ids & {id(p) for p in d.parameters()}
    assert not teacher_ids & {id(b) for b in d.buffers()}
    keys = set(d.state_dict())
    student_keys = set(student.state_dict())
    assert keys == {f"student.{k}" for k in student_keys} | {f"adapters.{k}" for k in d.adapters.state_dict()}
    assert d.model is student and d.trainable_module() is d
    n_student = sum(p.numel() for p in student.parameters())
    assert d.adapter_parameter_count() == sum(p.numel() for p in d.adapters.parameters())
    assert d.adapter_parameter_count() == sum(p.numel() for p in d.parameters()) - n_student
    assert (d.adapter_parameter_count() > 0) == (method in ("fitnet", "slkd"))


def test_scratch_runs_and_holds_no_teacher():
    student, teacher_a, teacher_b = _nets()
    logs = CallLog(teacher_a), CallLog(teacher_b)
    d = build_distiller(distill_config(method="scratch"), student, teacher_a, teacher_b)
    d(_batch())
    assert [log.calls for log in logs] == [0, 0]
    assert _held(d) == set()


def test_teachers_run_under_inference_mode_on_the_right_inputs():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd"), student, teacher_a, teacher_b)
    log_a, log_b = CallLog(teacher_a), CallLog(teacher_b)
    batch = _batch()
    d(batch)
    assert log_a.calls == 1 and log_b.calls == 1
    assert log_a.inference == [True] and log_b.inference == [True]
    assert torch.equal(log_a.inputs[0], batch["lq"])  # DRL: Teacher A on the degraded x
    assert torch.equal(log_b.inputs[0], batch["gt"])  # IRL: Teacher B on the clean y


# ------------------------------------------------------------------------ SLKD switches


def test_drl_off_without_kl_and_img_skips_teacher_a():
    student, teacher_a, teacher_b = _nets()
    cfg = distill_config("slkd", drl=False, loss_weights=_weights(kl=0.0, img=0.0))
    d = build_distiller(cfg, student, teacher_a, teacher_b)
    log_a, log_b = CallLog(teacher_a), CallLog(teacher_b)
    _, terms = d(_batch())
    assert set(terms) == {"loss_pix", "loss_et"}
    assert log_a.calls == 0 and log_b.calls == 1
    assert _held(d) == {"b"}
    assert set(d.adapters) == {"decoder"}


def test_drl_off_with_kl_still_runs_teacher_a_but_builds_no_encoder_scm():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd", drl=False), student, teacher_a, teacher_b)
    log_a = CallLog(teacher_a)
    _, terms = d(_batch())
    assert set(terms) == {"loss_pix", "loss_kl", "loss_et"}
    assert log_a.calls == 1
    assert set(d.adapters) == {"decoder"}


def test_irl_off_skips_teacher_b():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd", irl=False), student, teacher_a, teacher_b)
    log_a, log_b = CallLog(teacher_a), CallLog(teacher_b)
    _, terms = d(_batch())
    assert set(terms) == {"loss_pix", "loss_kl", "loss_nc"}
    assert log_a.calls == 1 and log_b.calls == 0
    assert _held(d) == {"a"} and set(d.adapters) == {"encoder"}
    # Teacher B is optional without IRL
    assert _held(build_distiller(distill_config("slkd", irl=False), *_nets()[:2])) == {"a"}


def test_zero_weight_switches_the_term_off():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd", loss_weights=_weights(nc=0.0, img=0.5)), student, teacher_a, teacher_b)
    _, terms = d(_batch())
    assert set(terms) == {"loss_pix", "loss_kl", "loss_et", "loss_img"}
    assert set(d.adapters) == {"decoder"}


def test_same_as_a_runs_teacher_a_on_x_and_y_and_never_teacher_b():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd", teacher_b="same_as_a"), student, teacher_a, teacher_b)
    log_a, log_b = CallLog(teacher_a), CallLog(teacher_b)
    batch = _batch()
    _, terms = d(batch)
    assert set(terms) == EXPECTED_TERMS["slkd"]
    assert log_b.calls == 0 and log_a.calls == 2
    assert torch.equal(log_a.inputs[0], batch["lq"]) and torch.equal(log_a.inputs[1], batch["gt"])
    assert _held(d) == {"a"}
    # a global-residual Teacher A is fine here: it is Teacher A, not a clean → clean Teacher B
    assert teacher_a.global_residual


def test_identity_extractors_are_plain_l1_on_scm_features():
    student, teacher_a, teacher_b = _nets()
    cfg = distill_config("slkd", extractor_nc="identity", extractor_et="identity")
    d = build_distiller(cfg, student, teacher_a, teacher_b)
    batch = _batch(32)
    _, terms = d(batch)

    assert cfg.encoder_taps is None and cfg.decoder_taps is None  # the student's level names
    enc, dec = list(ENCODER_LEVELS), list(DECODER_LEVELS)
    with torch.no_grad(), FeatureTaps(student, enc + dec) as s_taps, \
            FeatureTaps(teacher_a, enc) as a_taps, FeatureTaps(teacher_b, dec) as b_taps:
        out = student(batch["lq"])
        a_out = teacher_a(batch["lq"])
        teacher_b(batch["gt"])
        s, t = d.adapters["encoder"]([s_taps[n] for n in enc], [a_taps[n] for n in enc])
        nc = sum((a - b).abs().mean() for a, b in zip(s, t))
        s, t = d.adapters["decoder"]([s_taps[n] for n in dec], [b_taps[n] for n in dec])
        et = sum((a - b).abs().mean() for a, b in zip(s, t))
        pix = pixel_l1(out, batch["gt"])
        kl = kl_loss(out, a_out)
    torch.testing.assert_close(terms["loss_nc"], nc)
    torch.testing.assert_close(terms["loss_et"], et)
    torch.testing.assert_close(terms["loss_pix"], pix)
    torch.testing.assert_close(terms["loss_kl"], kl)

    # the BRISQUE / PIQE extractors compare something else than plain L1
    torch.manual_seed(0)
    d_full = build_distiller(distill_config("slkd"), *_nets())
    d_full.load_state_dict(d.state_dict())
    _, full = d_full(batch)
    torch.testing.assert_close(full["loss_pix"], pix)
    assert not torch.allclose(full["loss_nc"], nc) and not torch.allclose(full["loss_et"], et)


def test_piqe_block_size_follows_the_decoder_level():
    d = build_distiller(distill_config("slkd"), *_nets())
    assert [e.level_index for e in d.extractors_et] == [2, 1, 0, 0]
    assert [e.block_size for e in d.extractors_et] == [2, 4, 8, 8]


# ------------------------------------------------------------------------ baselines


def test_output_kd_terms_match_manual_values():
    student, teacher_a, _ = _nets()
    cfg = distill_config(method="output_kd", loss_weights={"img": 1.0})  # partial: others default
    d = build_distiller(cfg, student, teacher_a)
    assert d.weights == {"pix": 1.0, "img": 1.0, "kl": 0.5}
    batch = _batch()
    loss, terms = d(batch)
    with torch.no_grad():
        out, a_out = student(batch["lq"]), teacher_a(batch["lq"])
    torch.testing.assert_close(terms["loss_img"], image_l1(out, a_out))
    torch.testing.assert_close(terms["loss_kl"], kl_loss(out, a_out))
    torch.testing.assert_close(loss.detach(), pixel_l1(out, batch["gt"]) + image_l1(out, a_out)
                               + 0.5 * kl_loss(out, a_out))


def test_attention_transfer_of_identical_features_is_zero_and_bounded():
    from slkd.distill import at_loss, attention_map, fakd_loss

    f = torch.randn(2, 4, 8, 8)
    assert at_loss([f], [f * 3]).item() == pytest.approx(0.0, abs=1e-10)
    a = attention_map(f)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    assert 0 <= at_loss([torch.randn(2, 5, 4, 4)], [f]).item() <= 4
    # FAKD compares positions, so channel counts may differ and scaling does not matter
    assert fakd_loss([f], [2 * f], pool=4).item() == pytest.approx(0.0, abs=1e-6)
    assert fakd_loss([torch.randn(2, 7, 8, 8)], [f], pool=4).item() > 0


# ------------------------------------------------------------------------ builder errors


def test_builder_errors():
    student, teacher_a, teacher_b = _nets()
    with pytest.raises(SlkdError, match="Teacher B"):
        build_distiller(distill_config("slkd"), student, teacher_a)
    with pytest.raises(SlkdError, match="global input-to-output residual"):
        build_distiller(distill_config("slkd"), student, teacher_a, build_model("restormer-tiny"))
    with pytest.raises(SlkdError, match="unknown distillation method 'nope'.*fitnet"):
        build_distiller(distill_config(method="nope"), student, teacher_a, teacher_b)
    with pytest.raises(SlkdError, match="needs Teacher A"):
        build_distiller(distill_config(method="fitnet"), student, None)
    with pytest.raises(SlkdError, match="is scratch"):
        build_distiller(distill_config(method="output_kd", loss_weights={"kl": 0.0}), student, teacher_a)
    with pytest.raises(SlkdError, match="is scratch"):
        build_distiller(distill_config(method="at", loss_weights={"feature": 0.0}), student, teacher_a)
    with pytest.raises(SlkdError, match="unknown term"):
        build_distiller(distill_config("slkd", loss_weights={"nce": 1.0}), student, teacher_a, teacher_b)
    with pytest.raises(SlkdError, match="did you mean"):
        build_distiller(distill_config("slkd", encoder_taps=["encoder_levell1"]), student, teacher_a, teacher_b)
    with pytest.raises(SlkdError, match="student itself"):
        build_distiller(distill_config(method="output_kd"), student, student)
    with pytest.raises(SlkdError, match="Teacher B takes 1-channel images"):
        grey_b = build_model("restormer-tiny", inp_channels=1, out_channels=1, global_residual=False)
        build_distiller(distill_config("slkd"), student, teacher_a, grey_b)
    with pytest.raises(SlkdError, match="temperature"):
        build_distiller(distill_config("slkd", piqe_temperature=0.0), student, teacher_a, teacher_b)
    # failed constructions leave no hook behind on the caller's networks
    assert not student._forward_hooks and not teacher_a._forward_hooks and not teacher_b._forward_hooks
    # with IRL off or same_as_a, Teacher B is not needed
    build_distiller(distill_config("slkd", teacher_b="same_as_a"), *_nets()[:2])


# ------------------------------------------------------------------------ modules and hooks


def test_to_moves_and_casts_the_teachers():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd"), student, teacher_a, teacher_b)
    assert d.to(torch.device("cpu")) is d
    d.double()
    for p in [*d.parameters(), *_teacher_params(teacher_a, teacher_b)]:
        assert p.dtype == torch.float64
    batch = {k: v.double() for k, v in _batch().items()}
    loss, _ = d(batch)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    d.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in _teacher_params(teacher_a, teacher_b))
    assert all(p.device.type == "cpu" for p in _teacher_params(teacher_a, teacher_b))


def test_student_taps_record_only_inside_the_distiller_and_close_removes_them():
    student, teacher_a, teacher_b = _nets()
    hooks_before = len(student._forward_hooks), len(teacher_a._forward_hooks)
    d = build_distiller(distill_config("slkd"), student, teacher_a, teacher_b)
    batch = _batch()
    d(batch)
    with torch.no_grad():
        student(batch["lq"])  # e.g. validation of the exported student
    assert d._student_taps.features == {}
    d.eval()
    assert not student.training
    d.close()
    assert (len(student._forward_hooks), len(teacher_a._forward_hooks)) == hooks_before


def test_loss_calls_the_given_network():
    d = build_distiller(distill_config(method="at"), *_nets()[:2])
    calls = []

    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, batch):
            calls.append(1)
            return self.module(batch)

    loss, terms = d.loss(Wrapper(d), _batch())
    assert calls == [1] and set(terms) == EXPECTED_TERMS["at"]


def test_slkd_training_smoke_reduces_the_loss():
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd"), student, teacher_a, teacher_b).train()
    opt = torch.optim.Adam(d.trainable_module().parameters(), lr=2e-3)
    batch = _batch(32)
    before = [p.detach().clone() for p in _teacher_params(teacher_a, teacher_b)]
    losses = []
    for _ in range(6):
        loss, _ = d.loss(d, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    for p, q in zip(_teacher_params(teacher_a, teacher_b), before):
        assert torch.equal(p, q)


def test_distiller_is_a_module_and_listed():
    assert set(METHODS) <= set(registered_methods())  # (a test may register more)
    assert all(issubclass(distiller_class(m), Distiller) for m in registered_methods())
    d = build_distiller(distill_config(method="fakd", fakd_pool=2), *_nets()[:2])
    assert d.cfg.fakd_pool == 2  # the config it was built with, read when the loss is computed
    pooled = {pool: build_distiller(distill_config(method="fakd", fakd_pool=pool), *_nets()[:2])(_batch())[1]
              for pool in (2, 8)}
    assert pooled[2]["loss_pix"] == pooled[8]["loss_pix"] and pooled[2]["loss_feature"] != pooled[8]["loss_feature"]
    assert "not registered" in repr(d)


# ------------------------------------------------------------------------ compiled feature terms


def test_compile_losses_wraps_only_the_feature_terms_and_keeps_the_numbers(monkeypatch):
    """``compile_losses`` hands the SCM + extractor + loss functions (not the models) to
    ``torch.compile`` with static shapes; the terms are those of the eager distiller. (A real
    Inductor compilation takes minutes on 2 cores: benchmarks/speed.py --compile measures it and
    checks the compiled terms and gradients against eager.)"""
    calls = []

    def fake_compile(fn, **kwargs):
        calls.append((fn.__name__, kwargs))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    batch = _batch()
    terms = {}
    for flag in (False, True):
        student, teacher_a, teacher_b = _nets()
        d = build_distiller(distill_config("slkd", compile_losses=flag), student, teacher_a, teacher_b).train()
        _, terms[flag] = d(batch)
    assert calls == [("_nc_term", {"dynamic": False}), ("_et_term", {"dynamic": False})]
    assert terms[True].keys() == terms[False].keys()
    for k in terms[False]:
        torch.testing.assert_close(terms[True][k], terms[False][k], rtol=0, atol=0)


def test_compile_failure_is_a_plain_error(monkeypatch):
    class InductorError(RuntimeError):
        pass

    InductorError.__module__ = "torch._inductor.exc"

    def broken(*_args, **_kwargs):
        raise InductorError("CppCompileError: C++ compile error\nmore lines")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config("slkd", compile_losses=True), student, teacher_a, teacher_b).train()
    with pytest.raises(SlkdError, match=r"distill.compile_losses: torch.compile failed \(InductorError: "
                                        r"CppCompileError: C\+\+ compile error\).*compile_losses: false"):
        d(_batch())


def test_feature_baselines_default_to_their_measured_weights():
    """FitNet / AT / FAKD get their own feature weight unless the config names one (FAKD, the
    default method, also its paper's teacher-output term); a term the method does not have is
    refused."""
    assert DEFAULT_METHOD == "fakd" and distill_config().loss_weights["img"] == 0.5
    for method, weight, img in (("fitnet", 0.003, 0.0), ("at", 0.0015, 0.0), ("fakd", 0.002, 0.5)):
        assert distill_config(method=method).loss_weights == {"pix": 1.0, "feature": weight, "img": img}
        assert distill_config(method=method, loss_weights={"feature": 1.0}).loss_weights["feature"] == 1.0
    assert distill_config(method="slkd").loss_weights == {"pix": 1.0, "kl": 0.5, "nc": 0.01, "et": 0.03, "img": 0.0}
    with pytest.raises(SlkdError, match="unknown term.*bogus.*fitnet; its terms: pix, feature, img"):
        distill_config(method="fitnet", loss_weights={"bogus": 1.0})


@pytest.mark.parametrize("method", ["fitnet", "at", "fakd", "slkd"])
def test_feature_losses_run_in_float32_under_bf16_autocast(method):
    """``train.bf16`` puts the networks under bf16 autocast, so the tapped features are
    bfloat16; the adapters, extractors and feature losses must still see float32 with autocast
    off (MSCN variances and moment ratios in bf16 moved L_NC by 0.75 % at this size), and the
    terms stay within bf16's effect on the networks of their float32 values."""
    student, teacher_a, teacher_b = _nets()
    d = build_distiller(distill_config(method=method), student, teacher_a, teacher_b).train()
    seen = []
    names = ["_nc_fn", "_et_fn"] if method == "slkd" else ["feature_loss"]
    for name in names:
        fn = getattr(d, name)

        def spy(s, t, fn=fn):
            seen.append(({x.dtype for x in s + t}, torch.is_autocast_enabled("cpu")))
            return fn(s, t)

        setattr(d, name, spy)
    batch = _batch(32)
    _, fp32 = d(batch)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, feats = d.run_student(batch["lq"])
        assert {f.dtype for f in feats.values()} == {torch.bfloat16}  # autocast is really on
        loss, bf16 = d(batch)
    assert len(seen) == len(names) and all(s == ({torch.float32}, False) for s in seen), seen
    assert loss.dtype == torch.float32
    for k in ("loss_nc", "loss_et", "loss_feature"):
        if k in fp32:
            assert bf16[k].dtype == torch.float32
            torch.testing.assert_close(bf16[k], fp32[k], rtol=5e-3, atol=1e-6)
