"""Exchange constraints: the one place where a budget becomes a tradable quantity.

Every leg of an instrument gets the same quantity, a multiple of every leg's
`qty_step`, clamped to every leg's `max_qty` and `max_notional` (Binance's
LOT_SIZE and NOTIONAL filters), and meeting every leg's `min_qty` and
`min_notional`; otherwise the whole order is rejected. There is never a
one-legged order.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from math import lcm
from typing import NamedTuple

from streams.wire.decimals import canonical as c
from streams.wire.models import Leg

_ZERO = Decimal(0)


class Clamp(NamedTuple):
    """The leg and the rule that bound the quantity below what the budget buys."""

    venue_symbol: str
    rule: str  # "max_qty" | "max_notional"
    limit: Decimal

    def __str__(self) -> str:
        return f"leg={self.venue_symbol} {self.rule}={c(self.limit)}"


class Fit(NamedTuple):
    """The quantity every leg trades, or the reason none can.

    `unclamped` is what the budget buys on the common step before any leg's
    maximum; `clamped_by` the last leg rule that lowered it (None: none did)."""

    qty: Decimal
    step: Decimal
    unclamped: Decimal
    clamped_by: Clamp | None = None
    reason: str | None = None
    detail: str | None = None


@lru_cache(maxsize=4096)
def common_step(steps: tuple[Decimal, ...]) -> Decimal:
    """The smallest quantity that is a whole multiple of every step (their LCM)."""
    exponent = min(step.as_tuple().exponent for step in steps)
    scale = Decimal(1).scaleb(exponent)  # 10**exponent, exact
    units = [int((step / scale).to_integral_value()) for step in steps]
    return Decimal(lcm(*units)) * scale


def fit_to_legs(budget: Decimal, price: Decimal, legs: tuple[Leg, ...]) -> Fit:
    """Turn a USD budget at `price` (> 0) into one quantity valid on every leg
    (in the engine's exact context, see `decimals.ENGINE_CONTEXT`).

    The quantity is budget / price rounded down to the common step, so its
    notional never exceeds the budget; then clamped down, on the same step, to
    every leg's `max_qty` and to every leg's `max_notional` / price. Rejects with
    BELOW_MIN_QTY (nothing left: the detail names the leg and the rule that bound
    it, a maximum below one step included) or BELOW_MIN_NOTIONAL, naming the leg.
    """
    step = common_step(tuple(leg.qty_step for leg in legs))
    lot = price * step  # the notional of one common step
    # Integer division of positive operands is the exact floor: whole steps that fit.
    unclamped = (budget // lot) * step if budget > 0 else _ZERO
    return _fit(unclamped, step, price, legs, True, f"budget={c(budget)} price={c(price)}")


def fit_qty_to_legs(qty: Decimal, price: Decimal, legs: tuple[Leg, ...], minimums: bool) -> Fit:
    """Turn a base quantity (>= 0) at `price` (> 0) into one quantity valid on every
    leg, as `fit_to_legs` does for a budget: rounded down to the common step, clamped
    to every leg's maximum; the legs' minimums are enforced only with `minimums`
    (a reduce of the whole position is never refused for dust)."""
    step = common_step(tuple(leg.qty_step for leg in legs))
    unclamped = (qty // step) * step if qty > 0 else _ZERO
    return _fit(unclamped, step, price, legs, minimums, f"qty_wanted={c(qty)} price={c(price)}")


def _fit(unclamped: Decimal, step: Decimal, price: Decimal, legs: tuple[Leg, ...], minimums: bool, wanted: str) -> Fit:
    """The one rule of exchange constraints, from a quantity already on the common step."""
    lot = price * step
    qty = unclamped
    clamped_by: Clamp | None = None
    for leg in legs:
        if leg.max_qty is not None and qty > leg.max_qty:
            qty = (leg.max_qty // step) * step
            clamped_by = Clamp(leg.venue_symbol, "max_qty", leg.max_qty)
        if leg.max_notional is not None and qty * price > leg.max_notional:
            qty = (leg.max_notional // lot) * step
            clamped_by = Clamp(leg.venue_symbol, "max_notional", leg.max_notional)

    def rejected(reason: str, detail: str) -> Fit:
        return Fit(qty, step, unclamped, clamped_by, reason, detail)

    if qty <= 0:
        if clamped_by is not None:
            return rejected("BELOW_MIN_QTY", f"{clamped_by} qty_step={c(step)} qty=0: no whole step fits under it")
        # no leg's rule bound it: the budget buys less than one step common to every leg
        return rejected("BELOW_MIN_QTY", f"qty=0 common_step={c(step)} {wanted}")
    if not minimums:
        return Fit(qty, step, unclamped, clamped_by)
    clamp_note = f" clamped_by={clamped_by.venue_symbol}:{clamped_by.rule}" if clamped_by is not None else ""
    for leg in legs:
        if qty < leg.min_qty:
            return rejected("BELOW_MIN_QTY", f"leg={leg.venue_symbol} qty={c(qty)} min_qty={c(leg.min_qty)}{clamp_note}")
    notional = qty * price
    for leg in legs:
        if notional < leg.min_notional:
            return rejected("BELOW_MIN_NOTIONAL", f"leg={leg.venue_symbol} notional={c(notional)} "
                                                  f"min_notional={c(leg.min_notional)}{clamp_note}")
    return Fit(qty, step, unclamped, clamped_by)
