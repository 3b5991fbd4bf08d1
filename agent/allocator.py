"""Bounds glibc's malloc arenas, so that a long-running agent's resident memory stays flat.

glibc gives threads their own arenas, up to 8 per core. The agent runs many threads that
allocate frame-sized buffers: FFmpeg's decoders (several per camera), ONNX Runtime's workers,
the capture and publisher threads. Freed memory then sits scattered over many arenas, and
the process's RSS creeps up by tens of MiB an hour, more on a busy box where threads contend
for arenas more often. Two arenas keep it flat at no measurable cost (see
tests/pipeline/RESULTS.md, memory soak).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ENV = "MALLOC_ARENA_MAX"


def bound_malloc_arenas(arenas: int = 2) -> bool:
    """Limit glibc to `arenas` malloc arenas from now on (threads started later share them).

    Returns False, changing nothing, where the C library is not glibc or where the
    MALLOC_ARENA_MAX environment variable already sets the limit (the operator's choice wins).
    Call it at start-up, before the capture and inference threads exist.
    """
    if not sys.platform.startswith("linux") or os.environ.get(ENV):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no arenas to bound
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(arenas)))
