"""The sizing pipeline: one pure function of (signal, instrument, portfolio state,
config, input position) to a decision, maybe an order, and the new state.

Steps (DESIGN.md): 1 gate, 2 conviction, 3 base size, 4 drawdown, 5 budget,
6 caps, 7 exchange constraints, 8 accept and reserve. Each step writes what it
computed into the trace, so a decision explains itself from its record alone.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, localcontext
from typing import Any, NamedTuple

from streams.config import SizingConfig
from streams.decimals import ENGINE_CONTEXT, ONE, canonical, engine_context_active
from streams.engine.constraints import fit_to_legs
from streams.engine.state import Exposure, PortfolioState, held_value, open_reservations, reservation
from streams.models import Decision, Instrument, Order, OrderLeg, Signal, build

_FLIP = {"buy": "sell", "sell": "buy"}

# Every reason a decision can be rejected for.
REJECTION_REASONS = (
    "DUPLICATE_SIGNAL", "UNKNOWN_INSTRUMENT", "STALE_SIGNAL", "LOW_CONFIDENCE", "PAIR_CAP_REACHED",
    "EXPOSURE_CAP_REACHED", "BELOW_MIN_QTY", "BELOW_MIN_NOTIONAL",
)


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


def order_id_for(portfolio_id: str, signal_id: str) -> str:
    """Deterministic order id: the same portfolio and signal always give the same id."""
    digest = hashlib.blake2b(f"{portfolio_id}\x1f{signal_id}".encode(), digest_size=12).hexdigest()
    return f"o-{digest}"


def decide(
    signal: Signal,
    instrument: Instrument | None,
    state: PortfolioState,
    config: SizingConfig,
    position: InputPosition = InputPosition(),
) -> Result:
    """Size one signal. A rejection is a decision with a reason code, never an exception.
    All arithmetic is exact (`decimals.ENGINE_CONTEXT`), whatever the caller's context."""
    if engine_context_active():
        return _decide(signal, instrument, state, config, position)
    with localcontext(ENGINE_CONTEXT):
        return _decide(signal, instrument, state, config, position)


def _decide(
    signal: Signal,
    instrument: Instrument | None,
    state: PortfolioState,
    config: SizingConfig,
    position: InputPosition,
) -> Result:
    exposure = state.exposure
    streak = state.streak
    trace: dict[str, Any] = {
        "input": {
            "topic": position.topic, "partition": position.partition, "offset": position.offset,
            "last_fill_offset": exposure.last_fill_offset, "instrument_offset": position.instrument_offset,
        },
        "signal": {"symbol": signal.symbol, "side": signal.side, "score": signal.score,
                   "price": signal.price, "ts": signal.ts},
    }

    # 1. Gate. A duplicate changes nothing at all.
    if signal.signal_id in exposure.seen_signals:
        trace["detail"] = f"signal_id={_text(signal.signal_id)}"
        return Result(_rejected(signal, "DUPLICATE_SIGNAL", trace, config), None, state)

    previous_ts = exposure.latest_ts
    latest, reservations, reserved, reserved_symbol = open_reservations(exposure, signal.ts, signal.symbol, config)
    marks = exposure.marks
    if config.exposure_basis == "mark" and marks.get(signal.symbol) != signal.price:
        marks = {**marks, signal.symbol: signal.price}
    exposure = Exposure(
        exposure.positions, reservations, marks, latest, exposure.last_fill_offset,
        exposure.seen_signals.add(signal.signal_id, config.signal_dedupe_window),
    )
    state = PortfolioState(exposure, streak)
    position_value, held_symbol = held_value(exposure, signal.symbol, config)
    current = position_value + reserved
    trace["state"] = {
        "latest_ts": previous_ts, "positions": position_value, "reserved": reserved, "exposure": current,
        "consecutive_wins": streak.consecutive_wins, "consecutive_losses": streak.consecutive_losses,
        "drawdown": streak.drawdown, "phase": streak.phase, "equity": streak.equity,
        "closed_trades": streak.closed_trades,
    }

    if instrument is None:
        trace["detail"] = f"symbol={_text(signal.symbol)}"
        return Result(_rejected(signal, "UNKNOWN_INSTRUMENT", trace, config), None, state)
    max_age = config.max_signal_age_ms
    if max_age is not None and previous_ts is not None and previous_ts - signal.ts > max_age:
        trace["detail"] = f"age_ms={_text(previous_ts - signal.ts)} max_age_ms={_text(max_age)}"
        return Result(_rejected(signal, "STALE_SIGNAL", trace, config), None, state)

    if not config.enabled:
        # Sizing disabled: the static per-pair maximum, as before dynamic sizing.
        budget = config.pair_max_usd
        trace["static"] = True
    else:
        # 2. Conviction.
        if config.conviction == "linear":
            conviction = config.min_fraction + (config.max_fraction - config.min_fraction) * signal.score
            trace["conviction"] = {"mode": "linear", "fraction": conviction}
            if config.min_score is not None and signal.score < config.min_score:
                trace["detail"] = f"score={_text(signal.score)} min_score={_text(config.min_score)}"
                return Result(_rejected(signal, "LOW_CONFIDENCE", trace, config), None, state)
        else:
            tier_index = next((i for i, tier in enumerate(config.tiers) if tier.admits(signal.score)), None)
            if tier_index is None:
                trace["conviction"] = {"mode": "tiers", "tier": None}
                trace["detail"] = f"score={_text(signal.score)} lowest_tier={_text(config.tiers[-1].min_score)}"
                return Result(_rejected(signal, "LOW_CONFIDENCE", trace, config), None, state)
            conviction = config.tiers[tier_index].multiplier
            trace["conviction"] = {"mode": "tiers", "tier": tier_index + 1, "multiplier": conviction}

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
        budget = base * conviction * cut
    trace["budget"] = budget

    # 6. Caps.
    cap_mode = config.cap_mode
    pair_cap = config.pair_cap
    if pair_cap is not None:
        pair_exposure = held_symbol + reserved_symbol
        pair_remaining = pair_cap - pair_exposure
        caps: dict[str, Any] = {"mode": cap_mode, "pair_cap": pair_cap, "pair_exposure": pair_exposure,
                                "pair_remaining": pair_remaining}
        trace["caps"] = caps
        if pair_remaining <= 0 or (cap_mode == "skip" and budget > pair_remaining):
            trace["detail"] = f"pair_remaining={canonical(pair_remaining)} budget={canonical(budget)}"
            return Result(_rejected(signal, "PAIR_CAP_REACHED", trace, config), None, state)
        budget = min(budget, pair_remaining)
    else:
        caps = trace["caps"] = {"mode": cap_mode}
    cap = config.portfolio_cap.amount(streak.equity)
    remaining = cap - current
    caps["portfolio_cap"] = cap
    caps["remaining"] = remaining
    if remaining <= 0 or (cap_mode == "skip" and budget > remaining):
        trace["detail"] = f"remaining={canonical(remaining)} budget={canonical(budget)}"
        return Result(_rejected(signal, "EXPOSURE_CAP_REACHED", trace, config), None, state)
    budget = min(budget, remaining)
    caps["capped_budget"] = budget

    # 7. Exchange constraints, for every leg at once.
    fit = fit_to_legs(budget, signal.price, instrument.legs)
    trace["exchange"] = {"step": fit.step, "qty": fit.qty}
    if fit.reason is not None:
        trace["detail"] = fit.detail
        return Result(_rejected(signal, fit.reason, trace, config), None, state)

    # 8. Accept: reserve the notional at once so a burst cannot overshoot the cap.
    qty = fit.qty
    notional = qty * signal.price
    order_id = order_id_for(signal.portfolio_id, signal.signal_id)
    reservations = {**reservations, order_id: reservation(signal.symbol, qty, signal.price, signal.ts)}
    state = PortfolioState(
        Exposure(exposure.positions, reservations, marks, latest, exposure.last_fill_offset, exposure.seen_signals),
        streak,
    )
    order = build(
        Order,
        order_id=order_id, signal_id=signal.signal_id, portfolio_id=signal.portfolio_id,
        symbol=signal.symbol, side=signal.side, qty=qty, price=signal.price, notional=notional,
        legs=tuple(
            build(
                OrderLeg,
                venue_symbol=leg.venue_symbol,
                side=leg.side if signal.side == "buy" else _FLIP[leg.side],
                qty=qty,
            )
            for leg in instrument.legs
        ),
        ts=signal.ts, config_hash=config.config_hash,
    )
    decision = build(
        Decision,
        signal_id=signal.signal_id, portfolio_id=signal.portfolio_id, outcome="accepted", reason=None,
        order_id=order_id, qty=qty, notional=notional, trace=trace, config_hash=config.config_hash,
    )
    return Result(decision, order, state)


def _rejected(signal: Signal, reason: str, trace: dict[str, Any], config: SizingConfig) -> Decision:
    return build(
        Decision,
        signal_id=signal.signal_id, portfolio_id=signal.portfolio_id, outcome="rejected", reason=reason,
        order_id=None, qty=None, notional=None, trace=trace, config_hash=config.config_hash,
    )


def _text(value: Any) -> str:
    """A value in a `key=value` rejection detail; Decimals in canonical form."""
    return canonical(value) if isinstance(value, Decimal) else str(value)
