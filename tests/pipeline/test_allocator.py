"""The agent tunes glibc's malloc (agent/allocator.py): threads started afterwards share two arenas,
and large blocks stay mappings of their own, returned to the system when freed."""

import os
import subprocess
import sys

import pytest

# Eight live threads allocate (glibc's malloc_info lists one <heap> per arena); then a 512 KiB
# block is allocated after a 4 MiB one was freed, which makes an untuned glibc raise its mmap
# threshold and serve the 512 KiB from the heap (mallinfo2's hblks: mmapped blocks).
PROBE = r"""
import ctypes, os, sys, tempfile, threading
from pantau.agent.allocator import limit_heap_growth
changed = limit_heap_growth() if sys.argv[1] == "tuned" else []
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
heaps = open(path).read().count("<heap nr=")
os.unlink(path)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                                "fsmblks uordblks fordblks keepcost").split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free(ctypes.c_void_p(libc.malloc(4 << 20)))
before = libc.mallinfo2().hblks
block = libc.malloc(512 << 10)
print(",".join(changed) or "-", heaps, libc.mallinfo2().hblks - before)
"""


def probe(mode: str, **env: str) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    ).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_two_arenas_and_large_blocks_mapped_once_tuned():
    assert probe("tuned") == ("arenas=2,mmap_threshold=131072", 2, 1)
    changed, heaps, mapped = probe("untuned")
    assert heaps > 2  # a new arena per live thread
    assert mapped == 0  # the sliding threshold put the 512 KiB block on the heap
    # An operator's environment wins, setting by setting.
    changed, heaps, mapped = probe("tuned", MALLOC_ARENA_MAX="4")
    assert changed == "mmap_threshold=131072" and 2 < heaps <= 4 and mapped == 1
