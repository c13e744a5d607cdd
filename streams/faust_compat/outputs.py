"""Sending outputs and table writes inside the input's transaction, past faust.

faust-streaming routes a send to the transactional producer of the *output*
topic's own partition group. A topic the app does not consume (`orders`,
`decisions`, `sizer-dlq`) has no group, so faust sends it with no transactional
id at all: outside the transaction that commits the input offset
(faust-streaming issue #177; seen here on 0.15.3: changelog writes carry
`tid=<app>-<group>-<p>`, output writes `tid=None`). After a crash the input is
processed again and its orders and decisions appear twice under read_committed.

Here every output goes to the transactional producer of the input being
processed (the producer's `for_input`: its partition's, by faust's own
transactional-id format, or the worker's one under `SIZER_TRANSACTIONS=per_worker`,
`worker_transactions`); and a
table write goes into the table's local store and onto its changelog the same
way, its changelog offset recorded as persisted as faust would (faust's producer
buffer costs several times more per record, and its flush can return while its
last record is still being sent).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from aiokafka.errors import KafkaError

from streams.faust_compat.events import current_event
from streams.faust_compat.membership import check_membership


def stored_value(table: Any, key: bytes) -> bytes | None:
    """`table.get(key)` of a faust table of bytes with no default, read from its local
    store as `Outputs.put` writes it: one store lookup. faust's own read looks the key
    up twice (`key in store`, then `store[key]`) and reports every read to its sensors
    (a labelled Prometheus counter): a third of reading a new portfolio's state at
    100,000 portfolios. Under a current event the store reads that event's partition,
    as faust's read does."""
    return table.data.get(key)  # type: ignore[no-any-return]


class Outputs:
    """Sends the worker's outputs with aiokafka directly, under exactly-once with the
    transactional producer of the current input (the producer's `for_input`),
    without faust's per-message topic machinery; and writes the tables the same way
    (`put`).
    `delivered` waits for every send of the batch, so a failed send fails the batch
    (a send the broker refused first asks whether another worker took this one's
    group.instance.id: `membership.check_membership`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._pending: list[Any] = []  # every send of the batch
        self._changelog: list[tuple[Any, Any]] = []  # (local store, send) of each table write

    def _producer(self) -> Any:
        producer = self.app.producer
        if not self.app.in_transaction:
            return producer._producer
        event = current_event()
        if event is None:
            raise RuntimeError("an output sent outside of any input event")
        return producer.for_input(event.message.tp)

    async def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], partition: Optional[int] = None,
                   headers: Any = None) -> None:
        future = await self._producer().send(topic, value, key=key, partition=partition, headers=headers)
        self._pending.append(future)

    async def put(self, table: Any, key: bytes, value: bytes | None) -> None:
        """Set `key` of a faust table of bytes as `table[key] = value` would (None:
        delete it, as `del table[key]`): into the local store and onto the changelog
        (a tombstone for a delete), both in the partition of the current event, and
        the changelog offset recorded as persisted once sent (under exactly-once,
        when the transaction commits)."""
        event = current_event()
        if event is None:
            raise RuntimeError("a table written outside of any input event")
        partition = event.message.partition
        if self.app.checkpoint_written is not None:
            self.app.table_written()
        if value is None:
            try:
                del table.data[key]
            except KeyError:
                pass
        else:
            table.data[key] = value
        future = await self._producer().send(table.changelog_topic_name, value, key=key, partition=partition)
        self._pending.append(future)
        self._changelog.append((table.data, future))

    async def delivered(self) -> None:
        pending, self._pending = self._pending, []
        changelog, self._changelog = self._changelog, []
        if pending:
            try:
                await asyncio.gather(*pending)
            except KafkaError:  # the batch fails: first, was this worker fenced by another?
                await check_membership(self.app)
                raise
        # What faust's Collection._on_changelog_sent does for each changelog record,
        # once per changelog partition: the offset up to which the local store holds it.
        last: dict[Any, tuple[Any, int]] = {}  # changelog partition -> (its table's store, offset)
        for store, future in changelog:
            sent = future.result()
            tp = sent.topic_partition
            if tp not in last or last[tp][1] < sent.offset:
                last[tp] = (store, sent.offset)
        for tp, (store, offset) in last.items():
            if self.app.in_transaction:
                self.app.tables.persist_offset_on_commit(store, tp, offset)
            else:
                store.set_persisted_offset(tp, offset)
