"""`make bench-audit`: audit throughput, in events per second, over a
100,000-signal history on the local broker.

Writes a history as a worker records it: instruments, signals and fills from the
generated session; then the engine decides each signal in publishing order with
the real offsets, and its decisions and orders go to the partitions a worker
would write them to; the configuration goes to the config topic. Then it times
`sizer audit`'s two halves: reading every topic, and verifying every decision.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import zlib

from aiokafka import AIOKafkaProducer

from streams.bench import run_bench
from streams.wire import decimals
from streams.history.audit import audit, read_history, settle
from streams.config import load_config
from streams.engine import InputPosition
from streams.kafka.io import encode, publish_config
from streams.kafka.settings import ClientConfig
from streams.worker.settings import load_settings
from streams.wire.models import Fill, Instrument, Signal, to_json, validate
from streams.processor import MemoryStore, Processor
from streams.kafka.topics import apply, load_topics
from streams.bench.generate import session


async def write_history(client: ClientConfig, topics, signals: int, preset: str) -> int:
    config = load_config(preset)
    await publish_config(client, topics.name("config"), config)
    producer = AIOKafkaProducer(**client.options(acks="all", enable_idempotence=True, linger_ms=20,
                                                 max_batch_size=1 << 20))
    await producer.start()
    width = topics["signals"].partitions
    try:
        # 1. the inputs, as producers publish them; their offsets come back with the acks
        inputs, pending = [], []
        for role, value in session(signals):
            key, payload = encode(role, value)
            # keyed records go to one partition per key, the same for signals and fills
            partition = 0 if role == "instruments" else zlib.crc32(key) % width
            inputs.append((role, value, key))
            pending.append(await producer.send(topics.name(role), payload, key=key, partition=partition))
        metas = await asyncio.gather(*pending)
        # 2. the worker's outputs: decided in publishing order with the real offsets
        processor = Processor(config, MemoryStore(config))
        instrument_offsets: dict[str, int] = {}
        outputs = []
        for (role, value, key), meta in zip(inputs, metas):
            if role == "instruments":
                instrument = validate(Instrument, value)
                processor.on_instrument(instrument)
                instrument_offsets[instrument.symbol] = meta.offset
            elif role == "fills":
                processor.on_fill(validate(Fill, value), meta.offset)
            else:
                signal = validate(Signal, value)
                result = processor.on_signal(signal, InputPosition(
                    meta.topic, meta.partition, meta.offset, instrument_offsets.get(signal.symbol)))
                if result.order is not None:
                    outputs.append(await producer.send(topics.name("orders"), to_json(result.order).encode(),
                                                       key=key, partition=meta.partition))
                outputs.append(await producer.send(topics.name("decisions"), to_json(result.decision).encode(),
                                                   key=key, partition=meta.partition))
        await asyncio.gather(*outputs)
        return len(metas) + len(outputs)
    finally:
        await producer.stop()


def main() -> int:
    decimals.use_engine_context()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--preset", default="graduated")
    args = parser.parse_args()
    kafka = load_settings(topic_prefix=f"benchaudit{int(time.time())}-")
    topics = load_topics(kafka.topics_file, kafka.topic_prefix, replication=kafka.replication)
    client = kafka.for_role("bench")
    asyncio.run(apply(client, topics))
    started = time.perf_counter()
    written = asyncio.run(write_history(client, topics, args.signals, args.preset))
    print(f"history: {written:,} records written in {time.perf_counter() - started:.1f} s "
          f"(topics {kafka.topic_prefix}*, bootstrap {kafka.bootstrap}, pid {os.getpid()})")

    started = time.perf_counter()
    history = settle(asyncio.run(read_history(client, topics)))
    read_s = time.perf_counter() - started
    report = audit(history)
    verify_s = report.seconds
    total = read_s + verify_s
    print(f"audit: {'OK' if report.ok else 'FAILED'}, {report.verified:,} decisions verified, "
          f"{len(report.mismatches)} mismatches")
    print(f"  read    {report.events:,} events in {read_s:.1f} s ({report.events / read_s:,.0f} events/s)")
    print(f"  verify  {report.events:,} events in {verify_s:.1f} s ({report.events / verify_s:,.0f} events/s)")
    print(f"audit throughput: {report.events / total:,.0f} events/s end to end (target >= 20,000)")
    return 0 if report.ok else 1  # as `sizer audit`


if __name__ == "__main__":
    sys.exit(run_bench(main))
