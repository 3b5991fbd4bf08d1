"""The agent bounds glibc's malloc arenas: threads started afterwards share two arenas."""

import subprocess
import sys

import pytest

# Eight live threads allocate; glibc's malloc_info lists one <heap> per arena.
PROBE = r"""
import ctypes, os, sys, tempfile, threading
from agent.allocator import bound_malloc_arenas
bound = bound_malloc_arenas() if sys.argv[1] == "bound" else False
keep = []
together = threading.Barrier(8)
def work():
    together.wait()  # all alive at once: glibc reuses the arena of a thread that has ended
    keep.append([bytearray(4096) for _ in range(200)])
    together.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print(bound, open(path).read().count("<heap nr="))
os.unlink(path)
"""


def arenas(mode: str, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_threads_share_two_arenas_once_bounded():
    import os

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert arenas("bound", env) == ("True", 2)
    free_bound, free_count = arenas("default", env)
    assert free_bound == "False" and free_count > 2  # unbounded: a new arena per thread
    # An operator's MALLOC_ARENA_MAX wins: the call changes nothing.
    assert arenas("bound", {**env, "MALLOC_ARENA_MAX": "4"})[0] == "False"
