"""Benchmark contender (1): the practical limit, a plain aiokafka consume-and-produce loop.

The same work per signal as the worker (decode and validate, the engine, encode
the order and the decision, produce both) with none of the framework: state in
a dict, no changelog, no transactions, offsets auto-committed. Nothing about it
survives a crash; it only says how fast the work itself can go through Kafka.

    python -m streams.bench.plain_loop   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.config import load_config
from streams.engine import InputPosition
from streams.errors import InvalidMessage
from streams.worker.settings import WorkerSettings, load_settings
from streams.wire.models import Instrument, Signal, decode, to_json
from streams.processor import MemoryStore, Processor
from streams.kafka.topics import TopicSet, load_topics


def loop_consumer(kafka: WorkerSettings, topics: list[str], **overrides: Any) -> AIOKafkaConsumer:
    """The consumer of the bench's loops, (0) and (1), at-least-once and exactly-once:
    one set of client settings, so that only the work and the guarantee differ."""
    client = kafka.for_role(f"bench-{kafka.app_id}")
    return AIOKafkaConsumer(*topics, **client.options(**{
        "group_id": kafka.app_id, "auto_offset_reset": "earliest", "enable_auto_commit": True,
        "max_poll_records": 2000, "fetch_max_wait_ms": 10, **overrides}))


async def consume_and_produce(name: str, kafka: WorkerSettings, topics: TopicSet, inputs: list[str],
                              handle: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
    """The loop of contenders (0) and (1): consume `inputs` (role names) and hand each
    record to `handle(producer, tp, record)` until SIGTERM. One set of client
    settings for both, so that only the work differs."""
    client = kafka.for_role(f"bench-{kafka.app_id}")
    consumer = loop_consumer(kafka, [topics.name(role) for role in inputs])
    producer = AIOKafkaProducer(**client.options(acks="all", linger_ms=1))
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"{name} ready", flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for record in records:
                    await handle(producer, tp, record)
    finally:
        await producer.stop()
        await consumer.stop()


async def run() -> None:
    kafka = load_settings()
    topics = load_topics(kafka.topics_file, kafka.topic_prefix, replication=kafka.replication)
    config = load_config(preset="conviction")
    processor = Processor(config, MemoryStore(config))
    instruments, orders, decisions = topics.name("instruments"), topics.name("orders"), topics.name("decisions")

    async def handle(producer: Any, tp: Any, record: Any) -> None:
        try:
            if tp.topic == instruments:
                processor.on_instrument(decode(Instrument, record.value))
                return
            signal_ = decode(Signal, record.value)
        except InvalidMessage:
            return
        result = processor.on_signal(signal_, InputPosition(tp.topic, tp.partition, record.offset))
        key = record.key
        if result.order is not None:
            await producer.send(orders, to_json(result.order).encode(), key=key, partition=tp.partition)
        await producer.send(decisions, to_json(result.decision).encode(), key=key, partition=tp.partition)

    await consume_and_produce("plain loop", kafka, topics, ["signals", "instruments"], handle)


if __name__ == "__main__":
    asyncio.run(run())
