"""The C allocator set for tensor work: large blocks are kept and reused, not handed back.

glibc serves every block over 32 MB (a batch of 64 dies at 256 px is 50 MB) with a fresh
mmap and unmaps it when it is freed, so each training or scoring step faults its memory in
again, page by page. Where the page cache fills the RAM every fault also reclaims a page:
on two cores the kernel then took half of the golden-die comparison's time (453 ms per 64
dies, 219 ms with large blocks kept on the heap).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # free heap kept before any is handed back, in bytes


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve large blocks from the heap and keep up to 1 GiB of it free.

    Returns: whether the setting applied (False on another C library or platform).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
