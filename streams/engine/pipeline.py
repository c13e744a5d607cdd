"""The sizing pipeline: one pure function of (signal, instrument, portfolio state,
config, input position) to a decision, maybe an order, and the new state.

Steps (DESIGN.md): 1 gate, 2 conviction, 3 base size, 4 drawdown, 5 budget,
6 caps, 7 exchange constraints, 8 accept and reserve. Each step writes what it
computed into the trace, so a decision explains itself from its record alone.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, localcontext
from typing import Any, NamedTuple, get_args

from streams.config import SizingConfig
from streams.wire.decimals import ENGINE_CONTEXT, ONE, bounded, canonical, engine_context_active
from streams.engine.constraints import Fit, fit_qty_to_legs, fit_to_legs, sized_legs
from streams.engine.protections import (
    Rejection, ReduceSize, group_exposure, open_forbidden, opens_after, passes_halt, reduce_size,
)
from streams.engine.state import (
    Controls, Exposure, Halt, Mark, PortfolioState, Streak, advance_clock, book, drawdown_shown, held_value, open_now,
    record, remember_ended, reservation, reserved_totals,
)
from streams.wire.models import (
    Decision, Instrument, Order, OrderLeg, RejectionReason, Signal, build, fields_of, format_event_time,
)

_FLIP = {"buy": "sell", "sell": "buy"}

REJECTION_REASONS: tuple[str, ...] = get_args(RejectionReason)  # defined with the decision it fills


class InputPosition(NamedTuple):
    """Where the signal was read (topic, partition, offset), and the offset of the
    instrument record it is sized against, where the instrument came from a topic."""

    topic: str = "signals"
    partition: int = 0
    offset: int | None = None
    instrument_offset: int | None = None


class Result(NamedTuple):
    decision: Decision
    order: Order | None
    state: PortfolioState


def trace_time(epoch_ms: int | None) -> str | None:
    """An event time as the trace writes it: RFC 3339 UTC with milliseconds, like
    every time on the wire (`models.format_event_time`); None stays None. The one
    rule for every time in a trace (`signal.ts`, `state.latest_ts`, `state.clock`,
    `lapsed[].made_ts`)."""
    return None if epoch_ms is None else format_event_time(epoch_ms)


def order_id_for(portfolio_id: str, signal_id: str) -> str:
    """Deterministic order id: the same portfolio and signal always give the same id
    (BLAKE2b, 12 bytes, of the two ids joined by a unit separator)."""
    digest = _ORDER_ID_HASH.copy()  # the parameters set once: a copy costs less than a new hash
    digest.update(f"{portfolio_id}\x1f{signal_id}".encode())
    return "o-" + digest.hexdigest()


_ORDER_ID_HASH = hashlib.blake2b(digest_size=12)


def decide(
    signal: Signal,
    instrument: Instrument | None,
    state: PortfolioState,
    config: SizingConfig,
    position: InputPosition = InputPosition(),
    explained: bool = True,
) -> Result:
    """Size one signal. A rejection is a decision with a reason code, never an exception.
    All arithmetic is exact (`decimals.ENGINE_CONTEXT`), whatever the caller's context.

    `explained=False` is for what-if runs that neither publish nor compare the
    decision record (`sizer sweep`): the same steps give the same outcome, reason,
    order id, qty, notional and new state, but the decision's trace holds only
    `state.exposure` (the exposure the decision read) and what the sizing steps
    wrote, and no order is built (`Result.order` is None even when accepted).

    `config` may hold `[portfolios."ID"]` tables: the signal is sized under its
    portfolio's effective configuration (`SizingConfig.for_portfolio`), whose hash
    the decision carries."""
    signal = fields_of(signal)  # read as plain attributes from here on
    config = config.for_portfolio(signal.portfolio_id)
    if engine_context_active():
        return _decide(signal, instrument, state, config, position, explained)
    with localcontext(ENGINE_CONTEXT):
        return _decide(signal, instrument, state, config, position, explained)


def _decide(
    signal: Signal,
    instrument: Instrument | None,
    state: PortfolioState,
    config: SizingConfig,
    position: InputPosition,
    explained: bool,
) -> Result:
    exposure, streak, controls = state  # each read once: a NamedTuple field read is a descriptor call
    if explained:
        applied = controls.applied
        signal_time: str | None = format_event_time(signal.ts)
        topic, partition, offset, instrument_offset = position
        trace: dict[str, Any] = {
            "input": {
                "topic": topic, "partition": partition, "offset": offset,
                "last_fill_offset": exposure.last_fill_offset, "instrument_offset": instrument_offset,
                "last_control_offset": controls.last_control_offset,
                "controls_applied": [list(pair) for pair in applied] if applied else [],
            },
            "signal": {"symbol": signal.symbol, "side": signal.side, "score": signal.score,
                       "price": signal.price, "ts": signal_time},
        }
    else:
        signal_time, trace = None, {}
    order_id = order_id_for(signal.portfolio_id, signal.signal_id)

    # 1. Gates. A signal that fails one changes nothing at all: not the clock, not
    # the marks, not the dedupe window, not a reservation.
    gate = _gate(signal, instrument, exposure, streak, controls, config, order_id)
    if gate is not None:
        held = held_value(exposure, signal.symbol, config)[0]
        reserved = reserved_totals(exposure.reservations, signal.symbol)[0]
        clock = exposure.latest_ts
        trace["state"] = _state_read(clock, clock, None, held, reserved, (), streak, explained)
        if explained:
            _trace_latches(streak, controls, config, trace)
        if controls.applied:  # the commands listed in this trace are in no later one
            state = record(PortfolioState, (exposure, streak, controls._replace(applied=())))
        return _rejected(signal, gate, trace, config, state)
    assert instrument is not None  # the gate rejects an unknown instrument
    state, read = _passed_gates(signal, signal_time, exposure, streak, controls, config, trace, explained)
    if explained:
        _trace_latches(streak, controls, config, trace)
    clock = state.exposure.latest_ts
    assert clock is not None  # a signal that passed the gates set it

    if signal.intent == "reduce":
        return _reduce(signal, instrument, order_id, state, config, trace, explained)
    return _open(signal, instrument, order_id, state, read, clock, config, trace, explained)


def _open(signal: Signal, instrument: Instrument, order_id: str, state: PortfolioState, read: "Read", clock: int,
          config: SizingConfig, trace: dict[str, Any], explained: bool) -> Result:
    """Steps 2-8 for an open signal that passed the gates, the protections first;
    `state` and `read` as the gates left them, `clock` the portfolio clock (ms)."""
    # Protections an open must pass (loss guard, cooldown, order rate).
    forbidden = open_forbidden(signal, state.streak, state.exposure, clock, config, trace)
    if forbidden is not None:
        return _rejected(signal, forbidden, trace, config, state)

    # 2-5. Budget.
    budget = _budget(signal, state.streak, config, trace)
    if type(budget) is Rejection:
        return _rejected(signal, budget, trace, config, state)
    trace["budget"] = budget

    # 6. Caps.
    wanted = budget
    capped = _caps(budget, read, signal.symbol, instrument.group, state, config, trace)
    if type(capped) is Rejection:
        return _rejected(signal, capped, trace, config, state)
    budget, bound = capped

    # 7. Exchange constraints, for every leg at once.
    fit = _exchange(budget, signal.price, instrument, config, trace)
    if type(fit) is Rejection:
        return _rejected(signal, _cap_to_blame(fit, bound, wanted, signal.price, instrument, trace), trace, config,
                         state)

    # 8. Accept.
    accepted = _accept(signal, instrument, fit, order_id, state, config, trace, explained)
    if type(accepted) is Rejection:
        return _rejected(signal, accepted, trace, config, state)
    return accepted


class Read(NamedTuple):
    """The exposure a decision that passed the gates reads (USD)."""

    held: Decimal  # open positions, on the configured basis
    held_symbol: Decimal  # ... in the signal's symbol
    reserved: Decimal  # reservations still open
    reserved_symbol: Decimal  # ... for the signal's symbol

    @property
    def exposure(self) -> Decimal:
        return self.held + self.reserved


def _passed_gates(signal: Signal, signal_time: str | None, exposure: Exposure, streak: Streak, controls: Controls,
                  config: SizingConfig, trace: dict[str, Any], explained: bool) -> tuple[PortfolioState, Read]:
    """A signal that passed the gates moves the clock, its symbol's mark (forward in
    event time only) and the dedupe window; reservations lapse on the clock, if
    ever (each named in the trace). `signal_time` is the signal's `ts` as the trace
    writes it (None: not `explained`, the trace gets only the exposure read).
    Returns the new state (of the state read: `exposure`, `streak`, `controls`) and
    the exposure read."""
    positions, reservations, marks, clock, last_fill_offset, seen_signals, ended_orders, recent_opens = exposure
    symbol, signal_ts = signal.symbol, signal.ts
    clock_now = advance_clock(clock, signal_ts)
    still_open, lapsed_ids, reserved, reserved_symbol = open_now(reservations, clock_now, symbol, config)
    if config.exposure_basis == "mark":
        mark = marks.get(symbol)
        if mark is None or (signal_ts >= mark.ts and mark != (signal.price, signal_ts)):
            marks = {**marks, symbol: Mark(signal.price, signal_ts)}
    lapsed: list[dict[str, Any]] = []
    if lapsed_ids:
        for oid in lapsed_ids:
            ended_orders = remember_ended(ended_orders, oid, reservations[oid])
        if explained:
            lapsed = [{"order_id": oid, "symbol": reservations[oid].symbol, "notional": reservations[oid].notional,
                       "made_ts": trace_time(reservations[oid].ts)} for oid in lapsed_ids]
    exposure = record(Exposure, (
        positions, still_open, marks, clock_now, last_fill_offset,
        seen_signals.add(signal.signal_id, config.signal_dedupe_window), ended_orders, recent_opens,
    ))
    # the commands applied since the last decision are in this trace, and in no later one
    if controls.applied:
        controls = controls._replace(applied=())
    held, held_symbol = held_value(exposure, symbol, config)
    trace["state"] = _state_read(clock, clock_now, signal_time if clock_now == signal_ts else None, held,
                                 reserved, lapsed_ids, streak, explained)
    if lapsed:
        trace["lapsed"] = lapsed
    return record(PortfolioState, (exposure, streak, controls)), record(Read, (held, held_symbol, reserved,
                                                                               reserved_symbol))


class Bound(NamedTuple):
    """The cap that shrank the budget last (the tightest), for a rejection that
    names it when what remained cannot meet an exchange minimum."""

    reason: RejectionReason
    name: str  # the trace's key of its remainder
    remaining: Decimal


def _caps(budget: Decimal, read: Read, symbol: str, group: str | None, state: PortfolioState, config: SizingConfig,
          trace: dict[str, Any]) -> tuple[Decimal, Bound | None] | Rejection:
    """Step 6: the pair's cap, the instrument group's (`group_caps`), then the
    portfolio's, each with the one cap rule (`_under_cap`). Returns the budget that
    fits and the cap that shrank it (None: none did), or the rejection."""
    cap_mode = config.cap_mode
    caps: dict[str, Any] = {"mode": cap_mode}
    trace["caps"] = caps
    held, held_symbol, reserved, reserved_symbol = read
    equity = state.streak.equity
    bound: Bound | None = None
    capped: tuple[Decimal, Bound | None] | Rejection = (budget, None)
    pair_cap = config.pair_cap
    if pair_cap is not None:
        capped = _under_cap(caps, budget, bound, pair_cap, held_symbol + reserved_symbol, cap_mode, _PAIR_CAP)
        if type(capped) is Rejection:
            return capped
        budget, bound = capped
    if group is not None and config.group_caps:
        group_cap = config.group_caps.get(group)
        if group_cap is not None:
            caps["group"] = group
            capped = _under_cap(caps, budget, bound, group_cap.amount(equity),
                                group_exposure(state.exposure, group, symbol, config), cap_mode, _GROUP_CAP)
            if type(capped) is Rejection:
                return capped
            budget, bound = capped
    capped = _under_cap(caps, budget, bound, config.portfolio_cap.amount(equity), held + reserved, cap_mode,
                        _PORTFOLIO_CAP)
    if type(capped) is Rejection:
        return capped
    budget, bound = capped
    caps["capped_budget"] = budget
    if bound is not None:
        caps["bound_by"] = bound.reason
    return budget, bound


class _CapKeys(NamedTuple):
    """One cap in step 6: the reason it refuses with, and the trace's keys of the cap,
    of the exposure it measures (None: the trace's `state.exposure`) and of its remainder."""

    reason: RejectionReason
    cap: str
    exposure: str | None
    remaining: str


_PAIR_CAP = _CapKeys("PAIR_CAP_REACHED", "pair_cap", "pair_exposure", "pair_remaining")
_GROUP_CAP = _CapKeys("GROUP_CAP_REACHED", "group_cap", "group_exposure", "group_remaining")
_PORTFOLIO_CAP = _CapKeys("EXPOSURE_CAP_REACHED", "portfolio_cap", None, "remaining")


def _cap_to_blame(fit: Rejection, bound: Bound | None, wanted: Decimal, price: Decimal, instrument: Instrument,
                  trace: dict[str, Any]) -> Rejection:
    """An exchange minimum the capped budget could not meet is the cap's refusal when
    the budget before the caps would have met it: the rejection names the cap (its
    reason, its remainder, the minimum missed); the trace keeps both (`exchange.reason`,
    `exchange.detail`). Otherwise the exchange's own rejection."""
    if bound is None or fit.reason not in ("BELOW_MIN_QTY", "BELOW_MIN_NOTIONAL"):
        return fit
    if fit_to_legs(wanted, price, instrument.legs).reason is not None:
        return fit
    trace["exchange"]["reason"] = fit.reason
    trace["exchange"]["detail"] = fit.detail
    return Rejection(bound.reason, f"{bound.name}={canonical(bound.remaining)} budget={canonical(wanted)} "
                                   f"{fit.reason}: {fit.detail}")


def _reduce(signal: Signal, instrument: Instrument, order_id: str, state: PortfolioState, config: SizingConfig,
            trace: dict[str, Any], explained: bool) -> Result:
    """A reduce signal (DESIGN.md, "Protections"): `reduce_fraction` of the held base
    quantity, rounded down to the legs' steps, on the side opposite to the position;
    no cap, no budget; the exchange's minimums apply unless it exits the whole
    position. It reserves nothing (`_accept`, `reserve=False`)."""
    size = reduce_size(signal, state.exposure.positions, sized_legs(instrument.legs).venue_symbols, trace)
    if type(size) is Rejection:
        return _rejected(signal, size, trace, config, state)
    assert type(size) is ReduceSize
    fit = _traced(fit_qty_to_legs(size.qty, signal.price, instrument.legs, minimums=not size.whole), instrument,
                  trace)
    if type(fit) is Rejection:
        if trace["exchange"]["qty"] <= 0 and "clamped_by" not in trace["exchange"]:
            fit = Rejection("NOTHING_TO_REDUCE", f"symbol={signal.symbol} held_qty="
                                                 f"{canonical(trace['reduce']['held_qty'])}: less than one step to "
                                                 f"reduce ({fit.detail})")
        return _rejected(signal, fit, trace, config, state)
    accepted = _accept(signal, instrument, fit, order_id, state, config, trace, explained, reserve=False)
    if type(accepted) is Rejection:
        return _rejected(signal, accepted, trace, config, state)
    return accepted


def _exchange(budget: Decimal, price: Decimal, instrument: Instrument, config: SizingConfig,
              trace: dict[str, Any]) -> Fit | Rejection:
    """Step 7: the base quantity every leg holds (`constraints.fit_to_legs`), the leg
    that clamped it in the trace; with contract legs, each leg's quantity in its
    venue's units (`leg_qty`) and each inverse leg's `hedge_residual` (quote)."""
    return _traced(fit_to_legs(budget, price, instrument.legs, config.max_hedge_residual_pct), instrument, trace)


def _traced(fit: Fit, instrument: Instrument, trace: dict[str, Any]) -> Fit | Rejection:
    """A fit written into the trace (`exchange`: step, qty, the leg that clamped it,
    and with contract legs `leg_qty` and `hedge_residual`), then the fit or its
    rejection."""
    exchange: dict[str, Any] = {"step": fit.step, "qty": fit.qty}
    if fit.clamped_by is not None:
        exchange.update(unclamped_qty=fit.unclamped, clamped_by={
            "leg": fit.clamped_by.venue_symbol, "rule": fit.clamped_by.rule, "limit": fit.clamped_by.limit})
    if fit.leg_qty and sized_legs(instrument.legs).contracts:
        exchange["leg_qty"] = {leg.venue_symbol: q for leg, q in zip(instrument.legs, fit.leg_qty)}
    if fit.hedge_residual:
        exchange["hedge_residual"] = dict(fit.hedge_residual)
    trace["exchange"] = exchange
    if fit.reason is not None:
        return Rejection(fit.reason, fit.detail or "")  # type: ignore[arg-type]
    return fit


def _accept(signal: Signal, instrument: Instrument, fit: Fit, order_id: str, state: PortfolioState,
            config: SizingConfig, trace: dict[str, Any], explained: bool, reserve: bool = True) -> Result | Rejection:
    """Step 8: the order (when `explained`), its notional reserved at once (stamped
    with the portfolio clock) so a burst cannot overshoot the cap; only an order the
    product could take back as input is emitted (closure: ORDER_OUT_OF_BOUNDS otherwise, the
    base quantity, the notional and every leg's quantity in its venue's units alike).
    An open counts toward the order rate. `reserve=False` (a reduce order): nothing is
    reserved; the order is remembered as ended, so its fills never add to the position
    and a resent signal is a duplicate."""
    qty = fit.qty
    notional = qty * signal.price
    sized = sized_legs(instrument.legs)  # the legs' values as plain attributes
    unwritable = _out_of_bounds("qty", qty) or _out_of_bounds("notional", notional)
    if unwritable is None and fit.leg_qty:
        # each leg's quantity in its venue's units comes back as that leg's fill
        unwritable = next((found for leg, leg_qty in zip(sized.legs, fit.leg_qty)
                           if (found := _out_of_bounds(f"leg={leg.venue_symbol} qty", leg_qty)) is not None), None)
    if unwritable is not None:
        return unwritable
    exposure = state.exposure
    legs, units = sized.venue_symbols, sized.units
    made = reservation(signal.symbol, qty, signal.price, exposure.latest_ts, legs, signal.side, instrument.group,
                       units)
    positions, reservations, marks, latest_ts, last_fill_offset, seen_signals, ended_orders, recent_opens = exposure
    if reserve:
        reservations = book(reservations).with_entry(order_id, made)
        recent_opens = opens_after(exposure, latest_ts, config)
    else:
        ended_orders = remember_ended(ended_orders, order_id, made._replace(reduce=True))
    exposure = record(Exposure, (positions, reservations, marks, latest_ts, last_fill_offset, seen_signals,
                                 ended_orders, recent_opens))
    state = record(PortfolioState, (exposure, state.streak, state.controls))
    order = None if not explained else build(
        Order,
        order_id=order_id, signal_id=signal.signal_id, portfolio_id=signal.portfolio_id,
        symbol=signal.symbol, side=signal.side, qty=qty, price=signal.price, notional=notional,
        legs=tuple(
            build(OrderLeg, venue_symbol=leg.venue_symbol, side=leg.side if signal.side == "buy" else _FLIP[leg.side],
                  qty=leg_qty, kind=leg.kind, contract_size=leg.contract_size)
            for leg, leg_qty in zip(sized.legs, fit.leg_qty)
        ),
        ts=signal.ts, config_hash=config.config_hash, base_qty=qty,
    )
    decision = build(
        Decision,
        signal_id=signal.signal_id, portfolio_id=signal.portfolio_id, outcome="accepted", reason=None,
        order_id=order_id, qty=qty, notional=notional, trace=trace, config_hash=config.config_hash,
    )
    return record(Result, (decision, order, state))


def _gate(
    signal: Signal, instrument: Instrument | None, exposure: Exposure, streak: Streak, controls: Controls,
    config: SizingConfig, order_id: str,
) -> Rejection | None:
    """Step 1: a duplicate (in the dedupe window, or its order still open), a halted
    portfolio (HALTED by an operator, or MAX_DRAWDOWN), an unknown instrument, or
    a signal older than `max_signal_age` on the portfolio clock (of the state read:
    `exposure`, `streak`, `controls`)."""
    if signal.signal_id in exposure.seen_signals:
        return Rejection("DUPLICATE_SIGNAL", f"signal_id={_text(signal.signal_id)}")
    if order_id in exposure.reservations:
        return Rejection("DUPLICATE_SIGNAL", f"signal_id={_text(signal.signal_id)} order_id={order_id} order=open")
    if order_id in exposure.ended_orders:
        return Rejection("DUPLICATE_SIGNAL", f"signal_id={_text(signal.signal_id)} order_id={order_id} order=ended")
    latch, halt = controls.max_drawdown, controls.halt
    if latch is not None or halt is not None or streak.equity <= 0:
        latched = _kill_switch(signal, streak, latch, halt)
        if latched is not None:
            return latched
    if instrument is None:
        return Rejection("UNKNOWN_INSTRUMENT", f"symbol={_text(signal.symbol)}")
    max_age, clock = config.max_signal_age_ms, exposure.latest_ts
    if max_age is not None and clock is not None and clock - signal.ts > max_age:
        return Rejection("STALE_SIGNAL", f"age_ms={clock - signal.ts} max_age_ms={max_age}")
    return None


def _kill_switch(signal: Signal, streak: Streak, latch: Halt | None, halt: Halt | None) -> Rejection | None:
    """Step 1, the kill switch (DESIGN.md, "Operator controls"): the drawdown latch
    (MAX_DRAWDOWN, every signal), then the operator's halt (HALTED; REDUCE_ONLY in
    mode `reduce_only`, which a reduce signal passes: `protections.passes_halt`),
    then equity at or below zero (EQUITY_EXHAUSTED for an open, whatever the preset
    or base size). Two independent latches: the detail of MAX_DRAWDOWN names an
    operator's halt also in force."""
    if latch is not None:
        also = f" halt={halt.reason}" if halt is not None else ""
        return Rejection("MAX_DRAWDOWN", f"operator={latch.operator} reason={latch.text}{also}")
    if halt is not None and not passes_halt(signal, halt):
        by = f"command_id={halt.command_id} " if halt.command_id is not None else ""
        return Rejection(halt.reason, f"{by}operator={halt.operator} reason={halt.text}")  # type: ignore[arg-type]
    equity = streak.equity
    if equity <= 0 and signal.intent != "reduce":
        return Rejection("EQUITY_EXHAUSTED", f"equity={canonical(equity)}")
    return None


def _trace_latches(streak: Streak, controls: Controls, config: SizingConfig, trace: dict[str, Any]) -> None:
    """The kill switch as the decision read it, in the trace's `state`: the
    operator's halt (its reason code, or None), the drawdown latch (its detail, or
    None), and, with `max_drawdown_pct` configured, the peak and the drawdown."""
    halt, latch = controls.halt, controls.max_drawdown
    read = trace["state"]
    read["halt"] = None if halt is None else halt.reason
    read["max_drawdown"] = None if latch is None else latch.text
    if config.max_drawdown_pct is not None:
        read["peak_equity"] = streak.peak
        read["drawdown_pct"] = drawdown_shown(streak)


def _budget(signal: Signal, streak: Streak, config: SizingConfig, trace: dict[str, Any]) -> Decimal | Rejection:
    """Steps 2-5: conviction x base size x drawdown multiplier, or the static
    per-pair maximum when sizing is disabled."""
    if not config.enabled:
        trace["static"] = True
        return config.pair_max_usd
    conviction = _conviction(signal, config, trace)
    if isinstance(conviction, Rejection):
        return conviction
    # 3. Base size.
    if config.base == "fixed":
        base = config.pair_max_usd
        trace["base"] = {"mode": "fixed", "base": base}
    else:
        pct = config.phases[streak.phase - 1].equity_pct
        base = streak.equity * pct
        trace["base"] = {"mode": "graduated", "phase": streak.phase, "equity_pct": pct, "base": base}
    # 4. Drawdown protection.
    cut = config.drawdown_cut if streak.drawdown else ONE
    trace["drawdown_multiplier"] = cut
    # 5. Budget.
    return base * conviction * cut


def _conviction(signal: Signal, config: SizingConfig, trace: dict[str, Any]) -> Decimal | Rejection:
    """Step 2: the conviction multiplier of the signal's score (linear or tiers);
    a signal without a score is sized by `unscored_signals`."""
    score = signal.score
    if score is None:
        trace["conviction"] = {"mode": "unscored", "unscored_signals": config.unscored_signals}
        if config.unscored_signals == "reject":
            return Rejection("NO_SCORE", "score=null unscored_signals=reject")
        trace["conviction"]["multiplier"] = ONE
        return ONE
    if config.conviction == "linear":
        conviction = config.min_fraction + (config.max_fraction - config.min_fraction) * score
        trace["conviction"] = {"mode": "linear", "fraction": conviction}
        if config.min_score is not None and score < config.min_score:
            return Rejection("LOW_CONFIDENCE", f"score={_text(score)} min_score={_text(config.min_score)}")
        return conviction
    tier_index = next((i for i, tier in enumerate(config.tiers) if tier.admits(score)), None)
    if tier_index is None:
        trace["conviction"] = {"mode": "tiers", "tier": None}
        return Rejection("LOW_CONFIDENCE", f"score={_text(score)} lowest_tier={_text(config.tiers[-1].min_score)}")
    trace["conviction"] = {"mode": "tiers", "tier": tier_index + 1, "multiplier": config.tiers[tier_index].multiplier}
    return config.tiers[tier_index].multiplier


def _under_cap(caps: dict[str, Any], budget: Decimal, bound: Bound | None, cap: Decimal, exposure: Decimal,
               cap_mode: str, keys: _CapKeys) -> tuple[Decimal, Bound | None] | Rejection:
    """Step 6, for one cap: remaining = cap - exposure; nothing remaining, or (in
    `skip` mode) a budget beyond it, is a rejection; else the budget shrinks to it
    (and the cap is the one that bound it). Writes the cap, its exposure and what
    remains into the trace's `caps`. Returns (the budget, the bound) or the rejection."""
    reason, cap_key, exposure_key, name = keys
    remaining = cap - exposure
    caps[cap_key] = cap
    if exposure_key is not None:
        caps[exposure_key] = exposure
    caps[name] = remaining
    if remaining <= 0 or (cap_mode == "skip" and budget > remaining):
        return record(Rejection, (reason, f"{name}={canonical(remaining)} budget={canonical(budget)}"))
    if remaining < budget:
        return remaining, record(Bound, (reason, name, remaining))
    return budget, bound


def _out_of_bounds(name: str, value: Decimal) -> Rejection | None:
    """An order value the product would refuse as input (`decimals.bounded`)."""
    try:
        bounded(value)
    except ValueError as exc:
        return Rejection("ORDER_OUT_OF_BOUNDS", f"{name}={canonical(value)}: {exc}")
    return None


def _state_read(
    clock: int | None, clock_now: int | None, clock_now_text: str | None, held: Decimal, reserved: Decimal,
    lapsed: tuple[str, ...], streak: Streak, explained: bool,
) -> dict[str, Any]:
    """The state a decision read: the trace's `state` (not `explained`: only its
    exposure). `clock_now_text`: `clock_now` as the trace writes it, when the caller
    has it (None: written here)."""
    if not explained:
        return {"exposure": held + reserved}
    latest_ts = None if clock is None else format_event_time(clock)  # `trace_time`
    if clock_now == clock:
        clock_now_text = latest_ts
    elif clock_now_text is None:
        clock_now_text = trace_time(clock_now)
    equity, phase, wins, losses, drawdown, closed_trades = streak[:6]  # one slice: fewer field reads
    return {
        "latest_ts": latest_ts, "clock": clock_now_text,
        "positions": held, "reserved": reserved,
        "exposure": held + reserved,
        "lapsed_reservations": len(lapsed),
        "consecutive_wins": wins, "consecutive_losses": losses,
        "drawdown": drawdown, "phase": phase, "equity": equity,
        "closed_trades": closed_trades,
    }


def _rejected(signal: Signal, rejection: Rejection, trace: dict[str, Any], config: SizingConfig,
              state: PortfolioState) -> Result:
    """The result of a rejected signal: its decision (the detail in the trace), no
    order, and `state` (the state after the gates, or the state read if a gate refused)."""
    reason, trace["detail"] = rejection
    decision = build(
        Decision,
        signal_id=signal.signal_id, portfolio_id=signal.portfolio_id, outcome="rejected", reason=reason,
        order_id=None, qty=None, notional=None, trace=trace, config_hash=config.config_hash,
    )
    return record(Result, (decision, None, state))


def _text(value: Any) -> str:
    """A value in a `key=value` rejection detail; Decimals in canonical form."""
    return canonical(value) if isinstance(value, Decimal) else str(value)
