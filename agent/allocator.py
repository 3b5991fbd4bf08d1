"""Tunes glibc's malloc at start-up so that a long-running agent's resident memory stays flat.

Two glibc behaviours let the agent's RSS creep up by tens of MiB an hour (measured in
tests/pipeline/RESULTS.md, memory soak):

- Arenas: glibc gives threads their own arenas, up to 8 per core, and the agent runs many
  threads that allocate (FFmpeg's decoders, ONNX Runtime's workers, capture and publisher
  threads); freed memory then sits scattered over many arenas.
- The sliding mmap threshold: blocks above 128 KiB start out as their own mmap, returned to
  the system when freed, but each such free raises the threshold (up to 32 MiB), after which
  frames, letterbox canvases and batches of every size come from the heap and fragment it.
  The detector's inputs vary (batch sizes, aspect ratios), so the holes never fit again.

The agent bounds the arenas to two and pins the threshold at glibc's initial 128 KiB.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
M_ARENA_MAX = -8
ARENA_ENV = "MALLOC_ARENA_MAX"
MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def limit_heap_growth(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> list[str]:
    """Bound glibc's malloc arenas to `arenas` and pin its mmap threshold at
    `mmap_threshold` bytes, from now on; returns the settings it changed.

    Changes nothing where the C library is not glibc, and leaves a setting alone where its
    environment variable (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) already sets it: the
    operator's choice wins. Call it at start-up, before the capture and inference threads
    exist.
    """
    if not sys.platform.startswith("linux"):
        return []
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return []
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: nothing to tune
        return []
    changed = []
    if not os.environ.get(ARENA_ENV) and libc.mallopt(M_ARENA_MAX, int(arenas)):
        changed.append(f"arenas={arenas}")
    if not os.environ.get(MMAP_ENV) and libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)):
        changed.append(f"mmap_threshold={mmap_threshold}")
    return changed
