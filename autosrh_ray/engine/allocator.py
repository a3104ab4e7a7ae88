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
import math
import mmap
import sys
from typing import Optional

import numpy as np
import torch

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


CHUNK_BYTES = 64 << 20  # a MappedArena maps this much at a time
ALIGN = 64


class MappedArena:
    """Long-lived tensors outside the malloc heap: carved in order from anonymous memory maps of
    :data:`CHUNK_BYTES` (or one of the tensor's size when larger), unmapped when the last tensor of a map dies.

    Why: with large freed blocks kept in the heap (:func:`keep_large_blocks`), a small allocation that lives long
    (a cached batch) pins the heap region around it, and the step's large transient tensors can no longer reuse
    that region — each takes a fresh one. In a Ray Train worker (its loop runs in a thread, whose glibc arena grows
    in 64 MiB heaps that are then never returned) the 10M-row search's worker grew to 9 GiB of heaps while its
    validation caches (1 GiB) filled; a probe of that pattern (a 2 MiB tensor kept per step beside 58 + 41 MiB
    transients, 300 steps in a thread) held 13 GiB in the heap and 1.5 GiB with the kept tensors mapped here."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES):
        self.chunk_bytes = chunk_bytes
        self._chunk: Optional[np.ndarray] = None
        self._offset = 0

    def empty(self, shape: tuple[int, ...] | int, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` and ``dtype`` in mapped memory."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = math.prod(shape)
        nbytes = count * torch.empty(0, dtype=dtype).element_size()
        if self._chunk is None or self._offset + nbytes > self._chunk.nbytes:
            self._chunk = np.frombuffer(mmap.mmap(-1, max(self.chunk_bytes, nbytes, 1)), dtype=np.uint8)
            self._offset = 0
        view = self._chunk[self._offset:self._offset + nbytes]
        self._offset += -(-nbytes // ALIGN) * ALIGN
        return torch.from_numpy(view).view(dtype).reshape(shape)

    def copy(self, tensor: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``tensor`` copied into mapped memory (cast to ``dtype`` on the way, if given)."""
        out = self.empty(tuple(tensor.shape), dtype or tensor.dtype)
        out.copy_(tensor)
        return out


class MappedVector:
    """A float64 vector appended to batch by batch (a split's predictions), in anonymous maps that double as it
    grows: one buffer, not one small array per batch. Small arrays kept across a loop of large transients split
    the transients' freed blocks in the heap, so each next transient takes a fresh region: evaluating 4.5M rows
    (1,099 batches of 4,096) grew a Ray Train worker by 14 GiB that way."""

    def __init__(self, capacity: int = 1 << 16):
        self._data = self._mapped(capacity)
        self.size = 0

    @staticmethod
    def _mapped(capacity: int) -> np.ndarray:
        return np.frombuffer(mmap.mmap(-1, capacity * 8), dtype=np.float64)

    def extend(self, values: np.ndarray) -> None:
        n = self.size + len(values)
        if n > len(self._data):
            grown = self._mapped(max(n, 2 * len(self._data)))
            grown[:self.size] = self._data[:self.size]
            self._data = grown
        self._data[self.size:n] = values
        self.size = n

    def array(self) -> np.ndarray:
        """The values appended so far (a view of the mapped buffer)."""
        return self._data[:self.size]
