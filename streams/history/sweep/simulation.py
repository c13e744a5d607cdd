"""One configuration over a history: the engine over the events, with fills and
closes scaled to the configuration's own sizes (the PnL model: `history.sweep`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, ROUND_HALF_EVEN
from typing import Any


from streams.config import SizingConfig
from streams.engine import PortfolioState, apply_control, apply_fill, decide, order_id_for
from streams.engine.state import reservation
from streams.wire import decimals
from streams.wire.decimals import ZERO
from streams.wire.models import build, to_json

from streams.history.sweep.events import CANCEL, CLOSE, CONTROL, FILL, SCALE_QUANTUM, SIGNAL, History


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
    simulation = _Simulation(history, config, trail)
    # Bound once: this loop runs once per event and configuration.
    signal, control, fill_event = simulation.signal, simulation.control, simulation.fill_event
    for sequence, event in enumerate(history.events):
        kind = event[0]
        if kind == SIGNAL:
            signal(sequence, event)
        elif kind == CONTROL:
            control(event)
        else:
            fill_event(sequence, event)
    return simulation.finish()


class _Simulation:
    """One configuration's run in progress: the what-if states, the what-if quantity
    of every order it placed that the recording filled, and the run's counters."""

    def __init__(self, history: History, config: SizingConfig, trail: list[tuple[Any, ...]] | None) -> None:
        self.history, self.config, self.trail = history, config, trail
        self.run = Run()
        self.states: dict[str, PortfolioState] = {}
        self.what_if_qty: dict[str, Decimal] = {}
        self.index = {p: i for i, p in enumerate(history.portfolios)}
        self.fresh = PortfolioState.fresh(config)
        self.per_portfolio = bool(config.portfolios)
        self.config_hash = config.config_hash
        # the effective configurations of the portfolios' own tables: their decisions are compared too
        self.hashes = {c.config_hash for c in config.effective_configurations()} if self.per_portfolio else {
            self.config_hash}
        self.exposure_sample, self.close_sample = self.run.exposure.append, self.run.closes.append

    def signal(self, sequence: int, event: tuple[Any, ...]) -> None:
        """A signal decided under the configuration, compared with the recorded decision."""
        _, signal, instrument, position, recorded_qty, recorded, raw = event
        portfolio, run, config = signal.portfolio_id, self.run, self.config
        state = self._state(portfolio)
        # explained only where the record it makes is compared with the recorded one
        decision, _, state = decide(signal, instrument, state, config, position, raw is not None)
        after = decision.trace["state"]["exposure"]
        outcome, reason, qty = decision.outcome, decision.reason, decision.qty
        if outcome == "accepted":
            run.accepted += 1
            run.notional += decision.notional
            if recorded_qty is None:
                state = _released(state, decision.order_id)
                run.unfilled += 1
            else:
                self.what_if_qty[decision.order_id] = qty
                after += decision.notional
        else:
            run.rejected[reason] += 1
            if recorded_qty is not None:
                # the recording placed an order under this id again (its signal id resent
                # past the dedupe windows): the fills that follow are that order's, which
                # this configuration refused; an earlier order of the same id is over
                self.what_if_qty.pop(order_id_for(portfolio, signal.signal_id), None)
        if outcome != recorded[0] or reason != recorded[1] or qty != recorded[2]:
            run.changed += 1
            if len(run.first_changes) < 20:
                run.first_changes.append({"signal_id": signal.signal_id, "portfolio_id": portfolio,
                                          "recorded": _said(recorded), "what_if": _said((outcome, reason, qty))})
        if raw is not None and decision.config_hash in self.hashes and _hash_of(raw) == decision.config_hash:
            run.compared += 1
            run.identical += to_json(decision).encode() == raw
        self.states[portfolio] = state
        if self.trail is not None:
            self.trail.append(("decision", signal.signal_id, outcome, reason, qty, decision.notional))
        self.exposure_sample((signal.ts, sequence, self.index[portfolio], after, self.cap_of(portfolio, state)))

    def control(self, event: tuple[Any, ...]) -> None:
        """An operator command, applied as recorded."""
        message = event[1]
        portfolio = message.portfolio_id
        self.states[portfolio] = apply_control(message, self._state(portfolio), self.config, event[2]).state

    def fill_event(self, sequence: int, event: tuple[Any, ...]) -> None:
        """A fill, cancel or close, scaled to the what-if's own order or position (or
        left out where the what-if has none), then applied."""
        kind, message, offset = event[0], event[1], event[2]
        portfolio = message.portfolio_id
        state = self._state(portfolio)
        equity_before = state.streak.equity
        message = self._scaled_to_what_if(kind, message, event[3], state)
        if message is None:
            return
        applied = apply_fill(message, state, self.config, offset)
        if not applied.changed:
            return
        state = applied.state
        self.states[portfolio] = state
        if self.trail is not None:
            self.trail.append((("fill", "cancel", "close")[kind - 1], message.event_id, getattr(message, "qty", None),
                               getattr(message, "realized_pnl", None)))
        if kind == CLOSE:
            self.close_sample((message.ts, sequence, self.index[portfolio], message.realized_pnl, equity_before))
        self.exposure_sample((message.ts, sequence, self.index[portfolio],
                              state.position_value(self.config) + state.reserved(), self.cap_of(portfolio, state)))

    def _state(self, portfolio: str) -> PortfolioState:
        """The portfolio's what-if state (fresh under its own configuration at first)."""
        state = self.states.get(portfolio)
        if state is None:
            return self.fresh if not self.per_portfolio else PortfolioState.fresh(self.config, portfolio)
        return state

    def cap_of(self, portfolio: str, state: PortfolioState) -> Decimal:
        """The portfolio's exposure cap now (its own configuration's, USD)."""
        config = self.config.for_portfolio(portfolio) if self.per_portfolio else self.config
        return config.portfolio_cap.amount(state.streak.equity)

    def _scaled_to_what_if(self, kind: int, message: Any, recorded: Any, state: PortfolioState) -> Any:
        """The fill event as the what-if sees it, or None when it has nothing to apply it
        to. `recorded`: the recorded order qty (FILL; None: no recorded decision), whether
        the recording accepted the order (CANCEL), the recorded position qty (CLOSE)."""
        if kind == FILL:
            if recorded is not None:
                qty = self.what_if_qty.get(message.order_id)
                if qty is None:
                    return None  # the what-if rejected this order: none of its fills
                if qty != recorded:
                    message = _with(message, qty=_scaled(message.qty, qty, recorded))
        elif kind == CANCEL:
            if recorded and message.order_id not in self.what_if_qty:
                return None
        elif recorded:
            held = state.exposure.positions.get(message.symbol)
            if held is None:
                return None  # nothing held in the what-if: no trade to close
            if held.qty != recorded:
                message = _with(message, qty=_scaled(message.qty, held.qty, recorded),
                                realized_pnl=_scaled(message.realized_pnl, held.qty, recorded))
        return message

    def finish(self) -> Run:
        """The run, its samples in event-time order and each portfolio's final figures."""
        run = self.run
        # By event time; the sequence number keeps the recorded order among equal times.
        run.exposure.sort()
        run.closes.sort()
        for portfolio in self.history.portfolios:
            state = self._state(portfolio)
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
