"""Which input offsets have been processed: the truth is in the changelog, not in faust.

faust-streaming decides what to commit from its own bookkeeping of fetched and
acked offsets, and that bookkeeping breaks around restarts (seen here under
SIGKILL on 0.15.3): the fetcher can drop records it fetched before recovery's
seek, and its gap logic then treats the dropped offsets as done and commits past
them (lost signals; faust-streaming issues #216, #596, #606); or it hands the
last record of a partition over twice (issue #48).

So the worker keeps, for every input partition, the next offset to process in a
changelog-backed table, written with the batch's outputs and state changes in
the same transaction. Under that rule:

- a record below the position was processed already: it is skipped, with no
  second decision, order or state change;
- a record above the position means faust skipped some: they are read straight
  from Kafka and processed first, in offset order, inside the same transaction.

The consumer commits these positions (`faust_compat.transport.WholeBatchConsumer`), and a
timer (`stalled`) re-seeks a partition whose position stopped short of what faust
has already fetched, for the case where faust dropped the last records of a
partition and no later record arrives to reveal the gap.
"""

from __future__ import annotations

from typing import Any, Iterable

from streams.kafka.io import Record, read_range
from streams.kafka.positions import parse_position, position_key, position_value
from streams.kafka.settings import ClientConfig
from streams.faust_compat.outputs import stored_value


class Input:
    """An input event as the handlers and faust's tables see one: `.message` (a faust
    message, or a `kafka_io.Record` read past faust), `.key`, `.value`; weakly
    referable, as faust's current event must be."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, message: Any) -> None:
        self.message = message

    @property
    def key(self) -> bytes | None:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value

    @property
    def timestamp_ms(self) -> int | None:
        return record_timestamp_ms(self.message)


def record_timestamp_ms(message: Any) -> int | None:
    """The Kafka timestamp of a record in epoch milliseconds: faust's Message holds
    it as float seconds, a `kafka_io.Record` (like aiokafka's ConsumerRecord) as int
    milliseconds. None (or negative: -1 is "no timestamp") when the record has none."""
    timestamp = message.timestamp
    if timestamp is None:
        return None
    if isinstance(message, Record):
        return int(timestamp)
    return round(timestamp * 1000)


class InputPositions:
    """The next offset to process per input partition, kept in a faust table of bytes."""

    def __init__(self, table: Any, outputs: Any, topics: Iterable[str], client: ClientConfig,
                 isolation_level: str) -> None:
        self.table = table
        self.outputs = outputs  # faust_compat.outputs.Outputs: writes table entries
        self.topics = frozenset(topics)
        self.client = client
        self.isolation_level = isolation_level
        self._moved: set[tuple[str, int]] = set()
        # (topic, partition) -> the next offset this worker wrote to the table; forgotten
        # when partitions move (only what it wrote itself: a timer may read the table
        # while recovery is still rewriting it)
        self._known: dict[tuple[str, int], int] = {}

    def tracks(self, topic: str) -> bool:
        return topic in self.topics

    def next_offset(self, topic: str, partition: int) -> int:
        known = self._known.get((topic, partition))
        if known is None:
            raw = stored_value(self.table, position_key(topic, partition))
            return parse_position(raw)[0] if raw else 0
        return known

    async def advance(self, topic: str, partition: int, next_offset: int, fingerprint: str | None = None) -> None:
        """Record the position; called while an event of this partition is current."""
        await self.outputs.put(self.table, position_key(topic, partition), position_value(next_offset, fingerprint))
        self._known[(topic, partition)] = next_offset
        self._moved.add((topic, partition))

    def forget(self) -> None:
        """Read the positions from the table again: partitions are moving."""
        self._known.clear()

    def uncommitted(self) -> list[tuple[str, int]]:
        """Partitions whose position moved since it was last committed."""
        return sorted(self._moved)

    def committed(self, partitions: Iterable[tuple[str, int]]) -> None:
        self._moved.difference_update(partitions)

    async def read(self, topic: str, partition: int, start: int, stop: int) -> list[Record]:
        """The records of [start, stop) of one input partition, read past faust."""
        return await read_range(self.client, topic, partition, start, stop, self.isolation_level)


class StallWatch:
    """Partitions whose position has not moved for a whole interval while faust has
    fetched past it: faust dropped those records and will not deliver them again."""

    def __init__(self) -> None:
        self._seen: dict[Any, int] = {}

    def stalled(self, tp: Any, position: int, fetched: int | None) -> bool:
        if fetched is None or fetched <= position:
            self._seen.pop(tp, None)
            return False
        before, self._seen[tp] = self._seen.get(tp), position
        return before == position
