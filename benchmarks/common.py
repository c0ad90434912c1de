"""What every benchmark report shares: the machine description and writing the JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def machine(**extra) -> dict:
    """CPU count, platform, torch and Python versions (plus ``extra`` keys)."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "python": platform.python_version(), **extra}


def write_report(path: str | Path, report: dict) -> Path:
    """Write ``report`` as indented JSON to ``path`` (folders created) and say so."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return out


@dataclass(frozen=True)
class ChildRun:
    """What one ``slkd`` child process did: exit code, peak RSS, wall-clock, stderr."""

    exit_code: int
    peak_rss_bytes: float
    seconds: float
    stderr: str


def run_slkd_child(args: list[str], threads: int | None = None) -> ChildRun:
    """Run ``python -m slkd.cli.main ARGS`` in a fresh process (``OMP_NUM_THREADS=threads`` if
    given) and measure it; its own peak RSS comes from ``wait4`` (Linux reports KiB)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "slkd.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return ChildRun(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024.0, seconds, stderr)
