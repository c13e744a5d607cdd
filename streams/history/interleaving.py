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
from typing import Any, Callable, Iterable, Iterator, Mapping

from streams.wire.admission import admit_record
from streams.config import SizingConfig
from streams.engine import InputPosition, PortfolioState, Result, apply_control, apply_fill, decide
from streams.errors import InvalidMessage
from streams.kafka.io import Record
from streams.wire.models import Decision, Instrument, Order
from streams.wire.framing import EITHER, payload
from streams.wire.instruments import InstrumentBook

# (topic, partition, offset) of an input record
Source = tuple[str, int, int]


def dead_lettered(dlq: Iterable[Record]) -> dict[Source, str]:
    """Every input the worker dead-lettered, from the `sizer.source.*` headers of the
    dead-letter topic, with its reason. A record there without those headers (not
    the worker's) is ignored."""
    dead: dict[Source, str] = {}
    for record in dlq:
        topic, partition, offset = (record.header(name) for name in
                                    ("sizer.source.topic", "sizer.source.partition", "sizer.source.offset"))
        try:
            source = (topic, int(partition), int(offset)) if topic is not None else None
        except (TypeError, ValueError):
            source = None
        if source is not None:
            dead[source] = record.header("sizer.reason") or ""
    return dead


def admitted(role: str, record: Record, dead: Mapping[Source, str] | None = None) -> Any:
    """The record as its role's message where the worker admitted it, else None.

    What the worker dead-lettered (`dead`, from the dead-letter topic) it did not
    admit, whatever the reason: FUTURE_TIMESTAMP depends on the configuration's
    skew and PROCESSING_ERROR on the engine of the day, so the dead-letter topic,
    not a second guess, says. Everything else is admitted by `admit_record` (key,
    tombstone, decoding; a value framed in the Confluent wire format or not: the
    dead-letter topic names SCHEMA_ID refusals); the time check is the dead-letter topic's to answer."""
    if dead is not None and (record.topic, record.partition, record.offset) in dead:
        return None
    try:
        return admit_record(role, record.key, payload(record.value), None, 0)
    except InvalidMessage:
        return None


@dataclass(frozen=True, slots=True)
class Step:
    """One input in the recorded order; a signal carries the decision recorded for it."""

    role: str  # "signals" | "fills" | "controls"
    record: Record
    message: Any
    recorded: dict[str, Any] | None = None
    decision_record: Record | None = None


def recorded_interleaving(
    signals: Iterable[Record], fills: Iterable[Record], decisions: Iterable[Record | tuple[Record, dict[str, Any]]],
    dead: Mapping[Source, str] | None = None, controls: Iterable[Record] = (),
) -> Iterator[Step]:
    """Per portfolio, in the order the worker applied them: before each decided
    signal, the portfolio's fills up to the `last_fill_offset` its decision names,
    with the operator commands its trace lists (`controls_applied`, each placed
    after the fill it followed) and any other command up to `last_control_offset`;
    the fills and commands after the last decision at the end. A signal decided
    more than once appears once per decision. Decisions may come already decoded,
    as (record, data). Inputs the worker did not admit (see `admitted`) are left
    out; a decision naming such a signal comes with no message."""
    # By partition and offset within the signals topic being read; the recorded topic
    # name is checked as a field of the decision like any other.
    signal_at = {(r.partition, r.offset): r for r in signals}
    fills_of = _by_portfolio("fills", fills, dead)
    controls_of = _by_portfolio("controls", controls, dead)
    emitted: dict[str, int] = defaultdict(int)  # fills of the portfolio already stepped
    commanded: dict[str, set[int]] = defaultdict(set)  # offsets of its commands already stepped
    for item in decisions:  # per partition, in the order they were written
        record, decision = item if isinstance(item, tuple) else (item, item.json())
        if not isinstance(decision, dict):
            continue  # not a decision the worker wrote (a tombstone on the topic)
        position = decision["trace"]["input"]
        source = signal_at.get((position["partition"], position["offset"]))
        if source is None:
            continue
        portfolio = decision["portfolio_id"]
        last_fill = position["last_fill_offset"]
        last_control = position.get("last_control_offset")
        # each listed command comes right after the fill it followed (None: before any)
        after_fill = {offset: fill for offset, fill in position.get("controls_applied", ())}
        commands = [(after_fill.get(r.offset, last_fill), r, c) for r, c in controls_of.get(portfolio, ())
                    if r.offset not in commanded[portfolio]
                    and (r.offset in after_fill or (last_control is not None and r.offset <= last_control))]
        pending = fills_of.get(portfolio, [])
        for fill_at, command_record, command in commands:
            yield from _fills_through(portfolio, pending, emitted, fill_at)
            commanded[portfolio].add(command_record.offset)
            yield Step("controls", command_record, command)
        yield from _fills_through(portfolio, pending, emitted, last_fill)
        yield Step("signals", source, admitted("signals", source, dead), decision, record)
    for portfolio, pending in fills_of.items():
        for fill_record, fill in pending[emitted[portfolio]:]:
            yield Step("fills", fill_record, fill)
    for portfolio, commands in controls_of.items():
        for command_record, command in commands:
            if command_record.offset not in commanded[portfolio]:
                yield Step("controls", command_record, command)


def _by_portfolio(role: str, records: Iterable[Record], dead: Mapping[Source, str] | None
                  ) -> dict[str, list[tuple[Record, Any]]]:
    """The admitted inputs of a portfolio-keyed topic per portfolio, in offset order."""
    of: dict[str, list[tuple[Record, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        message = admitted(role, record, dead)
        if message is not None:
            of[message.portfolio_id].append((record, message))
    return of


def _fills_through(portfolio: str, pending: list[tuple[Record, Any]], emitted: dict[str, int],
                   last: int | None) -> Iterator[Step]:
    """The portfolio's fills not yet stepped, up to offset `last` (None: none)."""
    while emitted[portfolio] < len(pending) and last is not None and pending[emitted[portfolio]][0].offset <= last:
        fill_record, fill = pending[emitted[portfolio]]
        yield Step("fills", fill_record, fill)
        emitted[portfolio] += 1


class Instruments:
    """Every instrument record read from the topic that the worker applies, by offset,
    and the ones in force at the end (by the worker's own rule, `InstrumentBook`)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.by_offset: dict[int, Instrument] = {}
        book = InstrumentBook(EITHER)
        for record in records:
            if book.apply(record.key, record.value, record.offset, record.timestamp, record.headers):
                instrument = book.instruments.get(record.key.decode()) if record.key is not None else None
                if instrument is not None and record.value is not None:
                    self.by_offset[record.offset] = instrument
        self.latest: dict[str, Instrument] = book.instruments

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
    decision: Decision | None  # None when it cannot be re-derived: `unverifiable` says why
    order: Order | None
    exact_instrument: bool = True
    unverifiable: str | None = None


def rederive(
    steps: Iterable[Step],
    instruments: Instruments,
    config_for: Callable[[str, str], SizingConfig | None],
    default: SizingConfig | None = None,
) -> Iterator[Rederived]:
    """Run the engine over recorded steps with the original input positions.

    Each signal is decided with the configuration its recorded decision names
    (`config_for(hash, portfolio_id)`), or with `default` throughout when given (a what-if).
    Fills and operator commands are applied with the configuration of the
    portfolio's latest decision; those that come before a portfolio's first
    decision wait for it.

    A decision whose configuration cannot be resolved (its record gone from the
    compacted configuration topic) cannot be re-derived, and neither can any later
    decision of its portfolio, whose state it moved: each comes back with no
    decision and says why (`unverifiable`), rather than as a false mismatch."""
    states: dict[str, PortfolioState] = {}
    current: dict[str, SizingConfig] = {}
    waiting: dict[str, list[Step]] = defaultdict(list)
    unknown_since: dict[str, str] = {}  # portfolio -> the config hash its state was lost to

    def apply(portfolio: str, step: Step, config: SizingConfig) -> None:
        state = states.get(portfolio) or PortfolioState.fresh(config, portfolio)
        transition = apply_fill if step.role == "fills" else apply_control
        states[portfolio] = transition(step.message, state, config, step.record.offset)[0]

    for step in steps:
        message = step.message
        if message is None:
            continue
        portfolio = message.portfolio_id
        if step.role in ("fills", "controls"):
            config = default or current.get(portfolio)
            if config is None:
                waiting[portfolio].append(step)
            else:
                apply(portfolio, step, config)
            continue
        recorded = step.recorded or {}
        if portfolio in unknown_since:
            yield Rederived(step, None, None, unverifiable=f"an earlier decision of {portfolio} names config "
                                                           f"{unknown_since[portfolio]}, which is not recorded")
            continue
        config = default or config_for(recorded.get("config_hash", ""), portfolio)
        if config is None:
            unknown_since[portfolio] = recorded.get("config_hash", "")
            yield Rederived(step, None, None, unverifiable=f"config {unknown_since[portfolio]} is not recorded")
            continue
        current[portfolio] = config
        for held in waiting.pop(portfolio, ()):
            apply(portfolio, held, config)
        result, exact = _decide_at_recorded_position(
            step, states.get(portfolio) or PortfolioState.fresh(config, portfolio), config, instruments)
        states[portfolio] = result.state
        yield Rederived(step, result.decision, result.order, exact)


def _decide_at_recorded_position(step: Step, state: PortfolioState, config: SizingConfig,
                                 instruments: Instruments) -> tuple[Result, bool]:
    """The engine's result for a recorded signal, at the input position and with the
    instrument version its recorded decision names; and whether that exact version
    was found."""
    position = (step.recorded or {}).get("trace", {}).get("input", {})
    instrument, exact = instruments.at(step.message.symbol, position.get("instrument_offset"))
    result = decide(step.message, instrument, state, config, InputPosition(
        position.get("topic", step.record.topic), step.record.partition, step.record.offset,
        position.get("instrument_offset")))
    return result, exact
