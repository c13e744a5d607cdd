"""Benchmark contender (0): the limit Kafka and the client set, a bare consume-and-produce loop.

Each signal's bytes are copied unchanged to the decisions topic (same key, same
partition): no decode, no engine, no encode, no state. The mode follows
`SIZER_PROCESSING_GUARANTEE` (default exactly-once, as for the worker); the
bench runs both.

At-least-once: offsets auto-committed, as in the plain loop (1), whose work this
leaves out; the gap between the two is what the product's work costs.

Exactly-once: the limit on the worker's exactly-once latency. The copies and the
offsets go in transactions made as the worker's are, one transactional producer
per input partition (faust's scheme, which the worker keeps: aiokafka 0.14 sends
a transaction's offsets without the consumer's group metadata, TxnOffsetCommit
v0, so only a transactional id per partition fences a previous owner; one
producer per worker needs KIP-447), read_committed, in the quickest form found:
- each input partition is drained, copied and committed on its own (one
  consumer fetches for all), so a record waits for its own partition's
  transaction only, never for the slowest of a batch;
- its producers retry after 2 ms instead of 100 (`retry_backoff_ms`), and a
  transaction that Kafka refuses to start while the previous one's markers are
  still being written (CONCURRENT_TRANSACTIONS, every time a partition commits and
  starts again at once) after 2 ms instead of aiokafka's 20 (the Java client's
  value, KAFKA-5477; KIP-890 removes the refusal from Kafka 4.0). Harsh on a
  broker in trouble: for the bench only.
It handles no rebalance (the partitions it serves are those of its first
assignment): any rebalance can stall it or copy records twice. For the bench
only, where it is its group's one member.

    python -m streams.bench.bare_loop   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiokafka.producer.sender
from aiokafka import AIOKafkaProducer, TopicPartition

from streams.bench.plain_loop import consume_and_produce, loop_consumer
from streams.worker.settings import WorkerSettings, load_settings
from streams.kafka.topics import TopicSet, load_topics

CONCURRENT_TRANSACTIONS_BACKOFF_S = 0.002


async def exactly_once(kafka: WorkerSettings, topics: TopicSet) -> None:
    """The copy loop with one transaction per input partition, each partition fetched,
    copied and committed on its own, read_committed, until SIGTERM."""
    aiokafka.producer.sender.BACKOFF_OVERRIDE = CONCURRENT_TRANSACTIONS_BACKOFF_S
    # seconds to wait in every transaction before its commit: for the broker test that
    # kills the loop with transactions open
    pause_s = float(os.environ.get("BENCH_PAUSE_IN_TRANSACTION_S", "0"))
    client = kafka.for_role(f"bench-{kafka.app_id}")
    decisions = topics.name("decisions")
    consumer = loop_consumer(kafka, [topics.name("signals")], enable_auto_commit=False,
                             isolation_level="read_committed")
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def partition_loop(tp: TopicPartition) -> None:
        producer = AIOKafkaProducer(**client.options(
            acks="all", linger_ms=0, retry_backoff_ms=int(CONCURRENT_TRANSACTIONS_BACKOFF_S * 1000),
            transactional_id=f"{kafka.app_id}-{tp.partition}"))
        await producer.start()  # fences the partition's previous producer: its transaction is ended
        # the offset committed with the last transaction, now that no other is pending
        # (the consumer fetched one at assignment, which may predate the fence)
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
        try:
            while not stop.is_set():
                records = (await consumer.getmany(tp, timeout_ms=100)).get(tp)
                if not records:
                    continue
                async with producer.transaction():
                    sent = [await producer.send(decisions, record.value, key=record.key, partition=tp.partition)
                            for record in records]
                    await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, kafka.app_id)
                    # aiokafka commits a transaction whatever its produce batches' results
                    # (`Sender._do_txn_commit`): a failed copy must abort it
                    await asyncio.gather(*sent)
                    if pause_s > 0:
                        await asyncio.sleep(pause_s)
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
    kafka = load_settings()
    topics = load_topics(kafka.topics_file, kafka.topic_prefix, replication=kafka.replication)
    if kafka.processing_guarantee == "exactly_once":
        await exactly_once(kafka, topics)
        return
    decisions = topics.name("decisions")

    async def copy(producer: Any, tp: Any, record: Any) -> None:
        await producer.send(decisions, record.value, key=record.key, partition=tp.partition)

    await consume_and_produce("bare loop", kafka, topics, ["signals"], copy)


if __name__ == "__main__":
    asyncio.run(run())
