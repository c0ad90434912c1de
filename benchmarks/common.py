"""What every benchmark report shares: the machine description and writing the JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from slkd.engine.allocator import allocator_status, tune_allocator

# what `slkd` does at start-up (every benchmark measures the library as users run it)
tune_allocator()


def machine(**extra) -> dict:
    """CPU count, platform, torch and Python versions (plus ``extra`` keys)."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "python": platform.python_version(),
            "allocator": allocator_status(), **extra}


def refuse_existing(path: str | Path, overwrite: bool, option: str = "--json") -> Path:
    """Every benchmark's default output is a committed result: an existing file is replaced only
    with ``--overwrite``. Checked before anything runs (exit 2, one line), so a rerun never
    replaces a measurement by accident."""
    out = Path(path)
    if out.is_dir():
        print(f"error: {option} {out} is a folder; give a file name", file=sys.stderr)
        raise SystemExit(2)
    if (out.exists() or out.is_symlink()) and not overwrite:
        print(f"error: {out} exists (a committed result?); pass --overwrite to replace it, or "
              f"{option} to write elsewhere (nothing was run)", file=sys.stderr)
        raise SystemExit(2)
    return out


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


#: Runs a module as ``__main__`` and, at exit, writes the process's own peak RSS (``VmHWM`` of
#: /proc/self/status, KiB) to the file named by $SLKD_PEAK_FILE. ``wait4``'s ``ru_maxrss`` is not
#: used: Linux carries the pre-exec address space's high-water mark across ``exec``, and with
#: ``vfork`` that is the *parent's* peak, so a large benchmark process inflates every child.
_PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open('/proc/self/status') as f:
        kib = next((l.split()[1] for l in f if l.startswith('VmHWM:')), '')
    with open(os.environ['SLKD_PEAK_FILE'], 'w') as f:
        f.write(kib)
atexit.register(_peak)
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def run_measured_child(module: str, args: list[str], threads: int | None = None) -> ChildRun:
    """Run ``python -m MODULE ARGS`` in a fresh process (``OMP_NUM_THREADS=threads`` if given)
    and measure its wall-clock and its own peak resident set size."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        env["SLKD_PEAK_FILE"] = str(peak_file)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _PEAK_WRAPPER, module, *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, stderr = proc.communicate()
        seconds = time.perf_counter() - start
        kib = peak_file.read_text().strip() if peak_file.is_file() else ""
    peak = float(kib) * 1024.0 if kib else float("nan")  # no /proc (not Linux): unknown
    return ChildRun(proc.returncode, peak, seconds, stderr.decode(errors="replace"))


def run_slkd_child(args: list[str], threads: int | None = None) -> ChildRun:
    """Run ``python -m slkd.cli.main ARGS`` in a fresh process and measure it
    (:func:`run_measured_child`)."""
    return run_measured_child("slkd.cli.main", args, threads)
