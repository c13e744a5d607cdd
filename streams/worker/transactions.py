"""Exactly-once for every output, not only the changelogs; commits of whole batches.

faust-streaming routes a send to the transactional producer of the *output*
topic's own partition group. A topic the app does not consume (`orders`,
`decisions`, `sizer-dlq`) has no group, so faust sends it with no transactional
id at all: outside the transaction that commits the input offset
(faust-streaming issue #177; seen here on 0.15.3: changelog writes carry
`tid=<app>-<group>-<p>`, output writes `tid=None`). After a crash the input is
processed again and its orders and decisions appear twice under read_committed.

The rule here: every output is sent (`Outputs`) in the transaction of the
partition of the input being processed, whatever topic or partition it goes
to. The worker makes each input of a batch faust's current event in turn
(`current`): faust's tables, its changelog partitioning and this routing all
read the current event.

And a commit only ever sees whole batches. faust commits on a timer, in its own
task. A commit that runs while a batch is half done (some outputs sent, state or
positions still in faust's producer buffer) commits the outputs without the
state: after a crash the input is decided twice, or its state change is lost
(seen here under SIGKILL; faust-streaming issue #517 reports the duplicates).
Here the worker handles each batch under `processing_lock` and the consumer
takes the same lock to commit. If a batch fails half way, nothing more may be
committed: the worker exits at once (`abandon`), and the open transactions are
aborted when its successor's producers fence them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn, Optional

from aiokafka import TopicPartition
from faust.streams import _current_event, current_event
from faust.transport.consumer import CONSUMER_FETCHING, TransactionManager
from faust.transport.drivers.aiokafka import Consumer, Transport


log = logging.getLogger("streams.worker")


@contextmanager
def current(event: Any) -> Iterator[None]:
    """Make `event` faust's current event (as its own stream iteration does)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def abandon(exc: BaseException) -> NoReturn:
    """Exit now, without the commit a graceful stop would make."""
    log.critical("batch failed half way, exiting without committing: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def transactional_id_for(app: Any, source: Any) -> str:
    """The transaction of an input partition: faust's id for the partition group."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(source.topic)}-{source.partition}"


class Outputs:
    """Sends the worker's outputs with aiokafka directly, under exactly-once with the
    transactional producer of the current input's partition, without faust's
    per-message topic machinery; and writes the tables the same way (`put`).
    `delivered` waits for every send of the batch, so a failed send fails the batch."""

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
        return producer._transaction_producers[transactional_id_for(self.app, event.message.tp)]

    async def send(self, topic: str, key: Optional[bytes], value: bytes, partition: Optional[int] = None,
                   headers: Any = None) -> None:
        future = await self._producer().send(topic, value, key=key, partition=partition, headers=headers)
        self._pending.append(future)

    async def put(self, table: Any, key: bytes, value: bytes) -> None:
        """Set `key` of a faust table of bytes as `table[key] = value` would: into the
        local store and onto the changelog, both in the partition of the current
        event, and the changelog offset recorded as persisted once sent (under
        exactly-once, when the transaction commits). Sent like any other output
        instead of through faust's producer buffer, which costs several times more
        per record (the worker's largest per-batch cost at low rates) and whose flush
        can return while its last record is still being sent."""
        event = current_event()
        if event is None:
            raise RuntimeError("a table written outside of any input event")
        partition = event.message.partition
        table.data[key] = value
        future = await self._producer().send(table.changelog_topic_name, value, key=key, partition=partition)
        self._pending.append(future)
        self._changelog.append((table.data, future))

    async def delivered(self) -> None:
        pending, self._pending = self._pending, []
        changelog, self._changelog = self._changelog, []
        if pending:
            await asyncio.gather(*pending)
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


class FencingTransactionManager(TransactionManager):
    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        """Start the producers of the assigned partitions and wait until each has its
        producer id: getting it fences the previous owner's producer and aborts its
        open transaction, so the changelogs' read_committed end is where recovery can
        trust it. Otherwise recovery can read the end of a changelog while a dead
        worker's transaction still holds it back, find a standby's persisted offset
        beyond it, and crash (faust ConsistencyError, seen in the failover test)."""
        await super().on_rebalance(assigned, revoked, newly_assigned)
        producers = self.producer._transaction_producers
        for transactional_id in sorted(self._tps_to_transactional_ids(assigned)):
            producer = producers.get(transactional_id)
            if producer is not None:
                await producer._txn_manager.wait_for_pid()


class PausingConsumer(Consumer):
    """Pauses partitions in aiokafka too, not only in faust's bookkeeping.

    faust-streaming 0.15.3 pauses a partition by no longer asking for its records;
    aiokafka keeps fetching it. A fetched record nobody asks for then holds back
    every further fetch from that broker for aiokafka's prefetch backoff (100 ms).
    faust reads its changelogs only in recovery and standby, and the worker writes
    them all the time: after each start or rebalance, the first record fetched
    from each changelog partition stalled the inputs for 100 ms (seen in `make
    bench` as 100-150 ms latencies over the first 0.3 s). Here every pause and
    resume is mirrored to aiokafka, in the consumer's thread."""

    def pause_partitions(self, tps: Any) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._mirror("pause", tps)

    def resume_partitions(self, tps: Any) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._mirror("resume", tps)

    def _mirror(self, action: str, tps: list[Any]) -> None:
        thread = self._thread
        consumer = thread._consumer
        if consumer is None or not tps:
            return
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]

        def apply() -> None:
            assigned = consumer.assignment()
            getattr(consumer, action)(*[tp for tp in partitions if tp in assigned])

        try:
            thread.thread_loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the consumer's loop is closed: it is stopping
            pass


class WholeBatchConsumer(PausingConsumer):
    """Commits only between batches, never in the middle of one; and for the inputs
    with positions (`streams.worker.positions`) commits those positions, not the
    offsets faust derives from its acks, which can skip records or stop advancing
    for good after a restart (faust-streaming issues #596, #606)."""

    async def highwaters(self, *partitions: Any) -> Any:
        """The changelogs' ends as recovery must see them. Under exactly-once faust
        0.15.3 answers from the last fetch response's stable offset, which is None for
        a partition not fetched yet: recovery then takes a standby's changelog, just
        made active, to end at -1 and crashes on its persisted offset (ConsistencyError,
        seen in the failover test). A read_committed consumer's end offsets are the
        last stable offsets, from the broker."""
        if not self.in_transaction:
            return await super().highwaters(*partitions)
        thread = self._thread
        return await thread.call_thread(thread._ensure_consumer().end_offsets, list(partitions))

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        if not self.in_transaction:
            # At-least-once commits the positions, which move only when a batch is
            # complete, after flushing every send: no need to hold batches back.
            return await super().commit(topics, start_new_transaction=start_new_transaction)
        async with self.app.processing_lock:
            return await super().commit(topics, start_new_transaction=start_new_transaction)

    def _filter_committable_offsets(self, tps: Any) -> dict:
        offsets = super()._filter_committable_offsets(tps)
        positions = getattr(self.app, "input_positions", None)
        if positions is None:
            return offsets
        for tp in [tp for tp in offsets if positions.tracks(tp.topic)]:
            del offsets[tp]
        # Every input whose position moved since its last commit, whether or not
        # faust counted acks for it: faust ignores acks below the group's committed
        # offset, and a transaction is committed only together with offsets.
        # A partition revoked meanwhile is not ours to commit: its open transaction is
        # aborted when the new owner's producer fences it, and the work is redone there.
        assigned = self.assignment()
        for topic, partition in positions.uncommitted():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                offsets[tp] = positions.next_offset(topic, partition)
            else:
                positions.committed([(topic, partition)])
        return offsets

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        did_commit = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        positions = getattr(self.app, "input_positions", None)
        if did_commit and positions is not None:
            positions.committed((tp.topic, tp.partition) for tp in offsets)
        return did_commit


class DirectInputConsumer(WholeBatchConsumer):
    """Hands the records of the inputs with positions to the worker in whole fetched
    batches, straight from the fetch loop, instead of one by one through faust's
    conductor, channels, streams and agents (about 0.1 ms a record on the build
    machine, more than the engine's own work). Every other record (changelogs in
    recovery and standby, instruments) takes faust's own path, unchanged.

    The loop is faust-streaming 0.15.3's `Consumer._drain_messages` with that one
    branch added; faust's read-offset bookkeeping stays for the records it still
    delivers, and the inputs need none of it (their positions decide)."""

    async def _drain_messages(self, fetcher: Any) -> None:
        handle_inputs = getattr(self.app, "handle_inputs", None)
        positions = getattr(self.app, "input_positions", None)
        if handle_inputs is None or positions is None:
            return await super()._drain_messages(fetcher)
        tracks = positions.tracks
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                inputs: list[Any] = []
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in self.getmany(timeout=1.0):
                        if tracks(tp.topic):
                            inputs.append(message)
                            continue
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    if inputs:
                        await handle_inputs(inputs)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class SizerTransport(Transport):
    """The aiokafka transport with fenced producers, whole-batch commits of the input
    positions and the direct input path."""

    TransactionManager = FencingTransactionManager
    Consumer = DirectInputConsumer
