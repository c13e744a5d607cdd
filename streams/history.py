"""Topic history: re-deriving decisions in the interleaving the worker recorded.

Signals and fills arrive on two topics, consumed independently; the order in
which a worker applied them to a portfolio is part of the outcome. Each decision
records its signal's position and the offset of the last fill applied to the
portfolio before it, which is enough to rebuild that order per portfolio.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Iterator

from streams.config import SizingConfig
from streams.engine import InputPosition
from streams.errors import InvalidMessage
from streams.kafka_io import Record
from streams.models import Decision, Fill, Instrument, Order, Signal, decode
from streams.processor import MemoryStore, Processor


def _decoded(model: Any, record: Record) -> Any:
    try:
        return decode(model, record.value)
    except InvalidMessage:
        return None  # dead-lettered by the worker: it changed no state


def recorded_interleaving(
    signals: Iterable[Record], fills: Iterable[Record], decisions: Iterable[Record],
) -> Iterator[tuple[str, Record, Any]]:
    """Yield ("fills" | "signals", record, message) per portfolio, in the order the
    worker applied them: before each decided signal, the portfolio's fills up to
    the `last_fill_offset` its decision names; trailing fills at the end."""
    signal_at = {(r.topic, r.partition, r.offset): r for r in signals}
    fills_of: dict[str, list[tuple[Record, Any]]] = defaultdict(list)
    for record in sorted(fills, key=lambda r: (r.partition, r.offset)):
        fill = _decoded(Fill, record)
        if fill is not None:
            fills_of[fill.portfolio_id].append((record, fill))
    emitted: dict[str, int] = defaultdict(int)  # how many of the portfolio's fills are out
    for record in decisions:  # per partition, in the order they were written
        decision = record.json()
        position = decision["trace"]["input"]
        source = signal_at.get((position["topic"], position["partition"], position["offset"]))
        if source is None:
            continue
        portfolio = decision["portfolio_id"]
        last = position["last_fill_offset"]
        pending = fills_of[portfolio]
        while emitted[portfolio] < len(pending) and last is not None and pending[emitted[portfolio]][0].offset <= last:
            fill_record, fill = pending[emitted[portfolio]]
            yield "fills", fill_record, fill
            emitted[portfolio] += 1
        yield "signals", source, _decoded(Signal, source)
    for portfolio, pending in fills_of.items():
        for fill_record, fill in pending[emitted[portfolio]:]:
            yield "fills", fill_record, fill


def rederive(
    config: SizingConfig, instruments: Iterable[Record], interleaving: Iterable[tuple[str, Record, Any]],
) -> Iterator[tuple[Record, Decision, Order | None]]:
    """Run the engine over a recorded interleaving with the original input positions."""
    processor = Processor(config, MemoryStore(config))
    for record in instruments:
        instrument = _decoded(Instrument, record)
        if instrument is not None:
            processor.on_instrument(instrument)
    for role, record, message in interleaving:
        if message is None:
            continue
        if role == "fills":
            processor.on_fill(message, record.offset)
        else:
            result = processor.on_signal(message, InputPosition(record.topic, record.partition, record.offset))
            yield record, result.decision, result.order
