"""Keep glibc's allocator from handing tensor memory back to the kernel after every free.

PyTorch on CPU allocates activations and gradients with plain ``malloc``. With glibc's defaults
a freed block above the mmap threshold (128 KiB, raised dynamically up to 32 MiB) goes back to
the kernel, and free memory at the top of the heap is trimmed above 2 × that threshold, so the
next forward pass faults the same pages in again and the kernel zero-fills them: on a 2-core
machine about half of a student's CPU inference time was page faults (measured before and after
in BENCHMARKS.md §8).

:func:`tune_allocator` fixes the mmap threshold at its 32 MiB maximum and the trim threshold at
2 GiB, so blocks up to 32 MiB are reused from the heap and at most 2 GiB of free heap is kept
for the next step. Blocks above 32 MiB are still mapped and unmapped each time (never mapping
them was faster again but raised peak memory a lot through fragmentation). The cost is a few
percent of peak memory (BENCHMARKS.md §8) and freed memory held until the process ends — the usual trade for a process that repeats the same work, and
what the jemalloc/tcmalloc preloads that PyTorch's CPU tuning guides recommend also do.

It is applied by the ``slkd`` command (every sub-command, every ``torchrun`` rank) and by the
benchmarks, and left alone when:

* the C library is not glibc (musl, macOS, Windows): nothing to tune, or no ``mallopt``;
* ``SLKD_TUNE_MALLOC=0`` is set;
* the user already tunes the allocator: any ``MALLOC_*`` or ``GLIBC_TUNABLES`` variable, or a
  ``jemalloc`` / ``tcmalloc`` / ``mimalloc`` in ``LD_PRELOAD``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "allocator_status", "tune_allocator"]

#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD = 32 * 2**20
#: free heap kept for reuse before glibc trims it (mallopt takes a C int)
TRIM_THRESHOLD = 2**31 - 1
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")

_status: str | None = None


def _skip_reason(environ) -> str | None:
    if environ.get("SLKD_TUNE_MALLOC", "1").strip() == "0":
        return "off (SLKD_TUNE_MALLOC=0)"
    tuned = sorted(k for k in environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")
    if tuned:
        return f"left to the environment ({', '.join(tuned)})"
    preload = environ.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return f"left to the preloaded {name}"
    return None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no gnu_get_libc_version
        return None
    version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return version().decode(), mallopt


def tune_allocator(environ=None) -> str:
    """Apply the thresholds once per process (see the module docstring); returns what was done,
    e.g. ``"glibc 2.36: mmap threshold 32 MiB, trim threshold 2 GiB"``, or why nothing was."""
    global _status
    if _status is not None and environ is None:
        return _status
    reason = _skip_reason(os.environ if environ is None else environ)
    if reason is None:
        glibc = _glibc()
        if glibc is None:
            reason = "not glibc: left as it is"
        else:
            version, mallopt = glibc
            if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
                reason = f"glibc {version}: mmap threshold 32 MiB, trim threshold 2 GiB"
            else:
                reason = f"glibc {version}: mallopt refused the thresholds; left as it is"
    if environ is None:
        _status = reason
    return reason


def allocator_status() -> str:
    """What :func:`tune_allocator` did in this process ("default" if it was not called)."""
    return _status or "default"
