"""Process-wide memory-allocator setting for fast CPU scoring and training.

glibc serves every allocation above its mmap threshold (which adapts, up to 32 MB) with fresh
pages from the kernel and returns them on free. One activation of a batch of 16 faces in an
iResNet stem is 51 MB (16 x 64 x 112 x 112 float32), so without this every such tensor is
page-faulted in anew: elementwise ops there ran 3-5x slower, the whole iresnet50 scorer 1.1-1.2x
slower and CPU training steps 1.3x slower (benchmarks/RESULTS.md). score.py, ablate.py and
train_fr.py call `retain_freed_memory` first thing. The price is a somewhat higher peak (the
iresnet50 benchmark process: 1.95 GB -> 2.1-2.2 GB at batch 16); it still does not grow with the
number of images scored.
"""
from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h


def retain_freed_memory() -> bool:
    """Serve allocations up to 1 GiB from the heap and keep up to 2 GiB of freed heap memory.

    Returns False (and changes nothing) where the C library is not glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
