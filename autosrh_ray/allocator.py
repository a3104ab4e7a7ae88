"""Keep large freed blocks in the process heap instead of giving them back to the OS after every step.

glibc's malloc serves a block above its mmap threshold (at most 32 MB under its dynamic rule) with a fresh
``mmap`` and unmaps it on free. A training step of the paper's Criteo setting allocates several (B, F, K) tensors
of that size (4096 × 39 × 64 floats = 41 MB), so every step page-faulted each of them in again: 2.5M minor page
faults in 24 FM steps, and the step spent more time faulting than computing. With large blocks kept in the heap,
FM K 64 on one thread: UE step 198 → 90 ms, first-order search step 528 → 171 ms (``benchmarks/allocator.py``).
The price is resident memory: up to the trim threshold of freed heap stays mapped (that benchmark's process:
peak RSS 768 → 1,135 MiB). Only glibc (Linux) is tuned; elsewhere this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 256 << 20  # blocks up to this come from the heap (a (B, F, K) batch tensor is tens of MB)
TRIM_THRESHOLD = 512 << 20  # free heap above this is returned to the OS
TOP_PAD = 64 << 20  # the heap grows by at least this much at a time

_applied: Optional[bool] = None


def keep_large_blocks() -> bool:
    """Tune this process's glibc malloc for training steps (once per process); whether it was applied."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _applied = all(libc.mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                                    (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                                                    (M_TOP_PAD, TOP_PAD)))
            except (OSError, AttributeError):  # not glibc (musl has no mallopt): left as it is
                pass
    return _applied
