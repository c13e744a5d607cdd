"""Benchmark contender (0): the limit Kafka and the client set, a bare consume-and-produce loop.

Each signal's bytes are copied unchanged to the decisions topic (same key, same
partition): no decode, no engine, no encode, no state. Offsets auto-committed,
as in the plain loop (1), whose work this leaves out; the gap between the two is
what the product's work costs.

With `SIZER_PROCESSING_GUARANTEE=exactly_once`, the limit on the worker's
exactly-once latency: the copies and the offsets in transactions made as the
worker's are, one transactional producer per input partition (faust's scheme,
which the worker keeps: aiokafka 0.14 sends a transaction's offsets without the
consumer's group metadata, TxnOffsetCommit v0, so only a transactional id per
partition fences a previous owner; one producer per worker needs KIP-447), in
the quickest way found for it here:
- each input partition is its own loop (fetch, copy, commit), so a record waits
  for its own partition's transaction only, never for the slowest of a batch;
- a transaction that Kafka refuses to start while the previous one's markers are
  still being written (CONCURRENT_TRANSACTIONS, every time a partition commits and
  starts again at once) is retried after 2 ms, not aiokafka's 20 ms (the Java
  client's value, KAFKA-5477; KIP-890 removes the refusal from Kafka 4.0).
It assumes it is its group's only member (no rebalance handling): bench only.

    python -m streams.bench.bare_loop   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiokafka.producer.sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bench.plain_loop import consume_and_produce
from streams.kafka.settings import KafkaSettings, load_kafka_settings
from streams.kafka.topics import TopicSet, load_topics

CONCURRENT_TRANSACTIONS_BACKOFF_S = 0.002


async def exactly_once(kafka: KafkaSettings, topics: TopicSet) -> None:
    """The copy loop with one transaction per input partition, each partition fetched,
    copied and committed on its own, read_committed, until SIGTERM."""
    aiokafka.producer.sender.BACKOFF_OVERRIDE = CONCURRENT_TRANSACTIONS_BACKOFF_S
    client = kafka.for_role(f"bench-{kafka.app_id}")
    decisions = topics.name("decisions")
    consumer = AIOKafkaConsumer(topics.name("signals"), **client.options(
        group_id=kafka.app_id, auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=2000,
        fetch_max_wait_ms=10, isolation_level="read_committed"))
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def partition_loop(tp: TopicPartition) -> None:
        producer = AIOKafkaProducer(**client.options(
            acks="all", linger_ms=0, retry_backoff_ms=int(CONCURRENT_TRANSACTIONS_BACKOFF_S * 1000),
            transactional_id=f"{kafka.app_id}-{tp.partition}"))
        await producer.start()
        try:
            while not stop.is_set():
                records = (await consumer.getmany(tp, timeout_ms=100)).get(tp)
                if not records:
                    continue
                async with producer.transaction():
                    for record in records:
                        await producer.send(decisions, record.value, key=record.key, partition=tp.partition)
                    await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, kafka.app_id)
        finally:
            await producer.stop()

    while not consumer.assignment() and not stop.is_set():
        await asyncio.sleep(0.05)
    print("bare loop ready", flush=True)
    try:
        await asyncio.gather(*(partition_loop(tp) for tp in sorted(consumer.assignment())))
    finally:
        await consumer.stop()


async def run() -> None:
    kafka = load_kafka_settings()
    topics = load_topics(kafka.topics_file, kafka.topic_prefix)
    if kafka.processing_guarantee == "exactly_once":
        await exactly_once(kafka, topics)
        return
    decisions = topics.name("decisions")

    async def copy(producer: Any, tp: Any, record: Any) -> None:
        await producer.send(decisions, record.value, key=record.key, partition=tp.partition)

    await consume_and_produce("bare loop", kafka, topics, ["signals"], copy)


if __name__ == "__main__":
    asyncio.run(run())
