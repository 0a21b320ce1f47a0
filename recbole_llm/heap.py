"""Giving freed heap memory back to the operating system.

glibc's malloc keeps what a process frees for reuse; tensors of many sizes (LLM batches of varying
sequence lengths) fragment that pool, so a fine-tuning process grows far beyond what it holds: one
measured at 15.0 GB resident fell to 3.7 GB after `malloc_trim(0)`. Calling it after each optimiser
step bounds a run by its largest step, at the cost of faulting those pages in again next step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # musl has no malloc_trim
    except OSError:
        return None


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS (glibc `malloc_trim(0)`): True if any were returned;
    False also where there is no glibc."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
