"""The history a sweep runs over: recorded inputs and decisions, from an offline
journal or from Kafka topic history, turned once into a list of events.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any, Callable, Iterable, Iterator, Sequence


from streams.wire.framing import payload
from streams.config import SizingConfig
from streams.engine import InputPosition, PortfolioState, apply_control, apply_fill, decide
from streams.engine.state import remember_ended, reservation
from streams.wire import journal
from streams.wire.decimals import ENGINE_CONTEXT, ZERO
from streams.wire.models import Instrument, OrderCanceled, OrderFilled, PositionClosed, Signal


SCALE_QUANTUM = Decimal("1e-18")

# Event kinds: tuples keep 150,000 events x 12 configurations cheap.
SIGNAL, FILL, CANCEL, CLOSE, CONTROL = 0, 1, 2, 3, 4
# (SIGNAL, signal, instrument | None, InputPosition, recorded qty | None (not accepted), recorded brief, recorded raw | None)
# (FILL, order_filled, offset, recorded order qty | None (no recorded decision))
# (CANCEL, order_canceled, offset, whether the recording accepted that order)
# (CLOSE, position_closed, offset, recorded position qty before the close)
# (CONTROL, operator command, offset): applied as recorded


@dataclass
class History:
    """What every configuration is swept over: events in the recorded order."""

    source: str
    events: list[tuple[Any, ...]] = field(default_factory=list)
    portfolios: list[str] = field(default_factory=list)
    signals: int = 0
    fills: int = 0
    closes: int = 0
    recorded_hashes: set[str] = field(default_factory=set)
    bad_lines: int = 0


def brief(outcome: str, reason: str | None, qty: Decimal | None) -> tuple[str, str | None, Decimal | None]:
    """A decision as compared between configurations: outcome, reason, quantity."""
    return outcome, reason, qty


class RecordedPositions:
    """The recording's open positions per portfolio and symbol, replayed by the engine
    from the recorded orders (as reservations) and the recorded fills: the
    denominator of a close's share."""

    def __init__(self, config: SizingConfig) -> None:
        self._config = config
        self._states: dict[str, PortfolioState] = {}

    def _state(self, portfolio: str) -> PortfolioState:
        state = self._states.get(portfolio)
        return state if state is not None else PortfolioState.fresh(self._config, portfolio)

    def accepted(self, signal: Signal, instrument: Instrument | None, order_id: str, qty: Decimal) -> None:
        state = self._state(signal.portfolio_id)
        legs = tuple(leg.venue_symbol for leg in instrument.legs) if instrument is not None else ("",)
        group = instrument.group if instrument is not None else None
        held = reservation(signal.symbol, qty, signal.price, signal.ts, legs, signal.side, group)
        if signal.intent == "reduce":  # reserves nothing; its fills never add to the position
            exposure = state.exposure._replace(ended_orders=remember_ended(
                state.exposure.ended_orders, order_id, held._replace(reduce=True)))
        else:
            exposure = state.exposure._replace(reservations={**state.exposure.reservations, order_id: held})
        self._states[signal.portfolio_id] = state._replace(exposure=exposure)

    def held(self, portfolio: str, symbol: str) -> Decimal:
        position = self._state(portfolio).exposure.positions.get(symbol)
        return ZERO if position is None else position.qty

    def apply(self, fill: Any, offset: int | None) -> None:
        self._states[fill.portfolio_id] = apply_fill(fill, self._state(fill.portfolio_id), self._config, offset).state


class _Builder:
    """Turns recorded inputs and decisions into sweep events, in order."""

    def __init__(self, history: History, positions: RecordedPositions | None) -> None:
        """`positions`: replays the recorded positions; None when the caller knows them
        (a journal's recorded state) and passes `held` with every close."""
        self.history = history
        self.positions = positions
        self.recorded_orders: dict[str, Decimal] = {}
        self.seen_portfolios: dict[str, None] = {}

    def signal(self, signal: Signal, instrument: Instrument | None, position: InputPosition, outcome: str,
               reason: str | None, order_id: str | None, qty: Decimal | None, config_hash: str,
               raw: bytes | None) -> None:
        self.seen_portfolios.setdefault(signal.portfolio_id)
        recorded_qty = None
        if outcome == "accepted" and order_id is not None and qty is not None:
            recorded_qty = qty
            self.recorded_orders[order_id] = qty
            if self.positions is not None:
                self.positions.accepted(signal, instrument, order_id, qty)
        self.history.recorded_hashes.add(config_hash)
        self.history.signals += 1
        self.history.events.append((SIGNAL, signal, instrument, position, recorded_qty,
                                    brief(outcome, reason, qty), raw))

    def fill(self, fill: Any, offset: int | None, held: Decimal | None = None) -> None:
        self.seen_portfolios.setdefault(fill.portfolio_id)
        self.history.fills += 1
        if isinstance(fill, OrderFilled):
            event = (FILL, fill, offset, self.recorded_orders.get(fill.order_id))
        elif isinstance(fill, OrderCanceled):
            event = (CANCEL, fill, offset, fill.order_id in self.recorded_orders)
        else:
            self.history.closes += 1
            if held is None:
                held = self.positions.held(fill.portfolio_id, fill.symbol)  # type: ignore[union-attr]
            event = (CLOSE, fill, offset, held)
        if self.positions is not None:
            self.positions.apply(fill, offset)
        self.history.events.append(event)

    def control(self, command: Any, offset: int | None) -> None:
        self.seen_portfolios.setdefault(command.portfolio_id)
        self.history.events.append((CONTROL, command, offset))

    def done(self) -> History:
        self.history.portfolios = list(self.seen_portfolios)
        return self.history


def from_journal(lines: Iterable[str | bytes], recorded: SizingConfig,
                 report_bad_line: Callable[[int, str], None] = lambda n, r: None, workers: int = 1) -> History:
    """A journal's events, its decisions made under `recorded` (the configuration its
    fills were recorded with), with positions as `sizer replay` numbers them.

    The journal is decoded here; with `workers` > 1 (and a journal of at least
    PARALLEL_READ_MIN_INPUTS inputs) the recorded decisions are re-made in that many
    forked processes, each over its share of the portfolios (they share no state).
    The history is the same whatever the number of workers."""
    # In the engine's context throughout: each engine call then skips setting up its own.
    with localcontext(ENGINE_CONTEXT):
        builder = _Builder(History("journal"), None)
        entries = []
        for entry in journal.read(lines, recorded.max_future_skew_ms):
            if entry.error is not None:
                builder.history.bad_lines += 1
                report_bad_line(entry.line, str(entry.error))
                continue
            entries.append(entry)
        recorded_of = _recorded(entries, recorded, workers)
        for topic, message, offset, instrument in _inputs(entries):
            said = next(recorded_of[message.portfolio_id])
            if topic == "fills":
                builder.fill(message, offset, said)
            elif topic == "controls":
                builder.control(message, offset)
            else:
                outcome, reason, order_id, qty, config_hash = said
                builder.signal(message, instrument, InputPosition("signals", 0, offset), outcome, reason, order_id,
                               qty, config_hash, None)
        return builder.done()


# Below this many inputs the recorded decisions are re-made in one process: forking
# would cost more than it saves.
PARALLEL_READ_MIN_INPUTS = 20_000


def _inputs(entries: Sequence[journal.Entry]) -> Iterator[tuple[str, Any, int, Instrument | None]]:
    """(topic, message, offset in its topic, the instrument in force for a signal) of
    every decoded input of the journal in order; instrument records are applied, not yielded."""
    instruments: dict[str, Instrument] = {}
    offsets = {"signals": 0, "fills": 0, "controls": 0}
    for entry in entries:
        message = entry.message
        topic = entry.topic
        if topic == "instruments":
            instruments[message.symbol] = message
            continue
        offset = offsets[topic]
        offsets[topic] += 1
        yield topic, message, offset, instruments.get(message.symbol) if topic == "signals" else None


def _recorded(entries: Sequence[journal.Entry], recorded: SizingConfig, workers: int) -> dict[str, Iterator[Any]]:
    """Per portfolio, what the recording said of each of its inputs in order: a signal's
    (outcome, reason, order id, qty, config hash), a close's recorded position in its
    symbol before it (None for other fills and for commands)."""
    inputs: Counter = Counter()
    for entry in entries:
        if entry.topic != "instruments":
            inputs[entry.message.portfolio_id] += 1
    groups = _groups(inputs, workers if sum(inputs.values()) >= PARALLEL_READ_MIN_INPUTS else 1)
    global _READING
    if len(groups) == 1 or "fork" not in multiprocessing.get_all_start_methods():
        parts = [_recorded_part(entries, recorded, None)]
        groups = [set(inputs)]
    else:
        _READING = (entries, recorded, groups)
        try:
            with multiprocessing.get_context("fork").Pool(len(groups)) as pool:
                parts = pool.map(_recorded_group, range(len(groups)), chunksize=1)
        finally:
            _READING = None
    said: dict[str, Iterator[Any]] = {}
    for group, part in zip(groups, parts):
        shared = iter(part)  # the group's inputs in journal order: each portfolio takes its own in turn
        for portfolio in group:
            said[portfolio] = shared
    return said


def _groups(inputs: Counter, count: int) -> list[set[str]]:
    """Portfolios in `count` groups of about equal inputs (largest first, to the lightest group)."""
    count = max(1, min(count, len(inputs)))
    groups: list[set[str]] = [set() for _ in range(count)]
    loads = [0] * count
    for portfolio, n in sorted(inputs.items(), key=lambda item: (-item[1], item[0])):
        lightest = loads.index(min(loads))
        groups[lightest].add(portfolio)
        loads[lightest] += n
    return groups


# The decoded journal of a read in progress: forked processes inherit it.
_READING: tuple[Sequence[journal.Entry], SizingConfig, list[set[str]]] | None = None


def _recorded_group(index: int) -> list[Any]:
    entries, recorded, groups = _READING  # type: ignore[misc]
    with localcontext(ENGINE_CONTEXT):
        return _recorded_part(entries, recorded, groups[index])


def _recorded_part(entries: Sequence[journal.Entry], recorded: SizingConfig, portfolios: set[str] | None
                   ) -> list[Any]:
    """What the recording said of the inputs of `portfolios` (None: all), in journal order."""
    said: list[Any] = []
    states: dict[str, PortfolioState] = {}
    fresh = PortfolioState.fresh(recorded)
    for topic, message, offset, instrument in _inputs(entries):
        portfolio = message.portfolio_id
        if portfolios is not None and portfolio not in portfolios:
            continue
        state = states.get(portfolio) or (
            fresh if not recorded.portfolios else PortfolioState.fresh(recorded, portfolio))
        if topic == "fills":
            held = None
            if isinstance(message, PositionClosed):
                position = state.exposure.positions.get(message.symbol)
                held = ZERO if position is None else position.qty
            states[portfolio] = apply_fill(message, state, recorded, offset).state
            said.append(held)
        elif topic == "controls":
            states[portfolio] = apply_control(message, state, recorded, offset).state
            said.append(None)
        else:
            result = decide(message, instrument, state, recorded, InputPosition("signals", 0, offset), False)
            states[portfolio] = result.state
            d = result.decision
            said.append((d.outcome, d.reason, d.order_id, d.qty, d.config_hash))
    return said


def from_kafka(records: dict[str, list[Any]], config: SizingConfig) -> History:
    """Topic history in the interleaving the decisions recorded (as the audit rebuilds
    it), each signal with the instrument record its decision names. `config` only
    sizes the recorded positions' dedupe windows."""
    with localcontext(ENGINE_CONTEXT):  # as `from_journal`
        return _from_kafka(records, config)


def _from_kafka(records: dict[str, list[Any]], config: SizingConfig) -> History:
    from streams.history.interleaving import Instruments, dead_lettered, recorded_interleaving

    builder = _Builder(History("kafka"), RecordedPositions(config))
    instruments = Instruments(records["instruments"])
    decisions = [(record, record.json()) for record in records["decisions"]]
    dead = dead_lettered(records.get("dlq", ()))
    for step in recorded_interleaving(records["signals"], records["fills"], decisions, dead,
                                      records.get("controls", ())):
        message = step.message
        if message is None:
            continue
        if step.role == "fills":
            builder.fill(message, step.record.offset)
            continue
        if step.role == "controls":
            builder.control(message, step.record.offset)
            continue
        recorded = step.recorded or {}
        where = recorded.get("trace", {}).get("input", {})
        instrument, _ = instruments.at(message.symbol, where.get("instrument_offset"))
        position = InputPosition(where.get("topic", step.record.topic), step.record.partition, step.record.offset,
                                 where.get("instrument_offset"))
        qty = recorded.get("qty")
        builder.signal(message, instrument, position, recorded.get("outcome", "rejected"), recorded.get("reason"),
                       recorded.get("order_id"), None if qty is None else Decimal(qty),
                       recorded.get("config_hash", ""),
                       payload(step.decision_record.value) if step.decision_record is not None else None)
    return builder.done()
