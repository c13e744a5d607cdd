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


# What RocksDB and glibc say the worker holds, as metrics: checked on real databases and
# on real allocations, against sizes the test chose.

def families(collector) -> dict[tuple[str, ...], float]:
    return {tuple(sample.labels.values()): sample.value for family in collector.collect() for sample in family.samples}


def test_the_memory_of_each_tables_stores_is_rocksdbs_summed_over_its_databases(tmp_path):
    import rocksdict

    from streams.worker.memory import StoreMemory

    class Closed:
        def property_int_value(self, name):
            raise Exception("DB is closed")

    databases = {name: rocksdict.Rdict(str(tmp_path / name)) for name in ("a0", "a1", "b0")}
    try:
        for name, size in (("a0", 300_000), ("a1", 500_000), ("b0", 1_000)):
            databases[name][b"key"] = b"x" * size
        collector = StoreMemory(lambda: [("exposure", databases["a0"]), ("exposure", databases["a1"]),
                                         ("windows", databases["b0"]), ("windows", Closed())])
        found = families(collector)
        for table, names, size in (("exposure", ("a0", "a1"), 800_000), ("windows", ("b0",), 1_000)):
            expected = sum(databases[name].property_int_value("rocksdb.cur-size-all-mem-tables") for name in names)
            assert found[table, "memtables"] == expected
            assert size <= found[table, "memtables"] < size + 3 * 2**20, (table, found)
        assert {kind for _, kind in found} == {"memtables", "table_readers", "block_cache"}
    finally:
        for db in databases.values():
            db.close()


@pytest.mark.skipif(not glibc(), reason="malloc_info is glibc's")
def test_glibcs_account_names_a_block_it_mmapped_and_the_threads_arenas():
    import ctypes
    import threading

    from streams.worker.memory import malloc_arenas

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = malloc_arenas()
    block = libc.malloc(64 << 20)  # far above any mmap threshold: mmapped
    try:
        during = malloc_arenas()
        assert during["mmapped", "system"] - before["mmapped", "system"] >= 64 << 20
    finally:
        libc.free(block)
    assert malloc_arenas()["mmapped", "system"] < during["mmapped", "system"]
    # a block allocated on another thread comes from another arena than the main one
    blocks = []
    thread = threading.Thread(target=lambda: blocks.append(libc.malloc(1000)))
    thread.start()
    thread.join()
    after = malloc_arenas()
    libc.free(blocks[0])
    assert after["threads", "system"] > 0 and after["main", "system"] > 0
    assert 0 <= after["main", "free"] <= after["main", "system"]


def test_the_worker_serves_its_stores_and_allocators_memory(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from streams.config import load_config
    from streams.kafka.topics import load_topics
    from streams.worker.app import build_app
    from streams.worker.settings import WorkerSettings

    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path)
    registry = CollectorRegistry()
    app = build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), registry)
    app.tables["windows"].data._db_for_partition(3)[b"k"] = b"v" * 200_000
    served = generate_latest(registry).decode()
    memtables = [line for line in served.splitlines()
                 if line.startswith('sizer_store_memory_bytes{kind="memtables",table="windows"}')]
    assert len(memtables) == 1 and float(memtables[0].split()[-1]) >= 200_000, served
    if glibc():
        assert 'sizer_malloc_bytes{arena="main",kind="system"}' in served


def memtables_after_writes(tmp_path, budget_mb: int, megabytes: int = 20) -> tuple[float, int]:
    """The worker's stores written `megabytes` of 1 kB values round all 30 databases:
    their memtables' total (MB) and their count."""
    import os

    from prometheus_client import CollectorRegistry

    from streams.config import load_config
    from streams.kafka.topics import load_topics
    from streams.worker.app import build_app
    from streams.worker.settings import WorkerSettings

    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path, store_write_buffer_mb=budget_mb)
    app = build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), CollectorRegistry())
    databases = [table.data._db_for_partition(p) for table in app.tables.values() for p in range(6)]
    for n in range(megabytes * 1024):
        databases[n % len(databases)][os.urandom(8)] = os.urandom(1000)
    total = sum(db.property_int_value("rocksdb.cur-size-all-mem-tables") for db in databases) / 2**20
    for db in databases:
        db.close()
    return total, len(databases)


def test_one_write_buffer_budget_bounds_the_memtables_of_every_store_together(tmp_path):
    own, count = memtables_after_writes(tmp_path / "own", 0)
    shared, _ = memtables_after_writes(tmp_path / "shared", 4)
    # each database alone holds what was written to it (4 MB buffers, 0.7 MB each here)
    assert own >= 19.5, own
    # shared: the budget, past which RocksDB flushes the database written to, plus at most
    # one arena block (an eighth of a 4 MB buffer) kept by each database
    assert shared <= 4 + count * 0.5 + 1, shared


def test_a_write_buffer_budget_that_is_not_a_whole_number_of_megabytes_stops_start_up(monkeypatch):
    from streams.errors import ConfigError
    from streams.worker.settings import load_settings

    for value in ("-1", "1.5", "lots"):
        monkeypatch.setenv("SIZER_STORE_WRITE_BUFFER_MB", value)
        with pytest.raises(ConfigError, match="store_write_buffer_mb"):
            load_settings()
