"""The Faust application, as wiring only: topics from the one spec, the tables,
the instruments view, the batch handler (`batch.BatchHandler`) and the timers.

What bends faust-streaming lives in `streams.faust_compat`; what handles a batch
of inputs in `streams.worker.batch`; everything that decides a number in
`streams.engine`.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from streams import faust_compat
from streams.config import SizingConfig
from streams.faust_compat.app import Inputs, SizerApp
from streams.faust_compat.stores import open_databases, share_write_buffers
from streams.faust_compat.events import current, current_event
from streams.faust_compat.outputs import Outputs
from streams.faust_compat.recovery import SizerTableManager
from streams.kafka.outages import OUTAGES
from streams.wire.framing import PLAIN, Framing
from streams.worker.settings import WorkerSettings
from streams.metrics import SizerMetrics, process_collectors
from streams.processor import Processor
from streams.kafka.topics import Replication, TopicSet
from streams.wire.roles import INPUTS, OUTPUTS, POSITIONED
from streams.worker.assignor import SpecAssignor, refuse
from streams.worker.batch import BatchHandler
from streams.worker.checkpoint import write_checkpoint
from streams.worker.memory import AllocatorMemory, StoreMemory
from streams.worker.health import Health
from streams.worker.instruments import InstrumentView
from streams.worker.registry import PortfolioRegistry
from streams.worker.positions import InputPositions
from streams.worker.tables import TableStore

log = logging.getLogger("streams.worker")

PRODUCER_MAX_REQUEST_BYTES = 1_048_588 + 65_536
# what a dead letter may carry of its original, below the broker's default limit for
# the dead-letter topic (larger originals are cut, with their size and digest)
DEAD_LETTER_MAX_BYTES = 1_000_000

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streams-sizer")
    except PackageNotFoundError:
        return "unknown"


def store_options(write_buffer_mb: int = 4) -> dict[str, int]:
    """RocksDB options of one table's local stores (one database per partition), a
    fresh mapping each time (faust pops keys out of it).

    faust's defaults size each database for a big store of its own: 64 MB write
    buffers, up to three of them, and a 2 GB block cache. The worker has five tables
    of six partitions, writes a few kB per portfolio per batch and reads its stores
    only after partitions move (it keeps what it wrote decoded): with the defaults its
    memory grew by the bytes it wrote, 150-190 MB a minute at 1,000 signals a second
    (`make soak`), until each buffer filled. Here a database holds at most two
    `write_buffer_mb` buffers and an 8 MB cache.

    A buffer is memory until it fills and is flushed, so a table written slowly
    holds the worker's memory rising for as long as its buffers take to fill: the
    dedupe windows (a chunk per touched portfolio per batch) wrote 2.4 MB a minute
    over their six databases in `make soak`, their 4 MB buffers going from 3 to
    21 MB in eight minutes, towards 48 MB (that soak's RSS slope: +0.28 MB/min over
    minutes 6-30). They get 1 MB buffers (`WINDOWS_WRITE_BUFFER_MB`): 2.5-4.5 MB from
    the sixth minute on."""
    return {"write_buffer_size": write_buffer_mb * 2**20, "max_write_buffer_number": 2,
            "block_cache_size": 8 * 2**20}


WINDOWS_WRITE_BUFFER_MB = 1


def brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def build_app(
    kafka: WorkerSettings, config: SizingConfig, topics: TopicSet, registry: CollectorRegistry | None = None,
    framing: Framing = PLAIN,
) -> SizerApp:
    """The worker: the faust app with its topics, tables, instruments view, health,
    metrics, the batch handler and its timers. Wiring only."""
    faust_compat.check()  # an upgrade that moved a private name fails here, naming it
    app = faust_app(kafka, topics)
    width = topics["signals"].partitions
    inputs = [app.topic(topics.name(role), partitions=width, **RAW) for role in POSITIONED]
    instruments_topic = app.topic(topics.name("instruments"), partitions=topics["instruments"].partitions, **RAW)
    outputs = Outputs(app)
    tables = declare_tables(app, width, kafka.replication, kafka.store_write_buffer_mb * 2**20)
    metrics = worker_metrics(app, kafka, config, registry)
    client = kafka.for_role(f"worker-{kafka.app_id}")
    view = InstrumentView(client, topics.name("instruments"), topics["instruments"].partitions, framing=framing)
    app.add_dependency(view)
    portfolios = None
    if kafka.require_registration:
        registry_topic = topics["portfolios"]
        portfolios = PortfolioRegistry(client, registry_topic.name, registry_topic.partitions, config.configures)
        app.add_dependency(portfolios)
    health = Health(app, view, kafka.liveness_timeout_s)
    health.install(app)
    store = TableStore(tables["exposure"], tables["streak"], tables["controls"], tables["windows"], config, outputs,
                       current_event)
    processor = Processor(config, store, view)
    positions = InputPositions(tables["input-positions"], outputs, [topics.name(role) for role in POSITIONED], client,
                               "read_committed" if kafka.processing_guarantee == "exactly_once" else "read_uncommitted")
    input_widths = {topics.name(role): topics[role].partitions for role in POSITIONED}
    handler = BatchHandler(
        app_id=kafka.app_id, config=config, processor=processor, tables=store, positions=positions, view=view,
        outputs=outputs, metrics=metrics, consumer=lambda: app.consumer, lock=app.processing_lock,
        roles={topics.name(role): role for role in INPUTS}, partitions=input_widths, framing=framing,
        outputs_topics={role: topics.name(role) for role in OUTPUTS},
        dlq_max_bytes=DEAD_LETTER_MAX_BYTES, current=current, refuse=refuse, health=health, portfolios=portfolios)
    app.wire(Inputs(handler.handle_inputs, positions, input_widths,
                    eager_commit_floor_s=kafka.eager_commit_floor_s, fetch_max_wait_ms=kafka.fetch_max_wait_ms,
                    observe_commit=metrics.commit_seconds.observe, group_instance_id=kafka.group_instance_id))
    # consumed by the fetch loop itself, not by agents: subscribe them here
    for topic in inputs:
        app.topics.add(topic)

    @app.agent(instruments_topic, name="check-instruments")
    async def check_instruments(stream: Any) -> None:
        # Instruments only dead-letter here (the InstrumentView applies them). They
        # have no positions: the topic is not co-partitioned with the inputs, and a
        # redelivery only repeats a dead letter.
        async for event in stream.events():
            async with app.processing_lock:
                await handler.check_instrument(event)
                await outputs.delivered()

    app.timer(interval=kafka.stall_interval_s)(handler.reseek_stalled)
    app.timer(interval=kafka.lag_interval_s)(handler.publish_lag)
    app.forget_on_rebalance += [store.forget, positions.forget]
    signals_topic = topics.name("signals")
    app.on_assigned.append(lambda assigned: metrics.retain(tp.partition for tp in assigned
                                                           if tp.topic == signals_topic))
    return app


def report_outages(app: SizerApp, metrics: SizerMetrics) -> None:
    """A lost broker into `sizer_broker_unavailable`, and outages quiet for long enough
    ended, every second (`streams.kafka.outages`)."""
    OUTAGES.on_change = lambda source, unavailable: metrics.broker_unavailable.labels(source).set(int(unavailable))

    @app.timer(interval=1.0)
    async def end_outages() -> None:
        OUTAGES.expire()


def faust_app(kafka: WorkerSettings, topics: TopicSet) -> SizerApp:
    """The faust app under the worker's settings: its group, store, guarantee, the
    broker timing, the web server, the one Kafka client configuration."""
    width = topics["signals"].partitions
    app = SizerApp(
        kafka.app_id,
        broker=brokers(kafka.bootstrap),
        store=kafka.store,
        datadir=str(kafka.data_dir),
        processing_guarantee=kafka.processing_guarantee,
        topic_partitions=width,
        # every changelog faust creates (and `declare_changelogs` before it): the
        # deployment's replication, as every topic of the spec
        topic_replication_factor=kafka.replication.factor,
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
        # room for any record the broker accepts on an input topic (its default
        # message.max.bytes, 1,048,588, plus headers): a valid instrument that big must
        # be re-published whole if an invalid update follows it (`BatchHandler.check_instrument`)
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        web_enabled=True,
        web_port=kafka.web_port,
        web_bind=kafka.web_host,
        web_host=kafka.web_host,
        web="aiohttp://",
        # The one Kafka client configuration (`WorkerSettings.client`), and faust
        # reads no environment variable of its own: unprefixed BROKER_URL,
        # PROCESSING_GUARANTEE or WEB_PORT would otherwise beat these settings.
        broker_credentials=kafka.faust_credentials(),
        broker_client_id=kafka.client_id(f"worker-{kafka.app_id}"),
        env={},
        # faust's /router and /table pages would serve any table's contents to anyone
        # who reaches the port; the worker serves /metrics and /health/* only
        web_router_enabled=False,
        web_tables_enabled=False,
        PartitionAssignor=SpecAssignor,
        TableManager=SizerTableManager,
    )
    app.transactions = kafka.transactions  # before anything makes the transport
    # under exactly-once, a clean stop's checkpoint of the local tables (`worker.checkpoint`)
    app.write_checkpoint = write_checkpoint
    return app


def declare_tables(app: SizerApp, width: int, replication: Replication,
                   write_buffer_bytes: int = 0) -> dict[str, Any]:
    """The worker's tables by name, each co-partitioned with the inputs (`width`),
    their changelogs replicated as `replication` says, the write buffers of all their
    stores within `write_buffer_bytes` together (0: each database's own)."""
    # bytes key and value types make faust store and changelog them raw: the
    # values are our canonical JSON, written and read only by TableStore.
    raw = {"default": None, "partitions": width, "key_type": bytes, "value_type": bytes,
           # every changelog's min.insync.replicas (its factor: topic_replication_factor)
           "extra_topic_configs": replication.configs}
    tables = {
        "exposure": app.Table("exposure", options=store_options(), **raw),
        "streak": app.Table("streak", options=store_options(), **raw),
        "controls": app.Table("controls", options=store_options(), **raw),
        # the dedupe windows' chunks, each written once (see `tables`)
        "windows": app.Table("windows", options=store_options(WINDOWS_WRITE_BUFFER_MB), **raw),
        # the next offset to process of every input partition (see `positions`)
        "input-positions": app.Table("input-positions", options=store_options(), **raw),
    }
    share_write_buffers(tables.values(), write_buffer_bytes)
    return tables


def worker_metrics(app: SizerApp, kafka: WorkerSettings, config: SizingConfig,
                   registry: CollectorRegistry | None) -> SizerMetrics:
    """faust's own sensors and the sizer's metrics, on one registry served at /metrics
    (a fresh registry unless one is given)."""
    registry = registry if registry is not None else CollectorRegistry()
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    process_collectors(registry)
    registry.register(StoreMemory(lambda: open_databases(app)))
    registry.register(AllocatorMemory())
    metrics = SizerMetrics(registry, kafka.metrics_portfolio_limit)
    metrics.built(package_version(), config.config_hash, kafka.processing_guarantee)
    metrics.time_collections()
    report_outages(app, metrics)
    return metrics
