"""Benchmark contender (4): the same work as a Quix Streams application.

Decode and validate each signal, run the product's engine through
`streams.processor.Processor`, encode the order and the decision and produce
both, as the plain loop (1) and the worker do; per-portfolio state lives in Quix
Streams' own RocksDB state with its changelog topic (`QuixStateStore`), not in a
dict. The guarantee is `SIZER_PROCESSING_GUARANTEE` and the commit interval the
worker's (`SIZER_COMMIT_INTERVAL_S`), as Quix' `processing_guarantee` and
`commit_interval`; Quix has no counterpart of the worker's eager commit floor
(`SIZER_EAGER_COMMIT_FLOOR_S`): it commits on its timer only, so the bench runs
the exactly-once case at the worker's interval and at that floor.

Runs in the bench's own environment (`make bench` builds .venv-bench with the
`bench` extra): Quix Streams 3.28.1 pins pydantic below the product's.

    .venv-bench/bin/python -m streams.bench.quix_app   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from quixstreams import Application, State
from quixstreams.context import message_context
from quixstreams.models.serializers import Serializer

from streams.config import load_config
from streams.engine import InputPosition, PortfolioState
from streams.engine.state import exposure_from_wire, streak_from_wire, to_wire
from streams.errors import InvalidMessage
from streams.kafka.io import read_topic
from streams.worker.settings import WorkerSettings, load_settings
from streams.kafka.topics import load_topics
from streams.processor import Processor
from streams.wire import decimals
from streams.wire.models import Instrument, Signal, decode, to_json


class QuixStateStore:
    """`processor.StateStore` over the Quix `State` of the message being processed.

    Quix scopes state to the message key, which is the portfolio id on the signals
    topic; `bind` hands it the current message's state before the engine runs. The
    two values are the worker's two tables (exposure, streak) as JSON text."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self._state: State | None = None
        self._portfolio: str | None = None

    def bind(self, state: State, portfolio_id: str) -> None:
        self._state, self._portfolio = state, portfolio_id

    def _current(self, portfolio_id: str) -> State:
        if self._state is None or portfolio_id != self._portfolio:
            raise RuntimeError(f"state of {portfolio_id!r} asked for while {self._portfolio!r} is bound "
                               "(is the signal keyed by another portfolio?)")
        return self._state

    def load(self, portfolio_id: str) -> PortfolioState:
        state = self._current(portfolio_id)
        raw_exposure, raw_streak = state.get("exposure"), state.get("streak")
        return PortfolioState(exposure_from_wire(decimals.loads(raw_exposure) if raw_exposure else None),
                              streak_from_wire(decimals.loads(raw_streak) if raw_streak else None, self._config))

    def save(self, portfolio_id: str, portfolio: PortfolioState) -> None:
        state = self._current(portfolio_id)
        wire_exposure, wire_streak = to_wire(portfolio)
        state.set("exposure", decimals.dumps(wire_exposure))
        state.set("streak", decimals.dumps(wire_streak))


class Output(NamedTuple):
    """One record to produce: to the orders topic or the decisions topic."""

    is_order: bool
    payload: bytes


class OutputSerializer(Serializer):
    def __call__(self, value: Output, ctx: Any) -> bytes:
        return value.payload


def guarantee(kafka: WorkerSettings) -> str:
    """Quix' spelling of the worker's processing guarantee."""
    return "exactly-once" if kafka.processing_guarantee == "exactly_once" else "at-least-once"


def build(kafka: WorkerSettings) -> Application:
    topics = load_topics(kafka.topics_file, kafka.topic_prefix, replication=kafka.replication)
    config = load_config(preset="conviction")
    store = QuixStateStore(config)
    processor = Processor(config, store)
    spec = topics["instruments"]
    client = kafka.for_role(f"bench-{kafka.app_id}")
    for record in asyncio.run(read_topic(client, spec.name, spec.partitions)):
        processor.on_instrument(decode(Instrument, record.value))

    app = Application(
        broker_address=kafka.bootstrap,
        consumer_group=kafka.app_id,
        auto_offset_reset="earliest",
        commit_interval=kafka.commit_interval_s,
        processing_guarantee=guarantee(kafka),  # type: ignore[arg-type]
        state_dir=str(kafka.data_dir / "quix-state"),
        use_changelog_topics=True,
        loglevel="WARNING",
        producer_extra_config={"acks": "all", "linger.ms": 1},
    )
    signals = app.topic(topics.name("signals"), key_deserializer="bytes", value_deserializer="bytes")
    serializer = OutputSerializer()
    orders = app.topic(topics.name("orders"), key_serializer="bytes", value_serializer=serializer)
    decisions = app.topic(topics.name("decisions"), key_serializer="bytes", value_serializer=serializer)

    def size(value: bytes, state: State) -> list[Output]:
        try:
            signal = decode(Signal, value)
        except InvalidMessage:
            return []
        context = message_context()
        store.bind(state, signal.portfolio_id)
        result = processor.on_signal(signal, InputPosition(context.topic, context.partition, context.offset))
        decision = Output(False, to_json(result.decision).encode())
        if result.order is None:
            return [decision]
        return [Output(True, to_json(result.order).encode()), decision]

    sdf = app.dataframe(signals)
    sdf = sdf.apply(size, stateful=True, expand=True)
    sdf.to_topic(lambda value, key, timestamp, headers: orders if value.is_order else decisions)
    return app


def main() -> None:
    app = build(load_settings())
    print("quix application ready", flush=True)
    app.run()  # stops on SIGTERM after its last commit


if __name__ == "__main__":
    main()
