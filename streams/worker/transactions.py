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

And a commit only ever sees whole events. faust commits on a timer, in its own
task, with the offsets of the events the streams have acked, and a stream acks
an event only when it moves on to the next one. A commit that runs while an
event is half done (its outputs sent, itself not yet acked, or its changelog
writes still in faust's producer buffer) commits the outputs without the offset
or the offset without the changelog: after a crash the event is decided twice,
or its state change is lost (seen here under SIGKILL; faust-streaming issue
#517 reports the duplicates). Here the agents handle each event under
`processing_lock` (decide, send, flush the buffer, ack) and the consumer takes
the same lock to compute and commit offsets.
"""

from __future__ import annotations

from typing import Any, Optional

from faust.streams import current_event
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import Consumer, Transport


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
    """Computes and commits offsets only between events, never in the middle of one."""

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        async with self.app.processing_lock:
            return await super().commit(topics, start_new_transaction=start_new_transaction)


class SizerTransport(Transport):
    """The aiokafka transport with event-scoped transactions and whole-event commits."""

    TransactionManager = EventScopedTransactionManager
    Consumer = WholeEventConsumer
