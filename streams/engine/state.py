"""Per-portfolio state as immutable values, and every transition driven by fills.

`Exposure` is the value of the `exposure` table and `Streak` the value of the
`streak` table; both are keyed by portfolio id. Transitions return new values
and share what did not change.
"""

from __future__ import annotations

from types import MappingProxyType
from decimal import Decimal, localcontext
from typing import Any, Mapping, NamedTuple

from streams.config import SizingConfig
from streams.decimals import ENGINE_CONTEXT, ZERO, engine_context_active
from streams.engine.recent import RecentIds
from streams.models import OrderCanceled, OrderFilled, PositionClosed


class Position(NamedTuple):
    """An open position in one symbol: gross quantity and what it cost at entry (USD)."""

    qty: Decimal
    entry_notional: Decimal


NO_POSITION = Position(ZERO, ZERO)
# A partial close keeps its share of the entry notional, rounded half-even to 1e-18 USD.
ENTRY_NOTIONAL_QUANTUM = Decimal("1e-18")
EMPTY: Mapping[str, Any] = MappingProxyType({})


class Reservation(NamedTuple):
    """Notional held for an order that is neither filled nor canceled yet.

    `ts` is the event time it was made or last partly filled; it lapses
    `reservation_ttl` of event time later."""

    symbol: str
    qty: Decimal
    price: Decimal
    ts: int
    notional: Decimal  # qty * price, kept because every decision sums it


def reservation(symbol: str, qty: Decimal, price: Decimal, ts: int) -> Reservation:
    return Reservation(symbol, qty, price, ts, qty * price)


class Exposure(NamedTuple):
    positions: Mapping[str, Position] = EMPTY
    reservations: Mapping[str, Reservation] = EMPTY
    marks: Mapping[str, Decimal] = EMPTY
    latest_ts: int | None = None
    last_fill_offset: int | None = None
    seen_signals: RecentIds = RecentIds()


class Streak(NamedTuple):
    equity: Decimal
    phase: int = 1
    consecutive_wins: int = 0
    consecutive_losses: int = 0
    drawdown: bool = False
    closed_trades: int = 0
    wins: int = 0
    losses: int = 0
    gross_profit: Decimal = ZERO
    gross_loss: Decimal = ZERO
    seen_fills: RecentIds = RecentIds()

    def remembering(self, seen_fills: RecentIds) -> "Streak":
        """The same record with another fill-dedupe window."""
        return self._replace(seen_fills=seen_fills)

    @property
    def win_rate(self) -> Decimal:
        return Decimal(self.wins) / self.closed_trades if self.closed_trades else ZERO

    @property
    def profit_factor(self) -> Decimal | None:
        """gross profit / gross loss; None (unbounded) when there is profit and no loss."""
        if self.gross_loss:
            return self.gross_profit / self.gross_loss
        return None if self.gross_profit else ZERO


class PortfolioState(NamedTuple):
    exposure: Exposure
    streak: Streak

    @classmethod
    def fresh(cls, config: SizingConfig) -> "PortfolioState":
        """A portfolio never seen before: no positions, phase 1, the starting equity."""
        return cls(Exposure(), Streak(equity=config.starting_equity))

    def position_value(self, config: SizingConfig) -> Decimal:
        """Open positions in USD on the configured basis (entry cost, or latest signal price)."""
        return held_value(self.exposure, None, config)[0]

    def reserved(self, symbol: str | None = None) -> Decimal:
        """Notional reserved for open orders, for one symbol or all."""
        total, for_symbol = reserved_totals(self.exposure.reservations, symbol)
        return total if symbol is None else for_symbol


def reserved_totals(reservations: Mapping[str, Reservation], symbol: str | None) -> tuple[Decimal, Decimal]:
    """(all reserved notional, the part reserved for `symbol`), in one pass."""
    total = for_symbol = ZERO
    for r in reservations.values():
        total += r.notional
        if r.symbol == symbol:
            for_symbol += r.notional
    return total, for_symbol


def open_reservations(
    exposure: Exposure, ts: int, symbol: str | None, config: SizingConfig,
) -> tuple[int, Mapping[str, Reservation], Decimal, Decimal]:
    """In one pass: the event time moved forward to `ts`, the reservations still
    open then (the same mapping when none lapsed; a reservation lapses
    `reservation_ttl` of event time after it was made or last partly filled),
    and their notional in all and for `symbol`."""
    latest = ts if exposure.latest_ts is None or ts > exposure.latest_ts else exposure.latest_ts
    ttl = config.reservation_ttl_ms
    horizon = -1 if ttl is None else latest - ttl
    reservations = exposure.reservations
    total = for_symbol = ZERO
    lapsed = False
    for r in reservations.values():
        if r.ts <= horizon:
            lapsed = True
            continue
        total += r.notional
        if r.symbol == symbol:
            for_symbol += r.notional
    if lapsed:
        reservations = {oid: r for oid, r in reservations.items() if r.ts > horizon}
    return latest, reservations, total, for_symbol


def held_value(exposure: Exposure, symbol: str | None, config: SizingConfig) -> tuple[Decimal, Decimal]:
    """In one pass: open positions in USD on the configured basis, in all and in `symbol`."""
    total = in_symbol = ZERO
    mark_basis = config.exposure_basis == "mark"
    marks = exposure.marks
    for name, position in exposure.positions.items():
        mark = marks.get(name) if mark_basis else None
        value = position.entry_notional if mark is None else position.qty * mark
        total += value
        if name == symbol:
            in_symbol = value
    return total, in_symbol


def apply_fill(
    fill: OrderFilled | OrderCanceled | PositionClosed,
    state: PortfolioState,
    config: SizingConfig,
    offset: int | None = None,
) -> tuple[PortfolioState, bool]:
    """Apply one fill event. Returns the new state and whether it changed anything
    (False for a duplicate `event_id`, which leaves the state exactly as it was).

    `offset` is the fill's input offset, recorded so a decision trace can name
    the last fill applied before it. Arithmetic is exact (`decimals.ENGINE_CONTEXT`).
    """
    if engine_context_active():
        return _apply_fill(fill, state, config, offset)
    with localcontext(ENGINE_CONTEXT):
        return _apply_fill(fill, state, config, offset)


def _apply_fill(
    fill: OrderFilled | OrderCanceled | PositionClosed,
    state: PortfolioState,
    config: SizingConfig,
    offset: int | None,
) -> tuple[PortfolioState, bool]:
    streak = state.streak
    if fill.event_id in streak.seen_fills:
        return state, False
    seen_fills = streak.seen_fills.add(fill.event_id, config.fill_dedupe_window)
    exposure = state.exposure
    latest, reservations, _, _ = open_reservations(exposure, fill.ts, None, config)
    positions = exposure.positions

    if isinstance(fill, OrderFilled):
        positions = dict(positions)
        held = positions.get(fill.symbol, NO_POSITION)
        positions[fill.symbol] = Position(held.qty + fill.qty, held.entry_notional + fill.qty * fill.price)
        held_order = reservations.get(fill.order_id)
        if held_order is not None:
            reservations = dict(reservations)
            left = held_order.qty - fill.qty
            if fill.final or left <= 0:
                del reservations[fill.order_id]
            else:
                reservations[fill.order_id] = reservation(
                    held_order.symbol, left, held_order.price, max(held_order.ts, fill.ts))
        streak = streak.remembering(seen_fills)
    elif isinstance(fill, OrderCanceled):
        if fill.order_id in reservations:
            reservations = {oid: r for oid, r in reservations.items() if oid != fill.order_id}
        streak = streak.remembering(seen_fills)
    else:
        held = positions.get(fill.symbol)
        if held is not None:
            positions = dict(positions)
            if fill.qty >= held.qty:
                del positions[fill.symbol]
            else:
                left = held.qty - fill.qty
                share = (held.entry_notional * left / held.qty).quantize(ENTRY_NOTIONAL_QUANTUM)
                positions[fill.symbol] = Position(left, share)
        streak = book_close(streak.remembering(seen_fills), fill.realized_pnl, config)
    exposure = Exposure(
        positions, reservations, exposure.marks, latest,
        exposure.last_fill_offset if offset is None else offset, exposure.seen_signals,
    )
    return PortfolioState(exposure, streak), True


def book_close(streak: Streak, pnl: Decimal, config: SizingConfig) -> Streak:
    """Book one closed trade: streaks, drawdown mode, equity, statistics, then promotion.

    A win (pnl > 0) or loss (pnl < 0) moves the streaks; pnl == 0 is a trade that
    touches neither. Drawdown mode starts after `loss_streak` consecutive losses
    and ends after `recovery_streak` consecutive wins. Phases only ever rise.
    """
    wins, losses = streak.consecutive_wins, streak.consecutive_losses
    drawdown = streak.drawdown
    gross_profit, gross_loss = streak.gross_profit, streak.gross_loss
    won, lost = streak.wins, streak.losses
    if pnl > 0:
        wins, losses, won, gross_profit = wins + 1, 0, won + 1, gross_profit + pnl
        if drawdown and wins >= config.recovery_streak:
            drawdown = False
    elif pnl < 0:
        wins, losses, lost, gross_loss = 0, losses + 1, lost + 1, gross_loss - pnl
        if config.drawdown and losses >= config.loss_streak:
            drawdown = True
    booked = streak._replace(
        equity=streak.equity + pnl, consecutive_wins=wins, consecutive_losses=losses,
        drawdown=drawdown, closed_trades=streak.closed_trades + 1, wins=won, losses=lost,
        gross_profit=gross_profit, gross_loss=gross_loss,
    )
    return booked._replace(phase=earned_phase(booked, config))


def earned_phase(streak: Streak, config: SizingConfig) -> int:
    """The highest phase whose thresholds the live record meets, never below the current one."""
    phase = streak.phase
    while phase < len(config.phases):
        target = config.phases[phase]  # phases are 1-based; index `phase` is the next one
        profit_factor = streak.profit_factor
        if not (
            streak.closed_trades >= target.min_trades
            and streak.win_rate > target.min_win_rate
            and (profit_factor is None or profit_factor > target.min_profit_factor)
        ):
            break
        phase += 1
    return phase


def to_wire(state: PortfolioState) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (exposure, streak) table values as JSON data."""
    e, s = state.exposure, state.streak
    exposure = {
        "positions": {k: [p.qty, p.entry_notional] for k, p in e.positions.items()},
        "reservations": {k: [r.symbol, r.qty, r.price, r.ts] for k, r in e.reservations.items()},
        "marks": dict(e.marks),
        "latest_ts": e.latest_ts,
        "last_fill_offset": e.last_fill_offset,
        "seen_signals": e.seen_signals.to_wire(),
    }
    streak = {
        "equity": s.equity, "phase": s.phase, "consecutive_wins": s.consecutive_wins,
        "consecutive_losses": s.consecutive_losses, "drawdown": s.drawdown,
        "closed_trades": s.closed_trades, "wins": s.wins, "losses": s.losses,
        "gross_profit": s.gross_profit, "gross_loss": s.gross_loss,
        "seen_fills": s.seen_fills.to_wire(),
    }
    return exposure, streak


def exposure_from_wire(data: Mapping[str, Any] | None) -> Exposure:
    if not data:
        return Exposure()
    D = Decimal
    return Exposure(
        positions={k: Position(D(q), D(n)) for k, (q, n) in data["positions"].items()},
        reservations={k: reservation(sym, D(q), D(p), int(ts)) for k, (sym, q, p, ts) in data["reservations"].items()},
        marks={k: D(v) for k, v in data["marks"].items()},
        latest_ts=data["latest_ts"],
        last_fill_offset=data["last_fill_offset"],
        seen_signals=RecentIds.from_wire(data["seen_signals"]),
    )


def streak_from_wire(data: Mapping[str, Any] | None, config: SizingConfig) -> Streak:
    if not data:
        return Streak(equity=config.starting_equity)
    D = Decimal
    return Streak(
        equity=D(data["equity"]), phase=int(data["phase"]),
        consecutive_wins=int(data["consecutive_wins"]), consecutive_losses=int(data["consecutive_losses"]),
        drawdown=bool(data["drawdown"]), closed_trades=int(data["closed_trades"]),
        wins=int(data["wins"]), losses=int(data["losses"]),
        gross_profit=D(data["gross_profit"]), gross_loss=D(data["gross_loss"]),
        seen_fills=RecentIds.from_wire(data["seen_fills"]),
    )
