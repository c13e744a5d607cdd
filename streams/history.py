"""Topic history: re-deriving decisions in the interleaving the worker recorded.

Signals and fills arrive on two topics, consumed independently; the order in
which a worker applied them to a portfolio is part of the outcome. Each decision
records its signal's position and the offset of the last fill applied to the
portfolio before it, which is enough to rebuild that order per portfolio. It
also names the instrument record it was sized against and, by hash, the
configuration that sized it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from streams.config import SizingConfig
from streams.engine import InputPosition, PortfolioState, apply_fill, decide
from streams.errors import InvalidMessage
from streams.kafka_io import Record
from streams.models import Decision, Fill, Instrument, Order, Signal, decode


def decoded(model: Any, record: Record) -> Any:
    """The record as `model`, or None where the worker would have dead-lettered it."""
    try:
        return decode(model, record.value)
    except InvalidMessage:
        return None


@dataclass(frozen=True, slots=True)
class Step:
    """One input in the recorded order; a signal carries the decision recorded for it."""

    role: str  # "signals" | "fills"
    record: Record
    message: Any
    recorded: dict[str, Any] | None = None
    decision_record: Record | None = None


def recorded_interleaving(
    signals: Iterable[Record], fills: Iterable[Record], decisions: Iterable[Record | tuple[Record, dict[str, Any]]],
) -> Iterator[Step]:
    """Per portfolio, in the order the worker applied them: before each decided
    signal, the portfolio's fills up to the `last_fill_offset` its decision names;
    the fills after the last decision at the end. A signal decided more than once
    appears once per decision. Decisions may come already decoded, as (record, data)."""
    # By partition and offset within the signals topic being read; the recorded topic
    # name is checked as a field of the decision like any other.
    signal_at = {(r.partition, r.offset): r for r in signals}
    fills_of: dict[str, list[tuple[Record, Any]]] = defaultdict(list)
    for record in sorted(fills, key=lambda r: (r.partition, r.offset)):
        fill = decoded(Fill, record)
        if fill is not None:
            fills_of[fill.portfolio_id].append((record, fill))
    emitted: dict[str, int] = defaultdict(int)
    for item in decisions:  # per partition, in the order they were written
        record, decision = item if isinstance(item, tuple) else (item, item.json())
        position = decision["trace"]["input"]
        source = signal_at.get((position["partition"], position["offset"]))
        if source is None:
            continue
        portfolio = decision["portfolio_id"]
        last = position["last_fill_offset"]
        pending = fills_of[portfolio]
        while emitted[portfolio] < len(pending) and last is not None and pending[emitted[portfolio]][0].offset <= last:
            fill_record, fill = pending[emitted[portfolio]]
            yield Step("fills", fill_record, fill)
            emitted[portfolio] += 1
        yield Step("signals", source, decoded(Signal, source), decision, record)
    for portfolio, pending in fills_of.items():
        for fill_record, fill in pending[emitted[portfolio]:]:
            yield Step("fills", fill_record, fill)


class Instruments:
    """Every instrument record read from the topic, by offset, and the latest per symbol."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.by_offset: dict[int, Instrument] = {}
        self.latest: dict[str, Instrument] = {}
        for record in records:
            instrument = decoded(Instrument, record)
            if instrument is not None:
                self.by_offset[record.offset] = instrument
                self.latest[instrument.symbol] = instrument

    def at(self, symbol: str, offset: int | None) -> tuple[Instrument | None, bool]:
        """The instrument a decision used, and whether that exact record was found
        (a compacted topic may have dropped an old version; then the latest stands in)."""
        if offset is None:
            return None, True
        instrument = self.by_offset.get(offset)
        if instrument is not None:
            return instrument, True
        return self.latest.get(symbol), False


@dataclass(frozen=True, slots=True)
class Rederived:
    step: Step
    decision: Decision | None  # None when the recorded config hash cannot be resolved
    order: Order | None
    exact_instrument: bool = True


def rederive(
    steps: Iterable[Step],
    instruments: Instruments,
    config_for: Callable[[str], SizingConfig | None],
    default: SizingConfig | None = None,
) -> Iterator[Rederived]:
    """Run the engine over recorded steps with the original input positions.

    Each signal is decided with the configuration its recorded decision names
    (`config_for(hash)`), or with `default` throughout when given (a what-if).
    Fills are applied with the configuration of the portfolio's latest decision;
    fills that come before a portfolio's first decision wait for it."""
    states: dict[str, PortfolioState] = {}
    current: dict[str, SizingConfig] = {}
    waiting: dict[str, list[Step]] = defaultdict(list)

    def apply(portfolio: str, step: Step, config: SizingConfig) -> None:
        state = states.get(portfolio) or PortfolioState.fresh(config)
        states[portfolio] = apply_fill(step.message, state, config, step.record.offset)[0]

    for step in steps:
        message = step.message
        if message is None:
            continue
        portfolio = message.portfolio_id
        if step.role == "fills":
            config = default or current.get(portfolio)
            if config is None:
                waiting[portfolio].append(step)
            else:
                apply(portfolio, step, config)
            continue
        recorded = step.recorded or {}
        config = default or config_for(recorded.get("config_hash", ""))
        if config is None:
            yield Rederived(step, None, None)
            continue
        current[portfolio] = config
        for held in waiting.pop(portfolio, ()):
            apply(portfolio, held, config)
        state = states.get(portfolio) or PortfolioState.fresh(config)
        position = recorded.get("trace", {}).get("input", {})
        instrument, exact = instruments.at(message.symbol, position.get("instrument_offset"))
        result = decide(message, instrument, state, config, InputPosition(
            position.get("topic", step.record.topic), step.record.partition, step.record.offset,
            position.get("instrument_offset")))
        states[portfolio] = result.state
        yield Rederived(step, result.decision, result.order, exact)
