"""Benchmark contender (0): the limit Kafka and the client set, a bare consume-and-produce loop.

Each signal's bytes are copied unchanged to the decisions topic (same key, same
partition): no decode, no engine, no encode, no state. Offsets auto-committed,
as in the plain loop (1), whose work this leaves out; the gap between the two is
what the product's work costs.

    python -m streams.bench.bare_loop   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.bench.plain_loop import consume_and_produce
from streams.kafka.settings import load_kafka_settings
from streams.kafka.topics import load_topics


async def run() -> None:
    kafka = load_kafka_settings()
    topics = load_topics(kafka.topics_file, kafka.topic_prefix)
    decisions = topics.name("decisions")

    async def copy(producer: Any, tp: Any, record: Any) -> None:
        await producer.send(decisions, record.value, key=record.key, partition=tp.partition)

    await consume_and_produce("bare loop", kafka, topics, ["signals"], copy)


if __name__ == "__main__":
    asyncio.run(run())
