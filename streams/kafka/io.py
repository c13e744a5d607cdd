"""Publishing inputs to and reading records back from Kafka, for the demo,
the tests and the audit. Keys follow DESIGN.md: portfolio_id, symbol for instruments."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Iterable, Iterator, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from streams.wire import decimals
from streams.wire.framing import payload
from streams.errors import KafkaUnavailable
from streams.wire.roles import KEY_FIELD

if TYPE_CHECKING:
    from streams.config import SizingConfig
    from streams.kafka.settings import ClientConfig
    from streams.kafka.topics import TopicSet


# how long one poll of a read to the end offsets waits for records (`_read_assigned`)
READ_POLL_MS = 50
VISIBLE_WAIT_S = 10.0  # a new topic reaches every broker's metadata in well under a second
VISIBLE_RETRY_S = 0.2


def encode(role: str, value: Any) -> tuple[bytes | None, bytes]:
    """(key, value) bytes for an input; raw bytes pass through unchanged with no key."""
    if isinstance(value, (bytes, bytearray)):
        return None, bytes(value)
    key = value.get(KEY_FIELD[role]) if isinstance(value, dict) else None
    return (str(key).encode() if key is not None else None), decimals.dumps(value).encode()


async def publish(client: ClientConfig, topics: TopicSet, entries: Iterable[tuple[str, Any]],
                  keys: dict[int, bytes | None] | None = None) -> int:
    """Publish (role, value) inputs in order, waiting for every acknowledgement.
    `keys` overrides the key of the entry at that index. With a Schema Registry, a
    value given as data is written in the Confluent wire format under its subject's
    id; raw bytes are written as they are."""
    from streams.kafka.schema_registry import product_framing

    framing = await product_framing(client.settings, topics)
    producer = AIOKafkaProducer(**client.options(acks="all", enable_idempotence=True, linger_ms=5))
    await producer.start()
    try:
        pending = []
        for index, (role, value) in enumerate(entries):
            key, data = encode(role, value)
            if keys is not None and index in keys:
                key = keys[index]
            if not isinstance(value, (bytes, bytearray)):
                data = framing.written(role, data)
            pending.append(await producer.send(topics.name(role), data, key=key))
        await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()


async def publish_config(client: ClientConfig, topic: str, config: "SizingConfig") -> None:
    """Publish the effective configuration keyed by its hash (the topic is compacted),
    and the effective configuration of a portfolio of each of its `[portfolios."ID"]`
    tables, so every decision's `config_hash` resolves to the settings that produced it
    (a portfolio matching several globs at once: derived by the audit from the first)."""
    producer = AIOKafkaProducer(**client.options(acks="all", enable_idempotence=True))
    await producer.start()
    try:
        for effective in config.effective_configurations():
            value = decimals.dumps({"config_hash": effective.config_hash, "config": effective.effective()}).encode()
            await producer.send_and_wait(topic, value, key=effective.config_hash.encode())
    finally:
        await producer.stop()


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int

    def json(self) -> Any:
        """The value as JSON written by this product (decisions, orders, config): decimals are
        strings. A value in the Confluent wire format (SIZER_SCHEMA_REGISTRY_URL set) is read
        past its magic byte and schema id (`wire.framing.payload`)."""
        if self.value is None:
            return None
        return decimals.loads_output(payload(self.value))

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace") if value is not None else None
        return None


def published_configs(records: Iterable[Record]) -> Iterator[tuple[Record, "SizingConfig"]]:
    """The records of the configuration topic (`publish_config`) that hold a valid
    configuration under its own hash, each with that configuration; the others are
    skipped. The audit resolves decisions' hashes with them, `sizer status` takes
    the latest."""
    from streams.config import SizingConfig
    from streams.errors import ConfigError

    for record in records:
        try:
            data = record.json()
            config = SizingConfig.from_effective(data["config"])
        except (ValueError, KeyError, TypeError, ConfigError):
            continue
        if config.config_hash == data.get("config_hash"):
            yield record, config


async def read_topic(client: ClientConfig, topic: str, partitions: int, isolation_level: str = "read_committed",
                     timeout_s: float = 30.0, since: dict[int, int] | None = None) -> list[Record]:
    """Every record of `topic` (with `partitions` partitions, as its spec says) from
    the beginning, or from offset `since[partition]`, to its end offsets as of now,
    in partition then offset order."""
    starts = since or {}
    records = await _read(client, {TopicPartition(topic, p): (starts.get(p), None) for p in range(partitions)},
                          isolation_level, timeout_s)
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def read_range(client: ClientConfig, topic: str, partition: int, start: int, stop: int,
                     isolation_level: str = "read_committed", timeout_s: float = 60.0) -> list[Record]:
    """The records of offsets [start, stop) of one partition, as the broker has them
    now (offsets taken by transaction markers, or deleted, are simply absent)."""
    return await _read(client, {TopicPartition(topic, partition): (start, stop)}, isolation_level, timeout_s)


async def together(*steps: Awaitable[Any]) -> list[Any]:
    """The results of `steps`, run at once, in order. When any fails, every step is
    let finish and the error of the first failed one in order is raised: the same
    error, whatever finished first."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def start_or_close(client: Any) -> None:
    """Start an aiokafka producer, consumer or admin client; one that fails to start
    is closed before the error goes on, not left to the garbage collector (whose
    'Unclosed AIOKafka...' log would follow the CLI's one-line error)."""
    try:
        await client.start()
    except BaseException:
        await (client.stop() if hasattr(client, "stop") else client.close())  # the admin client has only close()
        raise


async def read_spans(client: ClientConfig, spans: dict[TopicPartition, tuple[int, int]],
                     isolation_level: str = "read_uncommitted", timeout_s: float = 60.0) -> list[Record]:
    """The records of offsets [start, stop) of several partitions, with one consumer."""
    return await _read(client, spans, isolation_level, timeout_s)


async def _read(client: ClientConfig, spans: dict[TopicPartition, tuple[int | None, int | None]], isolation_level: str,
                timeout_s: float) -> list[Record]:
    """Records of each partition from its start (None: the beginning) up to its stop
    (None: its end offset as of now); only an explicit stop also bounds what is kept."""
    consumer = AIOKafkaConsumer(**client.options(enable_auto_commit=False, group_id=None,
                                                isolation_level=isolation_level, auto_offset_reset="earliest"))
    await consumer.start()
    topics = sorted({tp.topic for tp in spans})
    try:
        await until_visible(consumer, set(topics), client)
        return await _read_assigned(consumer, spans, timeout_s)
    except TopicAuthorizationFailedError:
        # visible (Describe) but not readable: refused at the first offset or fetch request
        raise KafkaUnavailable(f"not authorized: {client.settings.principal} may not Read topic "
                               f"{', '.join(topics)}") from None
    finally:
        await consumer.stop()


async def until_visible(consumer: AIOKafkaConsumer, topics: set[str], client: ClientConfig) -> None:
    """Wait, at most `VISIBLE_WAIT_S`, until every topic is in the consumer's metadata.

    A topic this principal may not Describe has no leader in the metadata, and
    aiokafka would wait for one forever: it is refused at once, by name. A topic
    another worker has just created is absent, for a moment, from the metadata of a
    broker that has not yet learned of it (each broker of a cluster answers from its
    own copy of the controller's log): that one is asked for again.

    Raises KafkaUnavailable naming the topics refused, or still absent after the wait.
    """
    from streams.kafka.topics import refused_topics

    loop = asyncio.get_running_loop()
    deadline = loop.time() + VISIBLE_WAIT_S
    asked = False  # the broker's answer by name, once: asking again tells nothing new
    while hidden := sorted(topics - await consumer.topics()):
        if loop.time() >= deadline or (not asked and await refused_topics(client, hidden)):
            raise KafkaUnavailable(f"not authorized: {client.settings.principal} may not Read topic "
                                   f"{', '.join(hidden)}, or no such topic")
        asked = True
        await asyncio.sleep(VISIBLE_RETRY_S)


async def _read_assigned(consumer: AIOKafkaConsumer, spans: dict[TopicPartition, tuple[int | None, int | None]],
                         timeout_s: float) -> list[Record]:
    tps = list(spans)
    consumer.assign(tps)
    for tp, (start, _) in spans.items():
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
    current_ends = await consumer.end_offsets(tps)
    ends = {tp: current_ends[tp] if stop is None else stop for tp, (_, stop) in spans.items()}
    limits = {tp: stop for tp, (_, stop) in spans.items()}
    records: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        if loop.time() > deadline:
            raise TimeoutError(f"reading {sorted({tp.topic for tp in tps})} did not reach its end offsets "
                               f"in {timeout_s} s")
        # short polls: a transactional topic ends with a commit marker, which moves the
        # position but is no record, and aiokafka's getmany waits its whole timeout for one
        for tp, batch in (await consumer.getmany(timeout_ms=READ_POLL_MS)).items():
            limit = limits[tp]
            records += [Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
                        for r in batch if limit is None or r.offset < limit]
    return records


async def end_offsets(client: ClientConfig, topic: str, partitions: int) -> dict[int, int]:
    """The end offset of each partition of `topic`, as of now."""
    ends = await partition_ends(client, {topic: list(range(partitions))})
    return {partition: offset for (_, partition), offset in ends.items()}


async def partition_ends(client: ClientConfig, wanted: Mapping[str, Iterable[int]]) -> dict[tuple[str, int], int]:
    """The end offset of each (topic, partition) of `wanted` ({topic: partitions}), as
    of now, asked with one consumer."""
    tps = [TopicPartition(topic, p) for topic, ps in wanted.items() for p in ps]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**client.options(group_id=None, enable_auto_commit=False))
    await consumer.start()
    try:
        # Assigned, every topic's metadata comes in one request. Otherwise aiokafka
        # learns of one unknown topic per attempt, 100 ms apart (its retry backoff):
        # half a second for the worker's five changelogs.
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def wait_consumed(client: ClientConfig, group: str, topic: str, partitions: int, timeout_s: float = 60.0) -> None:
    """Wait until consumer group `group` has committed every offset of `topic` as of now."""
    from aiokafka.admin import AIOKafkaAdminClient

    ends = await end_offsets(client, topic, partitions)
    admin = AIOKafkaAdminClient(**client.options())
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            behind = [p for p, end in ends.items() if end > 0 and (
                (c := committed.get(TopicPartition(topic, p))) is None or c.offset < end)]
            if not behind:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"group {group} has not consumed {topic} partitions {behind} up to {ends}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
