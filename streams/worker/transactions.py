"""Exactly-once for every output, not only the changelogs.

faust-streaming routes a send to the transactional producer of the *output*
topic's own partition group. A topic the app does not consume (`orders`,
`decisions`, `sizer-dlq`) has no group, so faust sends it with no transactional
id at all: outside the transaction that commits the input offset
(faust-streaming issue #177; seen here on 0.15.3: changelog writes carry
`tid=<app>-<group>-<p>`, output writes `tid=None`). After a crash the input is
processed again and its orders and decisions appear twice under read_committed.

The rule here: a send made while processing an input event belongs to the
transaction of that event's partition, whatever topic or partition it goes to.
Sends made outside any event (none in this product) keep faust's routing.

The agents take inputs in batches and make each one current in turn (`current`):
faust's tables, its changelog partitioning and this routing all read the
current event.

And a commit only ever sees whole batches. faust commits on a timer, in its own
task. A commit that runs while a batch is half done (some outputs sent, state or
positions still in faust's producer buffer) commits the outputs without the
state: after a crash the input is decided twice, or its state change is lost
(seen here under SIGKILL; faust-streaming issue #517 reports the duplicates).
Here the agents handle each batch under `processing_lock` and the consumer
takes the same lock to commit. If a batch fails half way, nothing more may be
committed: the worker exits at once (`abandon`), and the open transactions are
aborted when its successor's producers fence them.
"""

from __future__ import annotations

import logging
import os
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn, Optional

from aiokafka import TopicPartition
from faust.streams import _current_event, current_event
from faust.transport.consumer import TransactionManager
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


class EventScopedTransactionManager(TransactionManager):
    async def send(
        self,
        topic: str,
        key: Optional[bytes],
        value: Optional[bytes],
        partition: Optional[int],
        timestamp: Optional[float],
        headers: Any,
        *,
        transactional_id: Optional[str] = None,
    ) -> Any:
        event = current_event()
        if event is None:
            return await super().send(topic, key, value, partition, timestamp, headers)
        source = event.message.tp
        group = self.app.assignor.group_for_topic(source.topic)
        transactional_id = f"{self.app.conf.id}-{group}-{source.partition}"
        return await self.producer.send(
            topic, key, value, partition, timestamp, headers, transactional_id=transactional_id,
        )


class WholeEventConsumer(Consumer):
    """Commits only between batches, never in the middle of one; and for the inputs
    with positions (`streams.worker.positions`) commits those positions, not the
    offsets faust derives from its acks, which can skip records or stop advancing
    for good after a restart (faust-streaming issues #596, #606)."""

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
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


class SizerTransport(Transport):
    """The aiokafka transport with event-scoped transactions and whole-event commits."""

    TransactionManager = EventScopedTransactionManager
    Consumer = WholeEventConsumer
