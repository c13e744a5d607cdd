"""Benchmark contender (2): the Faust agent a team would write first.

One engine call per message and the tables updated per message: read the
portfolio's state from a table, decide, write it back, send the order and the
decision. At-least-once, faust's defaults otherwise. The instruments are read
once at start.

    python -m streams.bench.naive_agent   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from streams.wire import decimals
from streams.config import load_config
from streams.engine import InputPosition, PortfolioState
from streams.engine.state import exposure_from_wire, streak_from_wire, to_wire
from streams.kafka.io import read_topic
from streams.worker.settings import load_settings
from streams.wire.models import Instrument, Signal, decode, to_json
from streams.processor import Processor
from streams.kafka.topics import load_topics
from streams.worker.app import RAW, brokers

kafka = load_settings()
topics = load_topics(kafka.topics_file, kafka.topic_prefix, replication=kafka.replication)
config = load_config(preset="conviction")
width = topics["signals"].partitions
app = faust.App(kafka.app_id, broker=brokers(kafka.bootstrap), store="memory://", topic_partitions=width,
                web_port=kafka.web_port, consumer_auto_offset_reset="earliest", topic_disable_leader=True,
                broker_credentials=kafka.faust_credentials(), broker_client_id=kafka.client_id(f"bench-{kafka.app_id}"),
                env={})
signals = app.topic(topics.name("signals"), partitions=width, **RAW)
orders = app.topic(topics.name("orders"), partitions=width, **RAW)
decisions = app.topic(topics.name("decisions"), partitions=width, **RAW)
exposure = app.Table("exposure", default=None, partitions=width, key_type=bytes, value_type=bytes)
streak = app.Table("streak", default=None, partitions=width, key_type=bytes, value_type=bytes)


class TableState:
    def load(self, portfolio_id: str) -> PortfolioState:
        key = portfolio_id.encode()
        raw_exposure, raw_streak = exposure.get(key), streak.get(key)
        return PortfolioState(exposure_from_wire(decimals.loads(raw_exposure) if raw_exposure else None),
                              streak_from_wire(decimals.loads(raw_streak) if raw_streak else None, config))

    def save(self, portfolio_id: str, state: PortfolioState) -> None:
        wire_exposure, wire_streak = to_wire(state)
        exposure[portfolio_id.encode()] = decimals.dumps(wire_exposure).encode()
        streak[portfolio_id.encode()] = decimals.dumps(wire_streak).encode()


processor = Processor(config, TableState())


@app.task
async def load_instruments() -> None:
    spec = topics["instruments"]
    for record in await read_topic(kafka.for_role(f"bench-{kafka.app_id}"), spec.name, spec.partitions):
        processor.on_instrument(decode(Instrument, record.value))


@app.agent(signals)
async def size(stream: Any) -> None:
    while not processor.instruments:
        await asyncio.sleep(0.05)
    async for event in stream.events():
        signal = decode(Signal, event.value)
        m = event.message
        result = processor.on_signal(signal, InputPosition(m.topic, m.partition, m.offset))
        if result.order is not None:
            await orders.send(key=event.key, value=to_json(result.order).encode(), partition=m.partition)
        await decisions.send(key=event.key, value=to_json(result.decision).encode(), partition=m.partition)


if __name__ == "__main__":
    import sys

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
