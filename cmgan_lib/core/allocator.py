"""Keep freed memory in the process: glibc's defaults page-fault every large tensor in anew.

Training allocates and frees tensors of tens of MB each step (the attention logits). glibc serves such
blocks with mmap and gives them back to the OS on free, so the next step faults every page in again: on the
2-core CPU half of a tiny step's wall time was kernel time (issue 19). Raising the mmap and trim thresholds
keeps the blocks in the heap for reuse. Applied once, when cmgan_lib is imported, so every process the
project starts (trainer, PESQ workers, notebooks, tests) gets it; `CMGAN_MALLOC_TUNING=0` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

SETTINGS = {
    M_MMAP_THRESHOLD: 2**31 - 1,  # never mmap a block for itself (also fixes the threshold: no dynamic rise)
    M_TRIM_THRESHOLD: 2**31 - 1,  # never hand the heap's top back to the OS
    M_TOP_PAD: 512 << 20,  # grow the heap in 512 MB steps (address space; pages are touched only when used)
}

_applied: bool | None = None


def tune_allocator() -> bool:
    """Apply SETTINGS through glibc's mallopt; True when applied. A no-op off glibc or when opted out."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("CMGAN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    if not ok:  # an older glibc caps the mmap threshold at 32 MB: stop mmap for large blocks instead
        ok = mallopt(M_MMAP_MAX, 0) == 1
    _applied = ok
    return ok


def applied() -> bool:
    """Whether this process runs with the tuned allocator."""
    return bool(_applied)
