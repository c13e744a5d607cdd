"""The Faust application: topics from the one spec, tables, and a thin batch handler.

The handler decodes, reads state, calls the engine, writes state, sends. Everything
that decides a number lives in `streams.engine`; everything that can go wrong with
an input goes through `dead_letters.dead_letter`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from streams.config import SizingConfig
from streams.engine import InputPosition
from streams.errors import InvalidMessage
from streams.kafka_settings import KafkaSettings
from streams.metrics import SizerMetrics, process_collectors
from streams.admission import admit_record
from streams.models import Signal, to_json
from streams.processor import Processor
from streams.topics import POSITIONED, TopicSet, recreated
from streams.worker.assignor import SpecAssignor, refuse
from streams.worker.dead_letters import dead_letter
from streams.worker.health import Health
from streams.worker.instruments import RESTORES, InstrumentView, admit_instrument, restores
from streams.worker.positions import Input, InputPositions, StallWatch, record_timestamp_ms
from streams.worker.tables import TableStore
from streams.worker.transactions import Outputs, SizerTransport, abandon, current

log = logging.getLogger("streams.worker")

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


class SizerApp(faust.App):
    """A faust App whose transport keeps every output inside the input's transaction
    and commits only between whole batches (see `transactions`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processing_lock = asyncio.Lock()
        # what the worker keeps decoded from its tables, dropped whenever partitions
        # move (every rebalance revokes first): recovery may then rewrite the tables
        self.forget_on_rebalance: list[Callable[[], None]] = []
        # told the new assignment once partitions have moved (metrics of what moved away)
        self.on_assigned: list[Callable[[Any], None]] = []

    async def _on_partitions_revoked(self, revoked: Any) -> None:
        # No batch may start after this, the one under way finishes first (its
        # partitions' producers are about to be stopped), and everything processed
        # is committed before faust goes on: faust keeps the open transactions of the
        # partitions this worker keeps, and its recovery, reading the changelogs
        # read_committed, would then see its own persisted offsets beyond the end of
        # the changelog and crash (ConsistencyError, seen in the failover test).
        log.info("rebalance: %d partitions revoked", len(revoked),
                 extra={"event": "partitions_revoked", "partitions": sorted(f"{tp.topic}[{tp.partition}]"
                                                                            for tp in revoked)})
        self.consumer.stop_flow()
        async with self.processing_lock:
            for forget in self.forget_on_rebalance:
                forget()
        if self.consumer.assignment():
            try:
                await self.consumer.commit()
            except Exception as exc:  # noqa: BLE001 - the positions make a missed commit safe
                log.warning("commit before rebalance failed: %r", exc)
        await super()._on_partitions_revoked(revoked)

    async def _on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        log.info("rebalance: %d partitions assigned", len(assigned),
                 extra={"event": "partitions_assigned", "partitions": sorted(f"{tp.topic}[{tp.partition}]"
                                                                             for tp in assigned)})
        for hook in self.on_assigned:
            hook(assigned)
        await super()._on_partitions_assigned(assigned, generation_id)

    def _new_transport(self) -> Any:
        return SizerTransport(self.conf.broker_consumer, self)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streams-sizer")
    except PackageNotFoundError:
        return "unknown"


def brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def build_app(
    kafka: KafkaSettings, config: SizingConfig, topics: TopicSet, registry: CollectorRegistry | None = None,
) -> SizerApp:
    width = topics["signals"].partitions
    app = SizerApp(
        kafka.app_id,
        broker=brokers(kafka.bootstrap),
        store=kafka.store,
        datadir=str(kafka.data_dir),
        processing_guarantee=kafka.processing_guarantee,
        topic_partitions=width,
        topic_replication_factor=topics["signals"].replication,
        topic_disable_leader=True,
        table_standby_replicas=kafka.standby_replicas,
        broker_commit_interval=kafka.commit_interval_s,
        # a killed worker's partitions move after this, not after faust's 60 s default
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        broker_max_poll_records=kafka.batch_max,
        producer_acks=-1,
        web_enabled=True,
        web_port=kafka.web_port,
        web_bind=kafka.web_host,
        web_host=kafka.web_host,
        web="aiohttp://",
        # faust's /router and /table pages would serve any table's contents to anyone
        # who reaches the port; the worker serves /metrics and /health/* only
        web_router_enabled=False,
        web_tables_enabled=False,
        # The one Kafka client configuration (`KafkaSettings.client`), and faust
        # reads no environment variable of its own: unprefixed BROKER_URL,
        # PROCESSING_GUARANTEE or WEB_PORT would otherwise beat these settings.
        broker_credentials=kafka.faust_credentials(),
        broker_client_id=kafka.client_id(f"worker-{kafka.app_id}"),
        env={},
        PartitionAssignor=SpecAssignor,
    )
    app.input_partitions = {topics.name(role): topics[role].partitions  # type: ignore[attr-defined]
                            for role in POSITIONED}
    signals = app.topic(topics.name("signals"), partitions=width, **RAW)
    fills = app.topic(topics.name("fills"), partitions=width, **RAW)
    controls = app.topic(topics.name("controls"), partitions=width, **RAW)
    instruments_topic = app.topic(topics.name("instruments"), partitions=topics["instruments"].partitions, **RAW)
    orders, decisions, dlq = topics.name("orders"), topics.name("decisions"), topics.name("dlq")
    outputs = Outputs(app)

    # bytes key and value types make faust store and changelog them raw: the
    # values are our canonical JSON, written and read only by TableStore.
    exposure = app.Table("exposure", default=None, partitions=width, key_type=bytes, value_type=bytes)
    streak = app.Table("streak", default=None, partitions=width, key_type=bytes, value_type=bytes)
    control_table = app.Table("controls", default=None, partitions=width, key_type=bytes, value_type=bytes)
    # the next offset to process of every input partition (see `positions`)
    progress = app.Table("input-positions", default=None, partitions=width, key_type=bytes, value_type=bytes)
    registry = registry if registry is not None else CollectorRegistry()
    # faust's own sensors and the sizer's metrics, on one registry at /metrics.
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    process_collectors(registry)
    metrics = SizerMetrics(registry, kafka.metrics_portfolio_limit)
    metrics.built(package_version(), config.config_hash, kafka.processing_guarantee)
    roles = {topics.name(role): role for role in (*POSITIONED, "instruments")}

    view = InstrumentView(kafka.bootstrap, topics.name("instruments"), topics["instruments"].partitions)
    app.add_dependency(view)
    health = Health(app, view, kafka.liveness_timeout_s)
    health.install(app)
    tables = TableStore(exposure, streak, control_table, config, outputs)
    processor = Processor(config, tables, view)
    positions = InputPositions(progress, outputs, [topics.name(role) for role in POSITIONED], kafka.bootstrap,
                               "read_committed" if kafka.processing_guarantee == "exactly_once" else "read_uncommitted")

    skew_ms = config.max_future_skew_ms
    dlq_max_bytes = app.conf.producer_max_request_size

    async def dead(event: Any, error: InvalidMessage) -> None:
        m = event.message
        await dead_letter(outputs, dlq, m, record_timestamp_ms(m), error, metrics, roles[m.topic], dlq_max_bytes)

    async def admitted(event: Any) -> Any:
        """The input as its topic's message (`streams.admission`), or None once it has
        been dead-lettered."""
        m = event.message
        try:
            return admit_record(roles[m.topic], m.key, m.value, record_timestamp_ms(m), skew_ms)
        except InvalidMessage as exc:
            await dead(event, exc)
            return None

    async def applied(event: Any, message: Any, apply: Callable[[Any, Any], Any]) -> Any:
        """Apply a decoded input. A failure inside the engine on a valid input is a bug:
        it is logged with its traceback and dead-lettered as PROCESSING_ERROR, on
        purpose, rather than stopping the partition behind it."""
        try:
            return apply(message, event.message)
        except Exception as exc:  # noqa: BLE001 - one handler, on purpose
            m = event.message
            log.exception("processing failed %s[%d]@%d", m.topic, m.partition, m.offset,
                          extra={"topic": m.topic, "partition": m.partition, "offset": m.offset,
                                 "portfolio": getattr(message, "portfolio_id", None),
                                 "signal_id": getattr(message, "signal_id", None)})
            await dead(event, InvalidMessage("PROCESSING_ERROR", f"{type(exc).__name__}: {exc}"))
            return None

    def apply_signal(signal: Signal, message: Any) -> Any:
        position = InputPosition(message.topic, message.partition, message.offset, view.offset_of(signal.symbol))
        return processor.on_signal(signal, position)

    def apply_fill(fill: Any, message: Any) -> Any:
        return processor.on_fill(fill, message.offset)

    def apply_command(command: Any, message: Any) -> Any:
        return processor.on_control(command, message.offset)

    async def size_signal(event: Any) -> None:
        signal = await admitted(event)
        if signal is None:
            return
        if view.get(signal.symbol) is None:
            await view.refresh()
        result = await applied(event, signal, apply_signal)
        if result is None:
            return
        partition = event.message.partition
        key = result.decision.portfolio_id.encode()
        if result.order is not None:
            await outputs.send(orders, key, to_json(result.order).encode(), partition)
        await outputs.send(decisions, key, to_json(result.decision).encode(), partition)
        metrics.decided(result.decision, time.time() - signal.ts / 1000)

    async def apply_fill_event(event: Any) -> None:
        fill = await admitted(event)
        if fill is None:
            return
        result = await applied(event, fill, apply_fill)
        if result is not None:
            metrics.fill_applied(fill.type, result.outcome)

    async def apply_control_event(event: Any) -> None:
        command = await admitted(event)
        if command is None:
            return
        result = await applied(event, command, apply_command)
        if result is not None:
            metrics.command_applied(command.type, result.outcome)
            log.warning("operator command %s %s on %s by %s (%s): %s", command.command_id, command.type,
                        command.portfolio_id, command.operator, command.reason, result.outcome)

    async def check_instrument(event: Any) -> None:
        """One instruments record, once per record in the group (the InstrumentView of
        every worker applies them by the same rule, `admit_instrument`): an invalid one
        is dead-lettered, and then the last valid record of its symbol is published
        again, so that compaction, which keeps only the latest record of a key, keeps
        a valid one (DESIGN.md: a restarted worker must not lose the instrument)."""
        m = event.message
        try:
            admit_instrument(m.key, m.value, record_timestamp_ms(m))
            copy_of = restores(m.headers) if m.value is not None else None
        except InvalidMessage as exc:
            await dead(event, exc)
            copy_of = None
            if m.key is None:
                return  # no symbol of the topic is superseded by it
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
            await outputs.send(m.topic, m.key, in_force[1], m.partition, headers=[(RESTORES, str(m.offset).encode())])
            metrics.instruments_restored.inc()
            log.warning("%s[%d]@%d: re-published the valid record of %s from offset %d over it",
                        m.topic, m.partition, m.offset, symbol, in_force[0])
        elif in_force is None and copy_of is not None:
            # a copy published after the symbol was deleted: end on the deletion again
            await outputs.send(m.topic, m.key, None, m.partition)

    handlers = {"signals": size_signal, "fills": apply_fill_event, "controls": apply_control_event}

    async def handle_inputs(messages: list[Any]) -> None:
        """A fetched batch of signals and fills, handed over by the consumer's fetch
        loop (`transactions.DirectInputConsumer`). Handled completely before a commit
        can run (the consumer's commit takes the same lock): every input in offset
        order, each exactly once by its partition's position; then state and positions
        are written, and every send is acknowledged, so the commit that follows has
        all of the batch in its transaction or none of it."""
        if not view.caught_up.is_set():
            await view.caught_up.wait()
        with health.processing():
            await handle_batch(messages)

    async def handle_batch(messages: list[Any]) -> None:
        async with app.processing_lock:
            if not app.consumer.flow_active:
                return  # a rebalance began: these are fetched again by their owner
            assigned = app.consumer.assignment()
            events = [Input(m) for m in messages if m.tp in assigned]
            metrics.batch_size.observe(len(events))
            try:
                # input partition -> (its next offset, the last event processed on it)
                moved: dict[tuple[str, int], tuple[int, Any]] = {}
                for event in events:
                    m = event.message
                    source = (m.topic, m.partition)
                    with current(event):
                        expected = moved[source][0] if source in moved else positions.next_offset(*source)
                        if m.offset < expected:
                            highwater = app.consumer.highwater(m.tp)
                            if highwater is not None and highwater < expected:
                                # not a redelivery: the partition now ends before what this
                                # group processed of it, so the topic was deleted and recreated
                                refuse(str(recreated(app.conf.id, [
                                    f"{m.topic}[{m.partition}]: stored position {expected} is past the end "
                                    f"offset {highwater}"])))
                            metrics.redelivered.labels(roles[m.topic]).inc()
                            continue
                        if m.offset > expected:
                            await recover(event, expected)
                        await handlers[roles[m.topic]](event)
                        moved[source] = (m.offset + 1, event)
                # each under an event of its partition: its changelog partition and transaction
                for portfolio_id, event in tables.changed():
                    with current(event):
                        await tables.write(portfolio_id)
                for (topic, partition), (next_offset, event) in moved.items():
                    with current(event):
                        await positions.advance(topic, partition, next_offset)
                # every output and changelog record acknowledged
                await outputs.delivered()
                # every input is keyed by its portfolio (admission): where each one lives
                partition_of = {event.message.key: event.message.partition for event in events}
                for portfolio_id, state in tables.touched():
                    metrics.portfolio_state(portfolio_id, state, config, partition_of.get(portfolio_id.encode()))
            except Exception as exc:  # noqa: BLE001 - a half-done batch must not be committed
                abandon(exc)
            finally:
                tables.end_batch()

    async def recover(event: Any, expected: int) -> None:
        """Process the records faust skipped before `event`, inside its transaction."""
        m = event.message
        records = await positions.read(m.topic, m.partition, expected, m.offset)
        log.warning("%s[%d]: faust skipped offsets %d..%d; processing the %d records there",
                    m.topic, m.partition, expected, m.offset - 1, len(records))
        metrics.recovered.labels(roles[m.topic]).inc(len(records))
        handle = handlers[roles[m.topic]]
        for record in records:
            await handle(Input(record))

    app.handle_inputs = handle_inputs  # type: ignore[attr-defined]
    # consumed by the fetch loop itself, not by agents: subscribe them here
    app.topics.add(signals)
    app.topics.add(fills)
    app.topics.add(controls)

    @app.agent(instruments_topic, name="check-instruments")
    async def check_instruments(stream: Any) -> None:
        # Instruments only dead-letter here (the InstrumentView applies them). They
        # have no positions: the topic is not co-partitioned with the inputs, and a
        # redelivery only repeats a dead letter.
        async for event in stream.events():
            async with app.processing_lock:
                await check_instrument(event)
                await outputs.delivered()

    watch = StallWatch()

    @app.timer(interval=kafka.stall_interval_s)
    async def reseek_stalled() -> None:
        # Looks without the processing lock (positions move only at the end of a
        # batch); takes it only to seek, and only if the position still stands.
        for tp in app.consumer.assignment():
            if not positions.tracks(tp.topic):
                continue
            position = positions.next_offset(tp.topic, tp.partition)
            try:
                fetched = await app.consumer.position(tp)
            except Exception:  # noqa: BLE001 - mid-rebalance; look again next time
                continue
            if watch.stalled(tp, position, fetched):
                async with app.processing_lock:
                    if positions.next_offset(tp.topic, tp.partition) != position:
                        continue
                    log.warning("%s[%d]: faust fetched up to %s but delivered only up to %d; seeking back",
                                tp.topic, tp.partition, fetched, position)
                    metrics.reseeks.labels(roles[tp.topic]).inc()
                    await app.consumer.seek_wait({tp: position})

    @app.timer(interval=kafka.lag_interval_s)
    async def publish_lag() -> None:
        readings = []
        for tp in app.consumer.assignment():
            if positions.tracks(tp.topic):
                highwater = app.consumer.highwater(tp)  # None until the first fetch of tp returns
                if highwater is not None:
                    lag = max(highwater - positions.next_offset(tp.topic, tp.partition), 0)
                    readings.append((roles[tp.topic], tp.partition, lag))
        metrics.lag(readings)

    app.forget_on_rebalance += [tables.forget, positions.forget]
    signals_topic = topics.name("signals")
    app.on_assigned.append(lambda assigned: metrics.retain(tp.partition for tp in assigned
                                                           if tp.topic == signals_topic))
    app.input_positions = positions  # type: ignore[attr-defined]
    app.sizer = {"processor": processor, "instruments": view, "topics": topics, "config": config,  # type: ignore[attr-defined]
                 "metrics": metrics, "health": health}  # type: ignore[attr-defined]
    return app
