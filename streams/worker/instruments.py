"""Instruments every worker can read: an in-memory view of the compacted
`instruments` topic, fed by a group-less consumer that reads it from the start.

Every worker needs every instrument, whichever portfolios it owns. faust's
GlobalTable is the textbook answer, but it misses records with more than one
worker (faust-streaming issues #212, #283), so each worker reads the topic
itself. Signals wait until the view has caught up with the topic's end offsets
as they were at start-up, so a restart never decides a signal against a
half-loaded instrument list; and a signal whose symbol is unknown first makes
the view catch up with the topic as it is now, so an instrument published just
before its first signal is never reported as UNKNOWN_INSTRUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterator, MutableMapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from streams.errors import InvalidMessage
from streams.kafka.settings import ClientConfig
from streams.wire.framing import PLAIN, Framing
from streams.wire.instruments import InstrumentBook
from streams.wire.models import Instrument

log = logging.getLogger("streams.worker")


class TopicView(Service):
    """A compacted topic every worker reads whole, from the start, with a group-less
    consumer. `caught_up` is set once it has applied the topic's end offsets as they
    were at start-up; `refresh` catches up with the topic as it is now. Subclasses
    say what a record does (`apply`) and how much they hold (`loaded`): the
    instruments here, the portfolio registry in `worker.registry`."""

    what = "records"

    def __init__(self, client: ClientConfig, topic: str, partitions: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._client = client
        self._topic = topic
        self._partitions = partitions
        self._consumer: AIOKafkaConsumer | None = None
        self._applied: dict[TopicPartition, int] = {}  # next offset to apply, per partition
        self._progress = asyncio.Condition()
        self._last_refresh = 0.0
        self.caught_up = asyncio.Event()

    def apply(self, key: bytes | None, value: bytes | None, offset: int, timestamp_ms: int | None = None,
              headers: Any = None) -> bool:
        """One record of the topic; returns whether it changed what the view holds."""
        raise NotImplementedError

    def loaded(self) -> int:
        """How many entries the view holds."""
        raise NotImplementedError

    async def known(self, value: bytes | None) -> None:
        """Before `apply`: whatever a record needs asked elsewhere first (nothing here)."""

    async def on_start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(**self._client.options(
            enable_auto_commit=False, group_id=None, isolation_level="read_committed", auto_offset_reset="earliest",
        ))
        await consumer.start()
        # The partition count comes from the topic spec, checked against the broker at start-up.
        partitions = [TopicPartition(self._topic, p) for p in range(self._partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._targets = await consumer.end_offsets(partitions)
        self.add_future(self._follow())

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def reached(self, offset: int, partition: int = 0, timeout_s: float = 30.0) -> bool:
        """Wait until the view has applied every record of `partition` below `offset`;
        False when it has not within `timeout_s`."""
        tp = TopicPartition(self._topic, partition)
        try:
            async with self._progress:
                await asyncio.wait_for(self._progress.wait_for(lambda: self._applied.get(tp, 0) >= offset),
                                       timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def refresh(self, since: float, timeout_s: float = 5.0) -> None:
        """Catch up with the topic as it is now. `since` (`time.monotonic()`): the records
        that asked were fetched before it, so a catch-up begun after it has read the topic
        as it was when they were written, and no other is needed (a burst of unknown keys
        in a batch costs one broker round trip); one begun before it may have missed a
        record written just before them, so this one catches up whenever the last did."""
        now = time.monotonic()
        if self._consumer is None or self._last_refresh >= since:
            return
        self._last_refresh = now
        ends = await self._consumer.end_offsets(list(self._targets))
        try:
            async with self._progress:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: all(self._applied.get(tp, 0) >= end for tp, end in ends.items())),
                    timeout_s,
                )
        except asyncio.TimeoutError:
            log.warning("%s view did not reach %s within %.1f s", self._topic, ends, timeout_s)

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in self._targets:
            self._applied[tp] = await consumer.position(tp)
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await self.known(record.value)
                    self.apply(record.key, record.value, record.offset, record.timestamp, record.headers)
            for tp in self._targets:
                self._applied[tp] = await consumer.position(tp)
            async with self._progress:
                self._progress.notify_all()
            if not self.caught_up.is_set() and all(
                self._applied[tp] >= end for tp, end in self._targets.items()
            ):
                log.info("%s loaded: %d", self.what, self.loaded())
                self.caught_up.set()


class InstrumentView(TopicView, MutableMapping[str, Instrument]):
    """Every instrument in force, as the engine looks them up (see the module docstring)."""

    what = "instruments"

    def __init__(self, client: ClientConfig, topic: str, partitions: int, framing: Framing = PLAIN,
                 **kwargs: object) -> None:
        super().__init__(client, topic, partitions, **kwargs)
        self._book = InstrumentBook(framing)
        self._instruments = self._book.instruments

    # MutableMapping over the current instruments: what the engine looks up.
    def __getitem__(self, symbol: str) -> Instrument:
        return self._instruments[symbol]

    def __setitem__(self, symbol: str, instrument: Instrument) -> None:
        self._instruments[symbol] = instrument

    def __delitem__(self, symbol: str) -> None:
        del self._instruments[symbol]

    def __iter__(self) -> Iterator[str]:
        return iter(self._instruments)

    def __len__(self) -> int:
        return len(self._instruments)

    def get(self, symbol: str, default: Instrument | None = None) -> Instrument | None:  # type: ignore[override]
        return self._instruments.get(symbol, default)

    def loaded(self) -> int:
        return len(self._instruments)

    def offset_of(self, symbol: str) -> int | None:
        """The offset of the instruments record in force for `symbol`."""
        in_force = self._book.in_force.get(symbol)
        return in_force[0] if in_force is not None else None

    def in_force(self, symbol: str) -> tuple[int, bytes] | None:
        """(offset, value bytes) of the record in force for `symbol`, None when there is none."""
        return self._book.in_force.get(symbol)

    # how often a record whose schema id the registry could not be asked about is tried again
    registry_retry_s = 1.0

    async def known(self, value: bytes | None) -> None:
        """A schema id registered since start-up, asked of the registry as the
        instruments agent asks it (`Framing.known`); a record it cannot admit is
        skipped by `apply` (the agent dead-letters it). While the registry cannot be
        asked, the view waits for it (the records after wait too, in order): skipped,
        the record would be lost to this worker until it restarts, though the agent,
        or the agent of another worker, asking after the outage, admits it."""
        warned = False
        while True:
            try:
                await self._book.framing.known("instruments", value)
                return
            except InvalidMessage as exc:
                if exc.code != "SCHEMA_REGISTRY_UNAVAILABLE" or self.should_stop:
                    return
                if not warned:
                    log.warning("%s view waits for the Schema Registry: %s", self._topic, exc.detail)
                    warned = True
            await asyncio.sleep(self.registry_retry_s)

    def apply(self, key: bytes | None, value: bytes | None, offset: int, timestamp_ms: int | None = None,
              headers: Any = None) -> bool:
        """One record of the compacted topic (see `InstrumentBook.apply`)."""
        return self._book.apply(key, value, offset, timestamp_ms, headers)
