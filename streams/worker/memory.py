"""The worker's memory: glibc's mmap threshold fixed, so that RocksDB's write
buffers do not fragment the heap; and what RocksDB and glibc say they hold, as
metrics (`StoreMemory`, `AllocatorMemory`).

glibc serves a block at or above its mmap threshold (128 KiB) with its own `mmap`,
returned to the system when freed, and raises the threshold to the size of each
mmapped block freed (up to 32 MiB; `mallopt(3)`, M_MMAP_THRESHOLD, "dynamic mmap
threshold"). RocksDB allocates its memtables in blocks of that order and frees them
at every flush; once the threshold has risen, those blocks come from the brk heap,
which is only given back from its top, and the heap grows while the worker runs.
Measured with `make soak` (the worker's RSS by kind of mapping each minute):
the brk heap grew +0.301 MB/min ± 0.092 over minutes 6-20, the rest was flat; with
the threshold fixed (`MALLOC_MMAP_THRESHOLD_=131072`, which `mallopt` sets the
same way) the heap stayed at 49.3-49.5 MB from the fourth minute on.

Setting the threshold turns the adjustment off. An operator's own
`MALLOC_MMAP_THRESHOLD_` is left as it is; another C library (no `mallopt`) is
left alone."""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default, kept fixed


def fix_mmap_threshold(environ: dict[str, str] | None = None) -> bool:
    """Fix glibc's mmap threshold at 128 KiB for this process; whether it was set
    (False under another C library, or when `MALLOC_MMAP_THRESHOLD_` is set)."""
    if "MALLOC_MMAP_THRESHOLD_" in (os.environ if environ is None else environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


# RocksDB's own account of a database's memory (`DB::GetIntProperty`; RocksDB wiki,
# "Memory usage in RocksDB"), by the kind `sizer_store_memory_bytes` labels it
STORE_PROPERTIES = {
    "memtables": "rocksdb.cur-size-all-mem-tables",  # write buffers, active and waiting for flush
    "table_readers": "rocksdb.estimate-table-readers-mem",  # index and filter blocks of the open SST files
    "block_cache": "rocksdb.block-cache-usage",
}


class StoreMemory(Collector):
    """`sizer_store_memory_bytes{table, kind}`: the memory RocksDB holds for each
    table's local stores, summed over its open databases (one per partition), by
    kind (`STORE_PROPERTIES`), read at each scrape. `databases()` gives (table name,
    database) pairs; a database that cannot answer (closed meanwhile) is left out."""

    def __init__(self, databases: Callable[[], Iterable[tuple[str, Any]]]) -> None:
        self.databases = databases

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily("sizer_store_memory_bytes", STORE_MEMORY_HELP, labels=["table", "kind"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        totals: dict[tuple[str, str], int] = {}
        for table, db in self.databases():
            for kind, name in STORE_PROPERTIES.items():
                try:
                    value = db.property_int_value(name)
                except Exception:  # noqa: BLE001 - a database closed by a rebalance meanwhile
                    continue
                if value is not None:
                    totals[table, kind] = totals.get((table, kind), 0) + value
        family = GaugeMetricFamily("sizer_store_memory_bytes", STORE_MEMORY_HELP, labels=["table", "kind"])
        for (table, kind), value in sorted(totals.items()):
            family.add_metric([table, kind], value)
        return [family]


STORE_MEMORY_HELP = ("Memory RocksDB holds for a table's local stores, by kind: memtables, table_readers "
                     "(index and filter blocks), block_cache")


def malloc_arenas() -> dict[tuple[str, str], int]:
    """glibc's account of the process's allocator (`malloc_info(3)`), in bytes, keyed
    (arena, kind): arena "main" (the brk heap) or "threads" (the arenas of other
    threads, mmapped heaps: RocksDB's flush and compaction threads allocate there),
    kind "system" (obtained from the system) or "free" (held, not in use); and
    ("mmapped", "system"), the blocks at or above the mmap threshold. Empty under
    another C library."""
    import tempfile
    import xml.etree.ElementTree as ElementTree

    try:
        libc = ctypes.CDLL(None)
        malloc_info, fopen, fclose = libc.malloc_info, libc.fopen, libc.fclose
    except (OSError, AttributeError):
        return {}
    fopen.restype, fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
    malloc_info.argtypes, fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(prefix="sizer-malloc-") as out:
        stream = fopen(out.name.encode(), b"w")
        if not stream:
            return {}
        malloc_info(0, stream)
        fclose(stream)
        root = ElementTree.fromstring(out.read())
    totals: dict[tuple[str, str], int] = {}
    for heap in root.iter("heap"):
        arena = "main" if heap.get("nr") == "0" else "threads"
        free = sum(int(total.get("size", 0)) for total in heap.findall("total") if total.get("type") in ("fast", "rest"))
        system = next((int(s.get("size", 0)) for s in heap.findall("system") if s.get("type") == "current"), 0)
        totals[arena, "system"] = totals.get((arena, "system"), 0) + system
        totals[arena, "free"] = totals.get((arena, "free"), 0) + free
    mmapped = next((int(t.get("size", 0)) for t in root.findall("total") if t.get("type") == "mmap"), 0)
    totals["mmapped", "system"] = mmapped
    return totals


class AllocatorMemory(Collector):
    """`sizer_malloc_bytes{arena, kind}` (`malloc_arenas`), read at each scrape: which
    of glibc's arenas holds the process's memory, and how much of it is free."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily("sizer_malloc_bytes", MALLOC_HELP, labels=["arena", "kind"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("sizer_malloc_bytes", MALLOC_HELP, labels=["arena", "kind"])
        for (arena, kind), value in sorted(malloc_arenas().items()):
            family.add_metric([arena, kind], value)
        return [family]


MALLOC_HELP = ("glibc's allocator, by arena (main: the brk heap; threads: other threads' arenas; mmapped: "
               "blocks at or above the mmap threshold) and kind (system: obtained from the system; free: "
               "held, not in use)")
