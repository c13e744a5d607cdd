"""Benchmark contender (0): the limit Kafka and the client set, a bare consume-and-produce loop.

Each signal's bytes are copied unchanged to the decisions topic (same key, same
partition): no decode, no engine, no encode, no state. Offsets auto-committed,
as in the plain loop (1), whose work this leaves out; the gap between the two is
what the product's work costs.

    python -m streams.bench.bare_loop   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka.settings import load_kafka_settings
from streams.kafka.topics import load_topics


async def run() -> None:
    kafka = load_kafka_settings()
    topics = load_topics(kafka.topics_file, kafka.topic_prefix)
    signals, decisions = topics.name("signals"), topics.name("decisions")
    client = kafka.for_role(f"bench-{kafka.app_id}")
    # the plain loop's consumer and producer settings, so that only the work differs
    consumer = AIOKafkaConsumer(signals, **client.options(
        group_id=kafka.app_id, auto_offset_reset="earliest", enable_auto_commit=True, max_poll_records=2000,
        fetch_max_wait_ms=10))
    producer = AIOKafkaProducer(**client.options(acks="all", linger_ms=1))
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("bare loop ready", flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for record in records:
                    await producer.send(decisions, record.value, key=record.key, partition=tp.partition)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(run())
