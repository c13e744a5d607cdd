"""`sizer sweep`: many configurations over the same history, with PnL at the
what-if size (DESIGN.md, "Audit and replay").

The history is either an offline journal (its decisions are re-made under the
configuration the journal was recorded with) or Kafka topic history in the
interleaving the worker recorded (`history.recorded_interleaving`). It is turned
once into a list of events; every configuration then runs the engine over the
same events in worker processes, except one that differs from a configuration
already run only in settings that run never read: it takes that run's figures
(`same_run`).

The PnL model. Each what-if order's fills are the recorded fills of the same
order (order ids are derived from portfolio and signal, so they are shared)
scaled by what-if qty / recorded qty; an order the what-if rejected gets no
fills, and an order the what-if accepted but the recording did not has no fills
to scale: its reservation is released at once and it is counted as `unfilled`.
A `position_closed` names a symbol, not an order: its quantity and realized PnL
are scaled by the what-if position's share of the recorded position in that
symbol just before the close (the recorded position is replayed alongside from
the recorded orders and fills). A fill of an order the history has no decision
for, or a close with no recorded position, is not tied to any signal of the
history and is applied as recorded. Everything scaled feeds the what-if state:
streaks, equity, phases, percentage caps and drawdown mode follow the policy's
own PnL. No market impact; fills at the recorded prices. Operator commands
of a journal apply to every configuration as recorded; Kafka history carries
none yet (the recorded interleaving is rebuilt from signals and fills).

Money is Decimal throughout; scaled quantities and PnL are rounded half-even
to 1e-18 (the wire's finest place).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Context, Decimal, ROUND_HALF_EVEN, localcontext
from typing import Any, Callable, Iterable, Iterator, Sequence

from streams.wire import decimals

from streams.history import journal
from streams.config import PRESETS, SizingConfig, load_config
from streams.wire.decimals import ENGINE_CONTEXT, ZERO
from streams.engine import InputPosition, PortfolioState, apply_control, apply_fill, decide, order_id_for
from streams.engine.state import remember_ended, reservation
from pydantic import ValidationError

from streams.errors import ConfigError, field_errors
from streams.wire.models import Instrument, OrderCanceled, OrderFilled, PositionClosed, Signal, build, to_json

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
        held = reservation(signal.symbol, qty, signal.price, signal.ts, legs, signal.side, instrument and instrument.group)
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
        state = states.get(portfolio) or (fresh if not recorded.portfolios else PortfolioState.fresh(recorded, portfolio))
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
                       step.decision_record.value if step.decision_record is not None else None)
    return builder.done()


# -- configurations ------------------------------------------------------------------------------------------

POLICIES = ("static", "conviction", "graduated")


@dataclass(frozen=True)
class Configuration:
    """One configuration of a sweep: the policy it starts from and the grid point on it."""

    label: str
    policy: str
    params: tuple[tuple[str, str], ...]
    config: SizingConfig


def policy_config(spec: str, option: str = "--policy") -> tuple[str, SizingConfig]:
    """`static` (the conviction preset with sizing disabled: the per-pair maximum for
    every signal), `conviction`, `graduated`, or a TOML config file: (name, config).
    Presets take `SIZING_*` from the environment like every other command. `option`:
    the command-line option that named it, for the error."""
    if spec == "static":
        base = load_config("conviction")
        return "static", with_values(base, {"enabled": False})
    if spec in PRESETS:
        return spec, load_config(spec)
    if os.path.exists(spec):
        return os.path.splitext(os.path.basename(spec))[0], load_config(config_file=spec)
    raise ConfigError(f"{option}: must be one of {', '.join(POLICIES)} or a TOML config file, got {spec!r}")


def with_values(config: SizingConfig, values: dict[str, Any]) -> SizingConfig:
    """`config` with some fields replaced, validated as a whole (unknown names are errors)."""
    return SizingConfig.from_effective({**config.effective(), **values})


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--set name=v1,v2,...` options as (name, values), in the order given."""
    grid: list[tuple[str, list[str]]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not items:
            raise ConfigError(f"--set: expected name=value[,value...], got {spec!r}")
        if name in (n for n, _ in grid):
            raise ConfigError(f"--set: {name} given twice")
        if len(set(items)) != len(items):
            raise ConfigError(f"--set: {name} repeats a value")
        grid.append((name, items))
    return grid


def configurations(bases: Sequence[tuple[str, SizingConfig]], grid: Sequence[tuple[str, list[str]]]
                   ) -> list[Configuration]:
    """Every base (policy) at every grid point, in the order given."""
    result: list[Configuration] = []
    names = [name for name, _ in grid]
    for policy, base in bases:
        for point in itertools.product(*(values for _, values in grid)):
            params = tuple(zip(names, point))
            try:
                config = with_values(base, dict(params)) if params else base
            except ConfigError as exc:
                # one line, naming the values given (not "recorded configuration", from_effective's word)
                cause = exc.__cause__
                problems = "; ".join(f"{name}: {rule}" for name, rule, _ in field_errors(cause, "config")) \
                    if isinstance(cause, ValidationError) else str(exc)
                raise ConfigError(f"--set {' '.join(f'{n}={v}' for n, v in params)} on {policy}: {problems}") from exc
            label = " ".join([policy, *(f"{n}={v}" for n, v in params)])
            result.append(Configuration(label, policy, params, config))
    labels = Counter(c.label for c in result)
    repeated = [label for label, n in labels.items() if n > 1]
    if repeated:
        raise ConfigError(f"--policy: {repeated[0]!r} given twice")
    return result


# -- one configuration over the history ----------------------------------------------------------------------

def _scaled(value: Decimal, numerator: Decimal, denominator: Decimal) -> Decimal:
    return (value * numerator / denominator).quantize(SCALE_QUANTUM, rounding=ROUND_HALF_EVEN)


def _with(message: Any, **values: Any) -> Any:
    """A copy of a decoded fill with some values replaced (already checked: no validation)."""
    return build(type(message), **message.__dict__ | values)


def _released(state: PortfolioState, order_id: str) -> PortfolioState:
    """The state without the order's reservation (an order no recorded fill can fill)."""
    reservations = {oid: r for oid, r in state.exposure.reservations.items() if oid != order_id}
    return state._replace(exposure=state.exposure._replace(reservations=reservations))


@dataclass
class Run:
    """What one configuration did over the history: counters and raw samples."""

    accepted: int = 0
    notional: Decimal = ZERO
    rejected: Counter = field(default_factory=Counter)
    unfilled: int = 0
    changed: int = 0
    identical: int = 0
    compared: int = 0
    first_changes: list[dict[str, Any]] = field(default_factory=list)
    # (ts, sequence, portfolio index, exposure after, cap after)
    exposure: list[tuple[int, int, int, Decimal, Decimal]] = field(default_factory=list)
    # (ts, sequence, portfolio index, pnl, portfolio equity before)
    closes: list[tuple[int, int, int, Decimal, Decimal]] = field(default_factory=list)
    final_equity: dict[str, Decimal] = field(default_factory=dict)
    phases: dict[str, int] = field(default_factory=dict)


def simulate(history: History, config: SizingConfig, trail: list[tuple[Any, ...]] | None = None) -> Run:
    """Run `config` over the history's events with fills and closes scaled to its sizes.

    `trail`, when given, receives what the configuration did, event by event:
    ("decision", signal_id, outcome, reason, qty, notional) and ("fill" | "cancel" |
    "close", event_id, qty, realized_pnl) for every fill event applied (qty and pnl
    None where the event has none); a fill event left out is not there."""
    run = Run()
    states: dict[str, PortfolioState] = {}
    what_if_qty: dict[str, Decimal] = {}
    index = {p: i for i, p in enumerate(history.portfolios)}
    fresh = PortfolioState.fresh(config)
    def cap_of(portfolio: str) -> Any:
        return config.for_portfolio(portfolio).portfolio_cap.amount

    config_hash = config.config_hash
    # the effective configurations of the portfolios' own tables: their decisions are compared too
    portfolio_hashes = {c.config_hash for c in config.effective_configurations()} if config.portfolios else set()
    rejected, first_changes = run.rejected, run.first_changes
    accepted = unfilled = changed = compared = identical = 0
    notional = ZERO
    # Bound once: this loop runs once per event and configuration.
    exposure_sample, close_sample = run.exposure.append, run.closes.append
    get_state, get_qty = states.get, what_if_qty.get
    for sequence, event in enumerate(history.events):
        kind, message = event[0], event[1]
        portfolio = message.portfolio_id
        state = get_state(portfolio)
        if state is None:
            state = fresh if not config.portfolios else PortfolioState.fresh(config, portfolio)
        if kind == SIGNAL:
            _, signal, instrument, position, recorded_qty, recorded, raw = event
            # explained only where the record it makes is compared with the recorded one
            decision, _, state = decide(signal, instrument, state, config, position, raw is not None)
            after = decision.trace["state"]["exposure"]
            outcome, reason, qty = decision.outcome, decision.reason, decision.qty
            if outcome == "accepted":
                accepted += 1
                notional += decision.notional
                if recorded_qty is None:
                    state = _released(state, decision.order_id)
                    unfilled += 1
                else:
                    what_if_qty[decision.order_id] = qty
                    after += decision.notional
            else:
                rejected[reason] += 1
                if recorded_qty is not None:
                    # the recording placed an order under this id again (its signal id resent
                    # past the dedupe windows): the fills that follow are that order's, which
                    # this configuration refused; an earlier order of the same id is over
                    what_if_qty.pop(order_id_for(portfolio, signal.signal_id), None)
            if outcome != recorded[0] or reason != recorded[1] or qty != recorded[2]:
                changed += 1
                if len(first_changes) < 20:
                    first_changes.append({"signal_id": signal.signal_id, "portfolio_id": portfolio,
                                          "recorded": _said(recorded), "what_if": _said((outcome, reason, qty))})
            if raw is not None and decision.config_hash == _hash_of(raw) and (
                    decision.config_hash == config_hash or decision.config_hash in portfolio_hashes):
                compared += 1
                identical += to_json(decision).encode() == raw
            states[portfolio] = state
            if trail is not None:
                trail.append(("decision", signal.signal_id, outcome, reason, qty, decision.notional))
            exposure_sample((signal.ts, sequence, index[portfolio], after, cap_of(portfolio)(state.streak.equity)))
            continue
        offset = event[2]
        if kind == CONTROL:
            states[portfolio] = apply_control(message, state, config, offset).state
            continue
        if kind == FILL:
            recorded_qty = event[3]
            if recorded_qty is not None:
                qty = get_qty(message.order_id)
                if qty is None:
                    continue  # the what-if rejected this order: none of its fills
                if qty != recorded_qty:
                    message = _with(message, qty=_scaled(message.qty, qty, recorded_qty))
        elif kind == CANCEL:
            if event[3] and message.order_id not in what_if_qty:
                continue
        else:
            recorded_held = event[3]
            equity_before = state.streak.equity
            if recorded_held:
                held = state.exposure.positions.get(message.symbol)
                if held is None:
                    continue  # nothing held in the what-if: no trade to close
                if held.qty != recorded_held:
                    message = _with(message, qty=_scaled(message.qty, held.qty, recorded_held),
                                    realized_pnl=_scaled(message.realized_pnl, held.qty, recorded_held))
        applied = apply_fill(message, state, config, offset)
        if not applied.changed:
            continue
        state = applied.state
        states[portfolio] = state
        if trail is not None:
            trail.append((("fill", "cancel", "close")[kind - 1], message.event_id, getattr(message, "qty", None),
                          getattr(message, "realized_pnl", None)))
        if kind == CLOSE:
            close_sample((message.ts, sequence, index[portfolio], message.realized_pnl, equity_before))
        exposure_sample((message.ts, sequence, index[portfolio], state.position_value(config) + state.reserved(),
                         cap_of(portfolio)(state.streak.equity)))
    run.accepted, run.notional, run.unfilled, run.changed = accepted, notional, unfilled, changed
    run.compared, run.identical = compared, identical
    # By event time; the sequence number keeps the recorded order among equal times.
    run.exposure.sort()
    run.closes.sort()
    for portfolio in history.portfolios:
        state = states.get(portfolio, fresh)
        run.final_equity[portfolio] = state.streak.equity
        run.phases[portfolio] = state.streak.phase
    return run


def _hash_of(raw: bytes) -> str:
    """The config hash a recorded decision names (always its last field)."""
    tail = raw[-40:]
    start = tail.rfind(b'"config_hash":"')
    return tail[start + 15:-2].decode() if start >= 0 else ""


def _said(value: tuple[str, str | None, Decimal | None]) -> str:
    outcome, reason, qty = value
    return f"accepted {decimals.canonical(qty)}" if outcome == "accepted" and qty is not None else str(reason)


# -- metrics -------------------------------------------------------------------------------------------------

STATS = Context(prec=34, rounding=ROUND_HALF_EVEN)
CENT = Decimal("0.01")
RATIO = Decimal("0.0001")


def _q(value: Decimal | None, quantum: Decimal) -> str | None:
    return None if value is None else decimals.canonical(value.quantize(quantum, rounding=ROUND_HALF_EVEN))


def metrics(history: History, config: SizingConfig, run: Run) -> dict[str, Any]:
    """The figures of one configuration, as JSON data (Decimals as canonical strings).

    - exposure: the sum over portfolios of positions + reservations after every
      input, ordered by event time; `peak_exposure` its maximum, `mean_exposure`
      its event-time-weighted mean over the history's span (the plain mean of the
      samples when the span is zero); `peak_vs_cap_pct` the highest exposure of
      any one portfolio as a % of its cap then, `mean_vs_cap_pct` the time-weighted
      exposure as a % of the time-weighted sum of caps.
    - equity: the sum of every portfolio's equity (starting equity + scaled
      realized PnL) after each close, by event time; `max_drawdown` the largest
      fall from a running peak, `max_drawdown_pct` that fall as a % of the peak
      it fell from; `recovery_s` the event time from that drawdown's trough to the
      first close back at or above the peak (null: not recovered by the end).
    - `sharpe`: mean / sample standard deviation of per-close returns (a close's
      PnL over its portfolio's equity before it), not annualised; null with fewer
      than two closes or no dispersion. Decimal square root: no float anywhere.
    - `pnl_per_exposure`: total PnL per dollar of mean exposure;
      `drawdown_per_exposure`: the max drawdown per dollar of mean exposure, a
      drawdown comparable between policies that trade at different sizes.
    """
    with localcontext(STATS):
        exposure = _exposure_figures(run.exposure, len(history.portfolios))
        equity = _equity_figures(run.closes, config.starting_equity * len(history.portfolios),
                                 run.exposure[0][0] if run.exposure else 0)
        pnl = sum((pnl for _, _, _, pnl, _ in run.closes), ZERO)
        mean_exposure = exposure["mean"]
        per_exposure = pnl / mean_exposure if mean_exposure else None
        drawdown_per_exposure = equity["drawdown"] / mean_exposure if mean_exposure else None
    return {
        "accepted": run.accepted,
        "accepted_notional": decimals.canonical(run.notional),
        "rejected": dict(sorted(run.rejected.items())),
        "unfilled": run.unfilled,
        "closes": len(run.closes),
        "pnl": decimals.canonical(pnl),
        "max_drawdown": decimals.canonical(equity["drawdown"]),
        "max_drawdown_pct": _q(equity["drawdown_pct"], RATIO),
        "recovery_s": None if equity["recovery_ms"] is None else decimals.canonical(
            Decimal(equity["recovery_ms"]) / 1000),
        "sharpe": _q(equity["sharpe"], RATIO),
        "peak_exposure": decimals.canonical(exposure["peak"]),
        "mean_exposure": _q(mean_exposure, CENT),
        "peak_vs_cap_pct": _q(exposure["peak_vs_cap"], RATIO),
        "mean_vs_cap_pct": _q(exposure["mean_vs_cap"], RATIO),
        "pnl_per_exposure": _q(per_exposure, RATIO),
        "drawdown_per_exposure": _q(drawdown_per_exposure, RATIO),
        "decisions_changed": run.changed,
        "final_phases": {str(phase): n for phase, n in sorted(Counter(run.phases.values()).items())},
    }


def _exposure_figures(samples: list[tuple[int, int, int, Decimal, Decimal]], portfolios: int) -> dict[str, Any]:
    ordered = samples  # sorted by `simulate`
    exposure = [ZERO] * portfolios
    cap = [ZERO] * portfolios
    total_exposure = total_cap = ZERO
    weighted_exposure = weighted_cap = ZERO
    peak = ZERO
    peak_at: tuple[Decimal, Decimal] | None = None  # (exposure, cap) at the highest exposure / cap
    summed = ZERO  # the total after every sample: its plain mean when no event time passes
    last_ts: int | None = None
    for ts, _, p, after, cap_now in ordered:
        if last_ts is None:
            last_ts = ts
        elif ts > last_ts:
            weighted_exposure += total_exposure * (ts - last_ts)
            weighted_cap += total_cap * (ts - last_ts)
            last_ts = ts
        total_exposure += after - exposure[p]
        exposure[p] = after
        was = cap[p]
        if cap_now is not was:  # a USD cap is one Decimal throughout: nothing to add
            total_cap += cap_now - was
            cap[p] = cap_now
        if total_exposure > peak:
            peak = total_exposure
        summed += total_exposure
        if cap_now > 0:
            # the highest exposure / cap, compared without dividing; under one cap, by exposure alone
            if peak_at is None:
                peak_at = (after, cap_now)
            elif cap_now is peak_at[1]:
                if after > peak_at[0]:
                    peak_at = (after, cap_now)
            elif after * peak_at[1] > peak_at[0] * cap_now:
                peak_at = (after, cap_now)
    span = ordered[-1][0] - ordered[0][0] if ordered else 0
    # no event time passed: every sample (of the total over portfolios) weighs the same
    mean = weighted_exposure / span if span else (summed / len(ordered) if ordered else ZERO)
    mean_vs_cap = weighted_exposure * 100 / weighted_cap if weighted_cap else None
    peak_vs_cap = None if peak_at is None else peak_at[0] * 100 / peak_at[1]
    return {"peak": peak, "mean": mean, "peak_vs_cap": peak_vs_cap, "mean_vs_cap": mean_vs_cap}


def _equity_figures(closes: list[tuple[int, int, int, Decimal, Decimal]], start_equity: Decimal,
                    start_ts: int) -> dict[str, Any]:
    ordered = closes  # sorted by `simulate`
    equity = peak = start_equity
    worst = ZERO
    worst_peak = trough_at = None
    curve: list[tuple[int, Decimal]] = []
    for i, (ts, _, _, pnl, _) in enumerate(ordered):
        equity += pnl
        curve.append((ts, equity))
        if equity > peak:
            peak = equity
        elif peak - equity > worst:
            worst, worst_peak, trough_at = peak - equity, peak, i
    recovery_ms = None
    if trough_at is not None:
        trough_ts = curve[trough_at][0]
        recovery_ms = next((ts - trough_ts for ts, value in curve[trough_at + 1:] if value >= worst_peak), None)
    returns = [pnl / before for _, _, _, pnl, before in closes if before]
    sharpe = None
    if len(returns) >= 2:
        mean = sum(returns, ZERO) / len(returns)
        variance = sum(((r - mean) ** 2 for r in returns), ZERO) / (len(returns) - 1)
        if variance > 0:
            sharpe = mean / variance.sqrt()
    return {"drawdown": worst, "drawdown_pct": worst * 100 / worst_peak if worst_peak else ZERO,
            "recovery_ms": recovery_ms, "sharpe": sharpe, "curve": curve, "start": (start_ts, start_equity)}


def curves(history: History, config: SizingConfig, run: Run, points: int = 1500) -> dict[str, Any]:
    """Equity and exposure (with the sum of caps) over event time, thinned to about
    `points` each, as floats: for plotting only."""
    with localcontext(STATS):
        equity = _equity_figures(run.closes, config.starting_equity * len(history.portfolios),
                                 run.exposure[0][0] if run.exposure else 0)
    equity_curve = [equity["start"], *equity["curve"]]
    exposure_curve: list[tuple[int, Decimal, Decimal]] = []
    ordered = run.exposure
    per_exposure = [ZERO] * len(history.portfolios)
    per_cap = [ZERO] * len(history.portfolios)
    total_e = total_c = ZERO
    for ts, _, p, after, cap in ordered:
        total_e += after - per_exposure[p]
        total_c += cap - per_cap[p]
        per_exposure[p], per_cap[p] = after, cap
        exposure_curve.append((ts, total_e, total_c))

    def thin(items: list[Any]) -> list[Any]:
        step = max(1, len(items) // points)
        kept = items[::step]
        if items and kept[-1] is not items[-1]:
            kept.append(items[-1])
        return kept

    return {"equity": [(ts, float(v)) for ts, v in thin(equity_curve)],
            "exposure": [(ts, float(e), float(c)) for ts, e, c in thin(exposure_curve)]}


# -- the sweep -----------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    configuration: Configuration
    metrics: dict[str, Any]
    curves: dict[str, Any]
    identical: int
    compared: int
    first_changes: list[dict[str, Any]]
    seconds: float  # wall time of its run; 0 when it shares another's run
    shares_run_of: Configuration | None = None  # the configuration whose run gave these figures (`same_run`)


class SettingsRead:
    """A configuration as one run reads it: the same values, and the names of the
    settings the run read (`read`). A name is looked up on the configuration once and
    kept, so a run reads through it as fast as through the configuration itself."""

    def __init__(self, config: SizingConfig) -> None:
        self._config = config
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._config, name)
        self.read.add(name)
        self.__dict__[name] = value
        return value

    def for_portfolio(self, portfolio_id: str) -> Any:
        """The engine's per-portfolio lookup (`SizingConfig.for_portfolio`), read
        through: without portfolio tables, this same reader; with them, a run reads
        every setting (its portfolios' own), so it shares its figures with no other."""
        if not self.portfolios:
            return self
        self.read.update(type(self._config).model_fields)
        return self._config.for_portfolio(portfolio_id)


def same_run(read: Iterable[str], ran: SizingConfig, other: SizingConfig, compares_records: bool) -> bool:
    """Whether `other` gives exactly the run (and figures) `ran` gave over the same
    history: both hold the same value, of the same type and written the same, for
    every setting the run of `ran` read (`SettingsRead.read`). The engine and the sweep
    read a configuration only by its attributes, so a run is a function of the history
    and of the values it read: `other`, from the same start, reads the same settings,
    gets the same values and makes every step the same. The
    config hash only stamps the decisions a run makes; it counts only when the
    history has recorded decisions to compare them with (`compares_records`)."""
    for name in read:
        if name == "config_hash" and not compares_records:
            continue
        mine, theirs = getattr(ran, name), getattr(other, name)
        if type(mine) is not type(theirs) or repr(mine) != repr(theirs):
            return False
    return True


def dispatch_order(chosen: Sequence[Configuration]) -> list[int]:
    """The order configurations are run in: the first of every policy, then the
    second of every policy, and so on. A policy's first run shows which of the grid's
    settings it never reads; its other configurations that differ only in those
    share that run (`same_run`) instead of being run again."""
    by_policy: dict[str, list[int]] = {}
    for i, configuration in enumerate(chosen):
        by_policy.setdefault(configuration.policy, []).append(i)
    return [i for row in itertools.zip_longest(*by_policy.values()) for i in row if i is not None]


# The history and configurations of the running sweep: forked worker processes
# inherit them instead of receiving a copy through a pipe.
_SHARED: tuple[History, list[Configuration], bool] | None = None


def _one(index: int) -> tuple[int, Outcome, set[str]]:
    """Configuration `index` run over the shared history: (index, its outcome, the
    names of the settings its run read)."""
    import gc

    gc.disable()  # every object a run makes lives until it ends: nothing for the collector to find
    decimals.use_engine_context()
    history, chosen, with_curves = _SHARED  # type: ignore[misc]
    started = time.perf_counter()
    configuration = chosen[index]
    config = SettingsRead(configuration.config)
    as_config: SizingConfig = config  # type: ignore[assignment]  # read as the configuration itself
    run = simulate(history, as_config)
    outcome = Outcome(configuration, metrics(history, as_config, run),
                      curves(history, as_config, run) if with_curves else {}, run.identical,
                      run.compared, run.first_changes, time.perf_counter() - started)
    return index, outcome, config.read


def sweep(history: History, chosen: list[Configuration], workers: int | None = None,
          progress: Callable[[int, int], None] = lambda done, total: None, with_curves: bool = True
          ) -> list[Outcome]:
    """Run every configuration over the history, `workers` processes at a time
    (default: one per core). Results come back in the order of `chosen`; each
    outcome's `curves` only `with_curves` (they are for plots), else empty.

    Configurations run in `dispatch_order`; one not started yet that would give the
    same run as one finished (`same_run`) takes that run's figures instead of being run."""
    global _SHARED
    workers = max(1, min(workers or os.cpu_count() or 1, len(chosen)))
    pending = dispatch_order(chosen)
    results_at: dict[int, Outcome] = {}
    compares_records = history.source == "kafka"

    def finished(index: int, outcome: Outcome, read: set[str]) -> None:
        results_at[index] = outcome
        ran = chosen[index].config
        for other in [j for j in pending if same_run(read, ran, chosen[j].config, compares_records)]:
            pending.remove(other)
            results_at[other] = Outcome(chosen[other], outcome.metrics, outcome.curves, outcome.identical,
                                        outcome.compared, outcome.first_changes, 0.0, chosen[index])
        progress(len(results_at), len(chosen))

    _SHARED = (history, chosen, with_curves)
    try:
        if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
            while pending:
                finished(*_one(pending.pop(0)))
            return [results_at[i] for i in range(len(chosen))]
        import gc
        import queue

        # The history is read-only in the children: keep their pages shared. No collection
        # first: a full pass over the history's objects costs about a second and frees nothing.
        gc.freeze()
        done: queue.SimpleQueue = queue.SimpleQueue()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            running: dict[int, str] = {}  # index -> policy
            while pending or running:
                while pending and len(running) < workers:
                    # another policy first: what a run on shows may spare its policy's next ones
                    index = next((j for j in pending if chosen[j].policy not in running.values()), pending[0])
                    pending.remove(index)
                    running[index] = chosen[index].policy
                    pool.apply_async(_one, (index,), callback=done.put, error_callback=done.put)
                result = done.get()
                if isinstance(result, BaseException):
                    raise result
                del running[result[0]]
                finished(*result)
        gc.unfreeze()
        return [results_at[i] for i in range(len(chosen))]
    finally:
        _SHARED = None
