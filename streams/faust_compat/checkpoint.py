"""What of faust's local table stores holds committed state only, and at which
changelog offsets: the contents of the worker's checkpoint
(`streams.worker.checkpoint`).

faust-streaming 0.15.3 under exactly-once records a table write's changelog offset
for "persisting on commit" (`TableManager.persist_offset_on_commit`, keyed by the
changelog partition) but writes those offsets on commit only for the *input*
partitions it commits (`TableManager.on_commit`): the keys never meet, and an
active partition's store never learns how far its changelog was written. Its
recovery after a restart then reads every changelog from the start. Here, once
the worker's last transaction is committed, the offsets recorded for its active
partitions are written to their stores, as faust means to.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class StoreEntry(NamedTuple):
    """One partition's local store: its directory's name (under the table dir), its
    changelog partition, and the offset of the last changelog record it holds (None:
    none)."""

    directory: str
    topic: str
    partition: int
    offset: int | None


def committed_stores(app: Any) -> list[StoreEntry]:
    """The local stores of every table partition assigned to the app (active and
    standby), their active partitions' committed offsets written to them first. Call
    only once every table write is in a committed transaction: a standby's store
    holds read_committed changelog records, an active's its committed writes."""
    tables = app.tables
    assigned = set(app.assignor.assigned_actives()) | set(app.assignor.assigned_standbys())
    pending = tables._pending_persisted_offsets
    entries = []
    for table in tables.values():
        store = table.data
        topic = table.changelog_topic_name
        for tp in sorted(tp for tp in assigned if tp.topic == topic):
            if tp in pending:
                store.set_persisted_offset(tp, pending[tp][1])
            entries.append(StoreEntry(store.partition_path(tp.partition).name, topic, tp.partition,
                                      store.persisted_offset(tp)))
    return entries

