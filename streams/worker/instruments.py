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
from typing import Iterator, MutableMapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from streams.errors import InvalidMessage
from streams.models import Instrument, decode

log = logging.getLogger("streams.worker")


class InstrumentView(Service, MutableMapping[str, Instrument]):
    def __init__(self, bootstrap: str, topic: str, partitions: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._bootstrap = bootstrap
        self._topic = topic
        self._partitions = partitions
        self._instruments: dict[str, Instrument] = {}
        self._offsets: dict[str, int] = {}  # symbol -> offset of the record in force
        self._consumer: AIOKafkaConsumer | None = None
        self._applied: dict[TopicPartition, int] = {}  # next offset to apply, per partition
        self._progress = asyncio.Condition()
        self._last_refresh = 0.0
        self.caught_up = asyncio.Event()

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

    async def on_start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None,
            isolation_level="read_committed", auto_offset_reset="earliest",
        )
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

    def offset_of(self, symbol: str) -> int | None:
        """The offset of the instruments record in force for `symbol`."""
        return self._offsets.get(symbol)

    def apply(self, key: bytes | None, value: bytes | None, offset: int | None = None) -> None:
        """One record of the compacted topic: an instrument, or a tombstone that removes one."""
        if value is None:
            if key:
                symbol = key.decode("utf-8", "replace")
                self._instruments.pop(symbol, None)
                self._offsets.pop(symbol, None)
            return
        try:
            instrument = decode(Instrument, value)
        except InvalidMessage as exc:
            # The instruments agent dead-letters it once; here it is only skipped.
            log.debug("skipping invalid instrument: %s", exc)
            return
        self._instruments[instrument.symbol] = instrument
        if offset is not None:
            self._offsets[instrument.symbol] = offset

    async def refresh(self, timeout_s: float = 5.0, min_interval_s: float = 0.25) -> None:
        """Catch up with the instruments topic as it is now (at most one broker
        round trip per `min_interval_s`; a burst of unknown symbols costs one)."""
        now = time.monotonic()
        if self._consumer is None or now - self._last_refresh < min_interval_s:
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
            log.warning("instruments view did not reach %s within %.1f s", ends, timeout_s)

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in self._targets:
            self._applied[tp] = await consumer.position(tp)
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self.apply(record.key, record.value, record.offset)
            for tp in self._targets:
                self._applied[tp] = await consumer.position(tp)
            async with self._progress:
                self._progress.notify_all()
            if not self.caught_up.is_set() and all(
                self._applied[tp] >= end for tp, end in self._targets.items()
            ):
                log.info("instruments loaded: %d", len(self._instruments))
                self.caught_up.set()
