"""Exchange constraints: the one place where a budget becomes a tradable quantity.

Every leg of an instrument gets the same quantity, a multiple of every leg's
`qty_step`, clamped to the smallest `max_qty`, and meeting every leg's
`min_qty` and `min_notional`; otherwise the whole order is rejected. There is
never a one-legged order.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from math import lcm
from typing import NamedTuple

from streams.decimals import canonical as c
from streams.models import Leg


class Fit(NamedTuple):
    """The quantity every leg trades, or the reason none can."""

    qty: Decimal
    step: Decimal
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
    """Turn a USD budget at `price` into one quantity valid on every leg
    (in the engine's exact context, see `decimals.ENGINE_CONTEXT`).

    The quantity is budget / price rounded down to the common step, so its
    notional never exceeds the budget; then clamped down to the smallest
    `max_qty`. Rejects with BELOW_MIN_QTY or BELOW_MIN_NOTIONAL naming the leg.
    """
    step = common_step(tuple(leg.qty_step for leg in legs))
    # Integer division of positive operands is the exact floor: whole steps that fit.
    units = budget // (price * step) if budget > 0 else Decimal(0)
    qty = units * step
    for leg in legs:
        if leg.max_qty is not None and qty > leg.max_qty:
            qty = (leg.max_qty // step) * step
    for leg in legs:
        if qty <= 0 or qty < leg.min_qty:
            return Fit(qty, step, "BELOW_MIN_QTY", f"leg={leg.venue_symbol} qty={c(qty)} min_qty={c(leg.min_qty)}")
    notional = qty * price
    for leg in legs:
        if notional < leg.min_notional:
            return Fit(qty, step, "BELOW_MIN_NOTIONAL",
                       f"leg={leg.venue_symbol} notional={c(notional)} min_notional={c(leg.min_notional)}")
    return Fit(qty, step)
