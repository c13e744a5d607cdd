"""The protections a desk expects (DESIGN.md, "Protections"), one step function each.

Each check takes every input as an argument (the signal, the state after the
gates, the portfolio clock in ms, the portfolio's effective configuration),
writes what it read into the trace, and returns None (pass) or a `Rejection`
with one reason code and its `key=value` detail. All are in event time and off
unless configured. The pipeline (`pipeline._decide`) calls:

- `passes_halt`: whether a halt in force lets a signal through (a reduce passes
  an operator's `reduce_only` halt, never a full one);
- `open_forbidden`: for an open, LOSS_GUARD, then COOLDOWN, then RATE_LIMITED;
- `group_exposure`: the exposure a group cap measures (the cap itself goes
  through the one cap rule, `pipeline._under_cap`);
- `reduce_size`: a reduce signal's quantity from the held position
  (NOTHING_TO_REDUCE when there is none to exit);
- `opens_after`: the accepted opens the order rate remembers after one more.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping, NamedTuple

from streams.config import SizingConfig
from streams.engine.state import Exposure, Halt, Position, Reservation, Streak
from streams.wire.decimals import ZERO, canonical
from streams.wire.models import RejectionReason, Signal, format_event_time


class Rejection(NamedTuple):
    """A pipeline step's refusal: a reason code and its `key=value` detail."""

    reason: RejectionReason
    detail: str


def passes_halt(signal: Signal, halt: Halt) -> bool:
    """Whether `signal` is sized while `halt` is in force: only a reduce signal, and
    only under an operator's halt in mode `reduce_only` (NautilusTrader's REDUCING),
    whose opens are rejected REDUCE_ONLY. A full halt (HALTED) and the drawdown
    latch (MAX_DRAWDOWN) stop everything."""
    return signal.intent == "reduce" and halt.reason == "REDUCE_ONLY"


def open_forbidden(signal: Signal, streak: Streak, exposure: Exposure, clock: int, config: SizingConfig,
                   trace: dict[str, Any]) -> Rejection | None:
    """The protections an open signal must pass, in order: the loss guard's pause,
    the symbol's cooldown, the order rate. `clock` is the portfolio clock (ms) after
    the signal moved it. Writes `trace["protections"]` (only what is configured)."""
    if not config.open_protections:
        return None
    read: dict[str, Any] = {}
    refused = (loss_guard(streak, clock, config, read) or cooldown(signal.symbol, streak, clock, config, read)
               or order_rate(exposure, clock, config, read))
    if read:
        trace["protections"] = read
    return refused


def loss_guard(streak: Streak, clock: int, config: SizingConfig, read: dict[str, Any]) -> Rejection | None:
    """LOSS_GUARD while the clock is before the pause's end (`Streak.paused_until`,
    set by `state.book_loss` when `loss_guard_count` losses fell within
    `loss_guard_window_s`)."""
    guard = config.loss_guard_ms
    if guard is None:
        return None
    until = streak.paused_until
    in_window = sum(1 for t in streak.loss_times if t > clock - guard[1])  # the window up to the clock
    read["loss_guard"] = {"losses_in_window": in_window, "loss_guard_count": guard[0],
                          "paused_until": None if until is None else format_event_time(until)}
    if until is not None and clock < until:
        return Rejection("LOSS_GUARD", f"paused_until={format_event_time(until)} clock={format_event_time(clock)} "
                                       f"loss_guard_count={guard[0]} loss_guard_window_s="
                                       f"{canonical(config.loss_guard_window_s)}")
    return None


def cooldown(symbol: str, streak: Streak, clock: int, config: SizingConfig, read: dict[str, Any]) -> Rejection | None:
    """COOLDOWN while the clock is before the symbol's latest losing close plus
    `cooldown_after_loss_s`."""
    length = config.cooldown_ms
    if length is None:
        return None
    lost = streak.last_loss.get(symbol)
    until = None if lost is None else lost + length
    read["cooldown"] = {"symbol": symbol, "until": None if until is None else format_event_time(until)}
    if until is not None and clock < until:
        return Rejection("COOLDOWN", f"symbol={symbol} loss_ts={format_event_time(lost)} "  # type: ignore[arg-type]
                                     f"until={format_event_time(until)} clock={format_event_time(clock)}")
    return None


def order_rate(exposure: Exposure, clock: int, config: SizingConfig, read: dict[str, Any]) -> Rejection | None:
    """RATE_LIMITED when `max_orders_per_window` opens were accepted in the
    `order_rate_window_s` up to the clock (the window's start excluded)."""
    rate = config.order_rate_ms
    if rate is None:
        return None
    limit, window = rate
    in_window = sum(1 for t in exposure.recent_opens if t > clock - window)
    read["order_rate"] = {"opens_in_window": in_window, "max_orders_per_window": limit}
    if in_window >= limit:
        return Rejection("RATE_LIMITED", f"opens_in_window={in_window} max_orders_per_window={limit} "
                                         f"order_rate_window_s={canonical(config.order_rate_window_s)}")
    return None


def opens_after(exposure: Exposure, clock: int, config: SizingConfig) -> tuple[int, ...]:
    """The accepted opens the order rate remembers once an open is accepted at
    `clock`: those still inside the window, and this one (nothing when no rate is set)."""
    rate = config.order_rate_ms
    if rate is None:
        return exposure.recent_opens
    return tuple(t for t in exposure.recent_opens if t > clock - rate[1]) + (clock,)


def group_exposure(exposure: Exposure, group: str, symbol: str, config: SizingConfig) -> Decimal:
    """Exposure of a group (USD): open positions (on the configured basis) plus open
    reservations of every symbol in `group`. A position or reservation belongs to the
    group its order's instrument named; `symbol` (the signal's, in the group now)
    counts whatever its records say."""
    def member(record: Position | Reservation, name: str) -> bool:
        return record.group == group or name == symbol

    mark_basis = config.exposure_basis == "mark"
    marks = exposure.marks
    total = ZERO
    for name, position in exposure.positions.items():
        if member(position, name):
            mark = marks.get(name) if mark_basis else None
            total += position.entry_notional if mark is None else position.qty * mark.price
    for r in exposure.reservations.values():
        if member(r, r.symbol):
            total += r.notional
    return total


class ReduceSize(NamedTuple):
    """A reduce signal's quantity before exchange rules: the held base quantity times
    the fraction, and whether it exits the whole position."""

    qty: Decimal
    whole: bool


def reduce_size(signal: Signal, positions: Mapping[str, Position], legs: tuple[str, ...],
                trace: dict[str, Any]) -> ReduceSize | Rejection:
    """The quantity a reduce signal exits: `reduce_fraction` of the held base quantity
    of its symbol, on every one of its `legs` (venue symbols): a leg that holds less
    (legs filled unevenly) bounds it, so no leg exits more than it holds.
    NOTHING_TO_REDUCE with nothing held, or with a signal on the position's own side
    (a position of unknown side takes the signal's word)."""
    held = positions.get(signal.symbol)
    fraction = signal.reduce_fraction
    held_qty = held.qty if held is not None else ZERO
    side = held.side if held is not None else None
    trace["reduce"] = {"held_qty": held_qty, "position_side": side, "reduce_fraction": fraction}
    if held is None or held_qty <= 0:
        return Rejection("NOTHING_TO_REDUCE", f"symbol={signal.symbol} held_qty=0")
    if side == signal.side:
        return Rejection("NOTHING_TO_REDUCE", f"symbol={signal.symbol} side={signal.side} position_side={side}: "
                                              f"a reduce is on the side opposite to the position")
    if held.legs:
        trace["reduce"]["legs_held"] = {leg: held.legs.get(leg, held_qty) for leg in legs}
        held_qty = held.held_on(legs)
        if held_qty <= 0:
            return Rejection("NOTHING_TO_REDUCE", f"symbol={signal.symbol} held_qty={canonical(held.qty)}: a leg "
                                                  f"holds none of it")
    qty = held_qty * fraction
    trace["reduce"]["qty"] = qty
    return ReduceSize(qty, fraction == 1)
