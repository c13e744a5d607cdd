"""The worker's local stores (faust's RocksDB `Store`, one database per table
partition): the databases open, and one budget for all their write buffers.

faust-streaming 0.15.3 builds each database's options itself
(`RocksDBOptions.as_options`) from a fixed set of keys, so each database keeps
its own write buffers (the worker's: `streams.worker.app.store_options`). A
buffer is memory until it fills and is flushed, so a table written slowly holds
memory rising for as long as its buffers take to fill: with 30 databases the
worker's memory keeps rising long after the start. RocksDB's answer is one
`WriteBufferManager` shared by every database (RocksDB wiki, "Write Buffer
Manager"): once the buffers of all of them pass the budget, the largest is
flushed. `share_write_buffers` gives every table's options that manager.
"""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import RocksDBOptions


def open_databases(app: Any) -> list[tuple[str, Any]]:
    """(table name, RocksDB database) of every local store partition the app has open
    (faust's `Store._dbs`); none for a store that is not RocksDB."""
    return [(table.name, db) for table in app.tables.values()
            for db in list(getattr(table.data, "_dbs", {}).values())]


class SharedBufferOptions(RocksDBOptions):
    """faust's options of a store's databases, with `manager` (a rocksdict
    WriteBufferManager) accounting for their write buffers."""

    manager: Any

    def as_options(self) -> Any:
        options = super().as_options()
        options.set_write_buffer_manager(self.manager)
        return options


def share_write_buffers(tables: Any, budget_bytes: int) -> Any:
    """Give the local stores of `tables` (faust tables, RocksDB stores through rocksdict,
    none open yet) one write-buffer budget of `budget_bytes`; the manager, or None when
    the budget is 0 or a store is not RocksDB's through rocksdict (left as it is)."""
    import rocksdict

    stores = [table.data for table in tables]
    if budget_bytes <= 0 or not all(isinstance(getattr(store, "rocksdb_options", None), RocksDBOptions)
                                    and store.rocksdb_options.use_rocksdict for store in stores):
        return None
    manager = rocksdict.WriteBufferManager(budget_bytes, False)
    for store in stores:
        shared = SharedBufferOptions.__new__(SharedBufferOptions)
        shared.__dict__.update(vars(store.rocksdb_options))
        shared.manager = manager
        store.rocksdb_options = shared
    return manager
