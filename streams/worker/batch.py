"""A batch of inputs, handled whole: the worker's edge between Kafka and the engine.

`BatchHandler.handle_inputs` takes one fetched batch of signals, fills and
operator commands (handed over by the consumer's fetch loop,
`faust_compat.transport.DirectInputConsumer`) and runs it through an explicit
lifecycle (`Batch`): OPEN while every input is admitted, applied and its outputs
sent, in offset order and each exactly once by its partition's position;
DELIVERED once state and positions are written and every send is
acknowledged, ready for the consumer's commit (which takes the same lock); or
FAILED half way, when nothing may be committed: the worker exits
(`on_failure`, `abandon` in the worker) and the open transactions are aborted
when its successor's producers fence them.

Everything is injected (the output sink, the state store, the positions, the
instruments, the metrics, the way an input becomes faust's current event), so
the lifecycle is unit-tested against in-memory fakes (`tests/unit/test_batch.py`).
The handler decodes, reads state, calls the engine, writes state, sends:
everything that decides a number lives in `streams.engine`, and everything that
can go wrong with an input goes through one handler (`dead`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from contextlib import AbstractContextManager
from typing import Any, Awaitable, Callable, Iterable, NoReturn, Protocol

from streams.wire.admission import admit_record, home_partition
from streams.config import SizingConfig
from streams.engine import InputPosition
from streams.errors import InvalidMessage, kafka_error
from streams.wire.models import to_json
from streams.wire.framing import PLAIN, Framing
from streams.engine import PortfolioState
from streams.kafka.io import Record
from streams.metrics import SizerMetrics
from streams.processor import Processor
from streams.kafka.topics import recreated
from streams.worker.dead_letters import dead_letter
from streams.wire.instruments import RESTORES, admit_instrument, restores
from streams.kafka.positions import record_fingerprint
from streams.worker.positions import Input, StallWatch, record_timestamp_ms

log = logging.getLogger("streams.worker")


def abandon(exc: BaseException) -> NoReturn:
    """Exit now, without the commit a graceful stop would make. A send the broker refused
    (a Kafka error: authorization, a record too large, a record timestamp out of its
    bound) is said in one line naming the cause; anything else with its traceback."""
    from aiokafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        log.critical("batch failed half way, exiting without committing: %s", kafka_error(exc))
    else:
        log.critical("batch failed half way, exiting without committing: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


# -- what the handler needs of its collaborators ----------------------------------------------------------------

class OutputSink(Protocol):
    """Sends inside the current input's transaction (`faust_compat.outputs.Outputs`)."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers: Any = None) -> None: ...

    async def delivered(self) -> None: ...


class StateStore(Protocol):
    """The portfolios' state of one batch (`worker.tables.TableStore`): what changed, under
    which input event, written back at the batch's end."""

    def changed(self) -> list[tuple[str, Any]]: ...

    def touched(self) -> list[tuple[str, PortfolioState]]: ...

    async def write(self, portfolio_id: str) -> None: ...

    def end_batch(self) -> None: ...


class Positions(Protocol):
    """The next offset to process per input partition (`worker.positions.InputPositions`)."""

    def tracks(self, topic: str) -> bool: ...

    def next_offset(self, topic: str, partition: int) -> int: ...

    async def advance(self, topic: str, partition: int, next_offset: int, fingerprint: str | None = None) -> None: ...

    async def read(self, topic: str, partition: int, start: int, stop: int) -> list[Record]: ...


class Instruments(Protocol):
    """Every worker's view of the instruments topic (`worker.instruments.InstrumentView`)."""

    caught_up: asyncio.Event

    def get(self, symbol: str) -> Any: ...

    def offset_of(self, symbol: str) -> int | None: ...

    def in_force(self, symbol: str) -> tuple[int, bytes] | None: ...

    async def refresh(self, since: float) -> None: ...

    async def reached(self, offset: int, partition: int = 0) -> bool: ...


class Consumer(Protocol):
    """faust's consumer as the handler reads it: the assignment, flow, offsets."""

    flow_active: bool

    def assignment(self) -> Iterable[Any]: ...

    def highwater(self, tp: Any) -> int | None: ...

    async def position(self, tp: Any) -> int | None: ...

    async def seek_wait(self, partitions: dict[Any, int]) -> None: ...


class Event(Protocol):
    """An input being handled: `Input` (a fetched message, or a record read past faust),
    or a faust event of the instruments agent; `.message` has topic, partition,
    offset, key, value, timestamp, headers."""

    @property
    def message(self) -> Any: ...


class Registry(Protocol):
    """The registered portfolios (`worker.registry.PortfolioRegistry`)."""

    caught_up: asyncio.Event

    async def check(self, portfolio_id: str, since: float) -> None: ...


class Liveness(Protocol):
    """Watches each batch (`worker.health.Health`): a batch running too long is not live."""

    def processing(self) -> AbstractContextManager[None]: ...


# -- a batch ----------------------------------------------------------------------------------------------------

class BatchStatus(enum.Enum):
    OPEN = "open"
    DELIVERED = "delivered"
    FAILED = "failed"


class BatchStateError(RuntimeError):
    """A batch was used against its lifecycle: a bug in the handler."""


class Batch:
    """One batch's lifecycle, enforced: OPEN -> DELIVERED, or FAILED from either.
    Inputs are recorded as processed only while OPEN, and only an OPEN batch can be
    delivered; a FAILED one stays failed (nothing of it may be committed)."""

    def __init__(self, events: list[Input]) -> None:
        self.events = events
        self.status = BatchStatus.OPEN
        # input partition -> (its next offset, the last event processed on it)
        self._moved: dict[tuple[str, int], tuple[int, Input]] = {}

    def _require_open(self, doing: str) -> None:
        if self.status is not BatchStatus.OPEN:
            raise BatchStateError(f"a batch can be {doing} only while open, not {self.status.value}")

    def next_offset(self, source: tuple[str, int]) -> int | None:
        """The next offset of an input partition this batch has moved, or None."""
        moved = self._moved.get(source)
        return None if moved is None else moved[0]

    def processed(self, source: tuple[str, int], next_offset: int, event: Input) -> None:
        """An input of partition `source` is done: its position moves to `next_offset`."""
        self._require_open("processed")
        self._moved[source] = (next_offset, event)

    def moved(self) -> list[tuple[tuple[str, int], tuple[int, Input]]]:
        """Each input partition this batch moved: its next offset and the last event processed on it."""
        return list(self._moved.items())

    def delivered(self) -> None:
        self._require_open("delivered")
        self.status = BatchStatus.DELIVERED

    def failed(self) -> None:
        self.status = BatchStatus.FAILED


class BatchHandler:
    """The per-input handlers and the batch lifecycle of one worker.

    `outputs`: send(topic, key, value, partition=None, headers=None), delivered();
    `tables`: the state store (`worker.tables.TableStore`); `positions`: the
    input positions (`worker.positions.InputPositions`); `consumer`: assignment(),
    flow_active, highwater(tp); `current`: a context manager factory making an
    input the current event (faust's, in the worker); `roles`: input topic name ->
    role; `partitions`: input topic name -> partition count, by which each record's
    partition is checked against its key's (`admission.check_partition`);
    `portfolios`: the registered portfolios (`worker.registry`), None when every
    portfolio is admitted."""

    def __init__(
        self, *, app_id: str, config: SizingConfig, processor: Processor, tables: StateStore, positions: Positions,
        view: Instruments, outputs: OutputSink, metrics: SizerMetrics, consumer: Callable[[], Consumer],
        lock: asyncio.Lock, roles: dict[str, str], partitions: dict[str, int], outputs_topics: dict[str, str],
        dlq_max_bytes: int,
        current: Callable[[Input], AbstractContextManager[None]],
        on_failure: Callable[[BaseException], NoReturn] = abandon, refuse: Callable[[str], None] | None = None,
        health: Liveness | None = None, portfolios: Registry | None = None, framing: Framing = PLAIN,
    ) -> None:
        self.app_id = app_id
        self.config = config
        self.processor = processor
        self.tables = tables
        self.positions = positions
        self.view = view
        self.outputs = outputs
        self.metrics = metrics
        self.consumer = consumer
        self.lock = lock
        self.roles = roles
        self.partitions = partitions  # input topic -> its partition count (verified against the broker at start)
        self.orders, self.decisions, self.dlq = outputs_topics["orders"], outputs_topics["decisions"], outputs_topics["dlq"]
        self.dlq_max_bytes = dlq_max_bytes
        self.current = current
        self.on_failure = on_failure
        self.refuse = refuse
        self.health = health  # worker.health.Health: liveness watches each batch (None in tests)
        self.portfolios = portfolios  # worker.registry.PortfolioRegistry; None: registration off
        # wire.framing.Framing: with a Schema Registry, outputs are written in the Confluent
        # wire format, and inputs read in it (SIZER_SCHEMA_REGISTRY_INPUTS=confluent)
        self.framing = framing
        self.stall_watch = StallWatch()
        # when the batch being handled was fetched, at the latest (`time.monotonic()`): a
        # view's catch-up begun after it has read what was written before its inputs
        self.fetched_at = 0.0
        self.handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "signals": self.size_signal, "fills": self.apply_fill, "controls": self.apply_control}

    # -- one input ---------------------------------------------------------------------------------------------

    async def dead(self, event: Event, error: InvalidMessage) -> None:
        """The one handler for an input that cannot be used: dead-lettered with its reason."""
        m = event.message
        await dead_letter(self.outputs, self.dlq, m, record_timestamp_ms(m), error, self.metrics,
                          self.roles[m.topic], self.dlq_max_bytes)

    async def admitted(self, event: Event) -> Any:
        """The input as its topic's message (`streams.wire.admission`), or None once it has
        been dead-lettered."""
        m = event.message
        try:
            role = self.roles[m.topic]
            message = admit_record(role, m.key, await self.framing.admit(role, m.value), record_timestamp_ms(m),
                                   self.config.max_future_skew_ms, m.partition, self.partitions[m.topic])
            if self.portfolios is not None:
                await self.portfolios.check(message.portfolio_id, self.fetched_at)
            return message
        except InvalidMessage as exc:
            await self.dead(event, exc)
            return None

    async def applied(self, event: Event, apply: Callable[[], Any]) -> Any:
        """Apply a decoded input. A failure inside the engine on a valid input is a bug:
        it is logged with its traceback and dead-lettered as PROCESSING_ERROR, on
        purpose, rather than stopping the partition behind it."""
        try:
            return apply()
        except Exception as exc:  # noqa: BLE001 - one handler, on purpose
            m = event.message
            log.exception("processing failed %s[%d]@%d", m.topic, m.partition, m.offset,
                          extra={"topic": m.topic, "partition": m.partition, "offset": m.offset})
            await self.dead(event, InvalidMessage("PROCESSING_ERROR", f"{type(exc).__name__}: {exc}"))
            return None

    async def size_signal(self, event: Event) -> None:
        signal = await self.admitted(event)
        if signal is None:
            return
        if self.view.get(signal.symbol) is None:
            await self.view.refresh(self.fetched_at)
        m = event.message
        position = InputPosition(m.topic, m.partition, m.offset, self.view.offset_of(signal.symbol))
        result = await self.applied(event, lambda: self.processor.on_signal(signal, position))
        if result is None:
            return
        key = result.decision.portfolio_id.encode()
        if result.order is not None:
            await self.outputs.send(self.orders, key, self.framing.written("orders", to_json(result.order).encode()),
                                    m.partition)
        await self.outputs.send(self.decisions, key,
                                self.framing.written("decisions", to_json(result.decision).encode()), m.partition)
        self.metrics.decided(result.decision, time.time() - signal.ts / 1000)

    async def apply_fill(self, event: Event) -> None:
        fill = await self.admitted(event)
        if fill is None:
            return
        result = await self.applied(event, lambda: self.processor.on_fill(fill, event.message.offset))
        if result is not None:
            self.metrics.fill_applied(fill.type, result.outcome)

    async def apply_control(self, event: Event) -> None:
        command = await self.admitted(event)
        if command is None:
            return
        result = await self.applied(event, lambda: self.processor.on_control(command, event.message.offset))
        if result is not None:
            self.metrics.command_applied(command.type, result.outcome)
            log.warning("operator command %s %s on %s by %s (%s): %s", command.command_id, command.type,
                        command.portfolio_id, command.operator, command.reason, result.outcome)

    # -- a batch -----------------------------------------------------------------------------------------------

    async def handle_inputs(self, messages: list[Any]) -> None:
        """A fetched batch of positioned inputs, handled whole before a commit can run
        (the consumer's commit takes the same lock). See the module docstring."""
        if self.health is None:
            return await self._handle_inputs(messages)
        with self.health.processing():
            await self._handle_inputs(messages)

    async def _handle_inputs(self, messages: list[Any]) -> None:
        self.fetched_at = time.monotonic()
        if not self.view.caught_up.is_set():
            await self.view.caught_up.wait()
        if self.portfolios is not None and not self.portfolios.caught_up.is_set():
            await self.portfolios.caught_up.wait()
        async with self.lock:
            consumer = self.consumer()
            if not consumer.flow_active:
                return  # a rebalance began: these are fetched again by their owner
            assigned = consumer.assignment()
            batch = Batch([Input(m) for m in messages if m.tp in assigned])
            self.metrics.batch_size.observe(len(batch.events))
            started = time.perf_counter()
            try:
                # schema ids not known yet, asked of the registry at once (wire.framing)
                await self.framing.known_all((self.roles[event.message.topic], event.message.value)
                                             for event in batch.events)
                await self._process(batch, consumer)
                await self._deliver(batch)
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - a half-done batch must not be committed
                batch.failed()
                self.on_failure(exc)
            finally:
                self.tables.end_batch()

    async def _process(self, batch: Batch, consumer: Consumer) -> None:
        """Every input in offset order, each exactly once by its partition's position."""
        for event in batch.events:
            m = event.message
            source = (m.topic, m.partition)
            with self.current(event):
                expected = batch.next_offset(source)
                if expected is None:
                    expected = self.positions.next_offset(*source)
                if m.offset < expected:
                    highwater = consumer.highwater(m.tp)
                    if highwater is not None and highwater < expected and self.refuse is not None:
                        # not a redelivery: the partition now ends before what this
                        # group processed of it, so the topic was deleted and recreated
                        self.refuse(str(recreated(self.app_id, [
                            f"{m.topic}[{m.partition}]: stored position {expected} is past the end "
                            f"offset {highwater}"])))
                    self.metrics.redelivered.labels(self.roles[m.topic]).inc()
                    continue
                if m.offset > expected:
                    await self.recover(event, expected)
                await self.handlers[self.roles[m.topic]](event)
                batch.processed(source, m.offset + 1, event)

    async def _deliver(self, batch: Batch) -> None:
        """State and positions written, each under an event of its partition (its
        changelog partition and transaction), and every send acknowledged."""
        for portfolio_id, event in self.tables.changed():
            with self.current(event):
                await self.tables.write(portfolio_id)
        for (topic, partition), (next_offset, event) in batch.moved():
            m = event.message
            with self.current(event):
                await self.positions.advance(topic, partition, next_offset,
                                             record_fingerprint(m.key, m.value, record_timestamp_ms(m)))
        await self.outputs.delivered()
        batch.delivered()
        # where each portfolio lives: the partition of its admitted inputs, which sit on
        # their key's (admission); a record dead-lettered off it (WRONG_PARTITION) is not
        partition_of = {m.key: m.partition for m in (event.message for event in batch.events)
                        if m.key is not None and m.partition == home_partition(m.key, self.partitions[m.topic])}
        for portfolio_id, state in self.tables.touched():
            self.metrics.portfolio_state(portfolio_id, state, self.config, partition_of.get(portfolio_id.encode()))

    async def recover(self, event: Event, expected: int) -> None:
        """Process the records faust skipped before `event`, inside its transaction."""
        m = event.message
        records = await self.positions.read(m.topic, m.partition, expected, m.offset)
        log.warning("%s[%d]: faust skipped offsets %d..%d; processing the %d records there",
                    m.topic, m.partition, expected, m.offset - 1, len(records))
        self.metrics.recovered.labels(self.roles[m.topic]).inc(len(records))
        handle = self.handlers[self.roles[m.topic]]
        for record in records:
            await handle(Input(record))

    # -- timers --------------------------------------------------------------------------------------------------

    async def reseek_stalled(self) -> None:
        """Seek back a partition whose position stopped short of what faust fetched for
        a whole interval (`positions.StallWatch`). Looks without the processing lock
        (positions move only at the end of a batch); takes it only to seek, and only
        if the position still stands."""
        consumer = self.consumer()
        for tp in consumer.assignment():
            if not self.positions.tracks(tp.topic):
                continue
            position = self.positions.next_offset(tp.topic, tp.partition)
            try:
                fetched = await consumer.position(tp)
            except Exception:  # noqa: BLE001 - mid-rebalance; look again next time
                continue
            if self.stall_watch.stalled(tp, position, fetched):
                async with self.lock:
                    if self.positions.next_offset(tp.topic, tp.partition) != position:
                        continue
                    log.warning("%s[%d]: faust fetched up to %s but delivered only up to %d; seeking back",
                                tp.topic, tp.partition, fetched, position)
                    self.metrics.reseeks.labels(self.roles[tp.topic]).inc()
                    await consumer.seek_wait({tp: position})

    async def publish_lag(self) -> None:
        """Each owned input partition's lag: its high watermark less its position."""
        consumer = self.consumer()
        readings = []
        for tp in consumer.assignment():
            if self.positions.tracks(tp.topic):
                highwater = consumer.highwater(tp)  # None until the first fetch of tp returns
                if highwater is not None:
                    lag = max(highwater - self.positions.next_offset(tp.topic, tp.partition), 0)
                    readings.append((self.roles[tp.topic], tp.partition, lag))
        self.metrics.lag(readings)

    # -- instruments -------------------------------------------------------------------------------------------

    async def check_instrument(self, event: Event) -> None:
        """One instruments record, once per record in the group (the InstrumentView of
        every worker applies them by the same rule, `admit_instrument`): an invalid one
        is dead-lettered, and then the last valid record of its symbol is published
        again, so that compaction, which keeps only the latest record of a key, keeps
        a valid one (DESIGN.md: a restarted worker must not lose the instrument)."""
        m = event.message
        view = self.view
        try:
            admit_instrument(m.key, await self.framing.admit("instruments", m.value), record_timestamp_ms(m))
            copy_of = restores(m.headers) if m.value is not None else None
        except InvalidMessage as exc:
            await self.dead(event, exc)
            copy_of = None
            if m.key is None:
                return  # no symbol of the topic is superseded by it
            if exc.code == "SCHEMA_REGISTRY_UNAVAILABLE":
                # not invalid, unverified: the views wait for the registry and apply it
                # once it is under the subject (InstrumentView.known); nothing to restore
                return
        else:
            if copy_of is None:
                return
        # The view reads the topic by itself: what it holds once past this record is
        # what the topic says after it.
        if not await view.reached(m.offset + 1, m.partition):
            log.error("%s[%d]@%d: the instruments view did not catch up; the last valid record of its key is "
                      "not re-published", m.topic, m.partition, m.offset)
            return
        symbol = m.key.decode("utf-8", "replace")
        in_force = view.in_force(symbol)
        if in_force is not None and in_force[0] == m.offset:
            return  # the view applied this copy: it is the valid latest
        if in_force is not None and in_force[0] < m.offset:
            try:
                await self.outputs.send(m.topic, m.key, in_force[1], m.partition,
                                        headers=[(RESTORES, str(m.offset).encode())])
            except Exception as exc:  # noqa: BLE001 - refused before it was queued: handled, on purpose
                log.error("%s[%d]@%d: the valid record of %s could not be re-published (%r); compaction may keep "
                          "only the invalid update: re-publish the instrument", m.topic, m.partition, m.offset,
                          symbol, exc)
                self.metrics.instruments_restore_failures.inc()
                return
            self.metrics.instruments_restored.inc()
            log.warning("%s[%d]@%d: re-published the valid record of %s from offset %d over it",
                        m.topic, m.partition, m.offset, symbol, in_force[0])
        elif in_force is None and copy_of is not None:
            # a copy published after the symbol was deleted: end on the deletion again
            await self.outputs.send(m.topic, m.key, None, m.partition)
