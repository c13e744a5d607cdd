"""The worker's allocator setting (streams/worker/memory.py), checked on glibc's own
behaviour in a fresh interpreter: a 1 MiB block freed raises the dynamic mmap
threshold, so the next 1 MiB block comes from the brk heap; with the threshold
fixed it is mmapped again."""

import subprocess
import sys

import pytest

from streams.worker.memory import fix_mmap_threshold

PROBE = """
import ctypes, sys
from streams.worker.memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold({})
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(1 << 20))  # a mmapped block freed: glibc raises its threshold past 1 MiB
block = libc.malloc(1 << 20)
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
print("heap" if any(int(lo, 16) <= block < int(hi, 16) for lo, hi in heap) else "mmap")
"""


def glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc(), reason="the setting is glibc's")
@pytest.mark.parametrize("threshold, where", [("dynamic", "heap"), ("fixed", "mmap")])
def test_a_large_block_stays_out_of_the_heap_once_the_threshold_is_fixed(threshold, where):
    probe = subprocess.run([sys.executable, "-c", PROBE, threshold], capture_output=True, text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == where


def test_an_operators_own_threshold_is_left_as_it_is():
    assert fix_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "262144"}) is False


def test_the_worker_fixes_the_threshold_before_anything_else_at_start_up(monkeypatch):
    """run_worker sets the threshold first: before the registry is asked, the app is
    built or a table is opened (it is passed nothing those steps could use)."""
    from streams.worker import memory, run

    class FixedFirst(Exception):
        pass

    def fixed(environ=None):
        raise FixedFirst

    monkeypatch.setattr(memory, "fix_mmap_threshold", fixed)
    with pytest.raises(FixedFirst):
        run.run_worker(None, None, None)  # type: ignore[arg-type]
