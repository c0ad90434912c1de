"""The compiled training step (``train.compile``): every method's whole step forward is one graph
(no break: the compiler sees student, teachers and terms together), the trainer's compiled run
gives the eager run's weights, and ``auto`` compiles only where the rule says. The graphs are
traced with Dynamo's eager backend (``SLKD_COMPILE_BACKEND=eager``): the same graphs in seconds;
Inductor's code generation (minutes on a CPU) is measured by benchmarks/arithmetic.py."""

from __future__ import annotations

import pytest
import torch

from slkd.distill import build_distiller, distill_config, registered_methods
from slkd.engine.compiled import COMPILE_MIN_ITERS, wants_compile
from slkd.models import build_model
from test_sync_free import _trainer
from test_trainer import data_root  # noqa: F401  (fixture)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("method", registered_methods())
def test_every_methods_step_forward_is_one_graph(method):
    import torch._dynamo

    torch.manual_seed(0)
    student = build_model("res-sl-tiny")
    teachers = {"a": build_model("restormer-tiny"), "b": build_model("restormer-tiny", global_residual=False)}
    cfg = distill_config(method)
    d = build_distiller(cfg, student, {r: teachers[r] for r in cfg.teacher_roles()})
    g = torch.Generator().manual_seed(0)
    batch = {"gt": torch.rand(2, 3, 16, 16, generator=g)}
    batch["lq"] = batch["gt"] + 0.1 * torch.randn(2, 3, 16, 16, generator=g)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(d)(batch)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("method", ["scratch", "slkd"])
def test_a_compiled_run_gives_the_eager_runs_weights(data_root, tmp_path, monkeypatch, method):  # noqa: F811
    monkeypatch.setenv("SLKD_COMPILE_BACKEND", "eager")
    weights = {}
    for compiled in (False, True):
        trainer = _trainer(data_root, tmp_path / str(compiled), method)
        trainer.compiled = compiled
        if compiled:
            from slkd.engine.compiled import compile_step

            trainer.network = compile_step(trainer.network, CPU)
        trainer.run()
        weights[compiled] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for k, v in weights[False].items():
        torch.testing.assert_close(weights[True][k], v, rtol=1e-5, atol=1e-6)


def test_auto_compiles_long_cpu_runs_only():
    assert not wants_compile("auto", CPU, COMPILE_MIN_ITERS - 1)
    assert wants_compile("auto", CPU, COMPILE_MIN_ITERS)
    assert not wants_compile("auto", CUDA, 10**6)  # not measured on a GPU yet
    assert wants_compile(True, CPU, 1) and not wants_compile(False, CPU, 10**6)
