"""Shared fixtures: running the command line in-process, and small weights files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from slkd.cli.main import main
from slkd.data.image_io import write_image
from slkd.models import build_model, save_weights


#: tests marked ``slow`` here rather than in their own file: the GPU check's dry run runs the
#: whole check (tests, a torchrun training, timings) in child processes
SLOW_TESTS = {"test_gpu_check.py::test_dry_run_runs_every_stage"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if f"{item.path.name}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("eval", "--model", ...)`` runs ``slkd.cli.main.main`` in-process and returns the
    exit code and what was printed. argparse errors still raise SystemExit."""

    def run(*argv: object) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def one_thread():
    """Run a module with one intra-op thread. These tests do many tiny tensor ops; on a busy
    2-core machine two contending threads were measured 5-20× slower than one. Results do not
    depend on it (comparisons against the library run under the same setting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _saved(path: Path, name: str, seed: int, **overrides) -> Path:
    torch.manual_seed(seed)
    return save_weights(build_model(name, **overrides), path)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_weights(weights_dir) -> Path:
    """res-sl-tiny with seeded random weights."""
    return _saved(weights_dir / "res-sl-tiny.pth", "res-sl-tiny", seed=0)


@pytest.fixture(scope="session")
def teacher_tiny_weights(weights_dir) -> Path:
    """restormer-tiny weights: another preset, so other tensor shapes than res-sl-tiny."""
    return _saved(weights_dir / "restormer-tiny.pth", "restormer-tiny", seed=1)


@pytest.fixture(scope="session")
def biasfree_tiny_weights(weights_dir) -> Path:
    """res-sl-tiny built with BiasFree LayerNorm (as official denoising checkpoints are)."""
    return _saved(weights_dir / "res-sl-tiny-biasfree.pth", "res-sl-tiny", seed=2,
                  LayerNorm_type="BiasFree")


@pytest.fixture(scope="session")
def make_distill_folder():
    """``make(root, seed)``: a tiny distillation setup under ``root`` — ``train`` training and 1
    validation ``size``×``size`` image (blocky structure of 8-pixel cells plus noise, seeded) in
    ``data/{train,val}/`` and two seeded ``teacher`` networks: Teacher A and Teacher B (no
    global residual), saved as ``teacher_a.pth`` and ``teacher_b.pth``."""

    def make(root: Path, seed: int, *, train: int = 3, size: int = 32, teacher: str = "restormer-tiny") -> Path:
        rng = np.random.default_rng(seed)
        cells = size // 8
        for split, count in (("train", train), ("val", 1)):
            for i in range(count):
                img = (0.7 * np.kron(rng.random((3, cells, cells)), np.ones((1, 8, 8)))
                       + 0.3 * rng.random((3, size, size)))
                write_image(root / "data" / split / f"im{i}.png", torch.from_numpy(img).float())
        torch.manual_seed(0)
        save_weights(build_model(teacher), root / "teacher_a.pth")
        save_weights(build_model(teacher, global_residual=False), root / "teacher_b.pth")
        return root

    return make


# a process that takes the lock of a folder (slkd.engine.runlock), says so, and waits to be killed
_HOLDER = r"""
import sys, time
from slkd.engine.runlock import FolderLock
lock = FolderLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


class FolderHolder:
    """Another process holding the lock of ``folder`` until :meth:`kill` (SIGKILL: it leaves its
    lock file behind, as a crash would)."""

    def __init__(self, folder: Path) -> None:
        import os
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def holder():
    """``holder(folder)``: a :class:`FolderHolder` of ``folder``; killed at the end of the test."""
    held: list[FolderHolder] = []

    def hold(folder: Path) -> FolderHolder:
        held.append(FolderHolder(folder))
        return held[-1]

    yield hold
    for h in held:
        h.kill()
