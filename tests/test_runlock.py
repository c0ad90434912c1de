"""One writer per run folder (:mod:`slkd.engine.runlock`): a second process is refused in one line
naming the folder and the PID holding it; a lock left by a process killed with ``kill -9`` does
not block a rerun. Two runs into one folder used to race: the second resumed from the first's
checkpoint while the first kept training, and the checkpoint went backwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slkd.cli.main import main
from slkd.engine.runlock import LOCK_FILE, FolderInUse, FolderLock

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX locks and SIGKILL")

ASSETS = Path(__file__).resolve().parents[1] / "src" / "slkd" / "assets"


def test_a_second_writer_is_refused_naming_the_pid_and_a_killed_one_does_not_block(tmp_path, holder):
    folder = tmp_path / "run"
    other = holder(folder)
    with pytest.raises(FolderInUse, match=rf"{folder} is being written by another process \(PID {other.pid}"):
        FolderLock(folder)
    other.kill()  # kill -9: the lock file stays, with the dead process's PID in it
    assert str(other.pid) in (folder / LOCK_FILE).read_text()
    with FolderLock(folder):  # the operating system released the lock with its process
        assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def test_the_lock_is_reentrant_in_one_process_and_released_with_its_last_holder(tmp_path, holder):
    folder = tmp_path / "run"
    outer = FolderLock(folder)
    inner = FolderLock(folder)  # slkd demo claims its folder, then the pipeline claims it again
    inner.release()
    inner.release()  # once only
    # still held by `outer`: another process is refused …
    probe = subprocess.run([sys.executable, "-c", "import sys; from slkd.engine.runlock import FolderLock; "
                            "FolderLock(sys.argv[1])", str(folder)], capture_output=True, text=True)
    assert probe.returncode != 0 and "FolderInUse" in probe.stderr and f"PID {os.getpid()}" in probe.stderr
    outer.release()
    # … and after the last release it may take it
    other = holder(folder)
    with pytest.raises(FolderInUse):
        FolderLock(folder)
    other.kill()


def test_a_folder_under_a_file_is_one_line(tmp_path):
    (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(Exception, match="weights.pth is a file, not a folder"):
        FolderLock(tmp_path / "weights.pth" / "sub")


def _train_config(tmp_path: Path) -> Path:
    cfg = {"name": "run", "output_dir": str(tmp_path / "runs"), "seed": 0, "model": {"name": "res-sl-tiny"},
           "data": {"root": str(ASSETS), "batch_size": 2,
                    "train": {"type": "degraded", "roots": ["."], "patch_size": 16,
                              "degradation": {"name": "gaussian_noise", "params": {"sigma": 25}}},
                    "val": []},
           "train": {"iters": 2, "log_every": 1, "val_every": 2, "ckpt_every": 1}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_slkd_train_refuses_a_run_folder_another_process_writes(tmp_path, holder, capsys):
    config = _train_config(tmp_path)
    run = tmp_path / "runs" / "run"
    other = holder(run)
    assert main(["train", "--config", str(config), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("slkd train: error: ")
    assert str(run) in line and f"PID {other.pid}" in line
    assert "--resume" not in line and "output_dir" not in line  # no option that would not help
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing was written
    other.kill()
    assert main(["train", "--config", str(config), "--device", "cpu"]) == 0  # a dead holder does not count
    assert (run / "weights.pth").is_file()
