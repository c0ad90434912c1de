"""slkd.engine.allocator: glibc keeps freed tensor memory for reuse instead of faulting it in
again every forward pass; the user's own allocator settings win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from slkd.engine.allocator import tune_allocator

#: each test measures page faults in a fresh child process
pytestmark = pytest.mark.slow

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# a second forward pass of a small student, counting the minor page faults it causes
FAULTS = """
import resource, torch
from slkd.engine.allocator import tune_allocator
from slkd.models import build_model
print(tune_allocator())
torch.set_num_threads(1)
m = build_model("res-sl-tiny").eval()
x = torch.rand(1, 3, 128, 128)
with torch.inference_mode():
    m(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        m(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def _child(**env) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items()
             if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD", "SLKD_TUNE_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", FAULTS], env={**clean, **env}, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split("\n")
    return out[0], float(out[1])


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc only")
def test_tuned_allocator_stops_the_page_faults_of_repeated_forwards():
    status, faults = _child()
    assert status.startswith("glibc ") and status.endswith("mmap threshold 32 MiB, trim threshold 2 GiB")
    off_status, off_faults = _child(SLKD_TUNE_MALLOC="0")
    assert off_status == "off (SLKD_TUNE_MALLOC=0)"
    # glibc's defaults give back and re-fault ~11k pages per 128² forward of res-sl-tiny
    assert off_faults > 1000 and faults < off_faults / 5, (faults, off_faults)


def test_the_users_own_allocator_settings_win():
    assert tune_allocator({"SLKD_TUNE_MALLOC": "0"}) == "off (SLKD_TUNE_MALLOC=0)"
    assert tune_allocator({"MALLOC_ARENA_MAX": "2", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) == \
        "left to the environment (GLIBC_TUNABLES, MALLOC_ARENA_MAX)"
    assert tune_allocator({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}) == \
        "left to the preloaded jemalloc"
    status = tune_allocator({})
    assert status.startswith("glibc ") if GLIBC else status == "not glibc: left as it is"
