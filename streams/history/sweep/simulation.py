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
    run = Run()
    states: dict[str, PortfolioState] = {}
    what_if_qty: dict[str, Decimal] = {}
    index = {p: i for i, p in enumerate(history.portfolios)}
    fresh = PortfolioState.fresh(config)
    cap_of = config.portfolio_cap.amount
    config_hash = config.config_hash
    rejected, first_changes = run.rejected, run.first_changes
    accepted = unfilled = changed = compared = identical = 0
    notional = ZERO
    # Bound once: this loop runs once per event and configuration.
    exposure_sample, close_sample = run.exposure.append, run.closes.append
    get_state, get_qty = states.get, what_if_qty.get
    for sequence, event in enumerate(history.events):
        kind, message = event[0], event[1]
        portfolio = message.portfolio_id
        state = get_state(portfolio, fresh)
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
            if raw is not None and decision.config_hash == config_hash and _hash_of(raw) == config_hash:
                compared += 1
                identical += to_json(decision).encode() == raw
            states[portfolio] = state
            if trail is not None:
                trail.append(("decision", signal.signal_id, outcome, reason, qty, decision.notional))
            exposure_sample((signal.ts, sequence, index[portfolio], after, cap_of(state.streak.equity)))
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
                         cap_of(state.streak.equity)))
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
