"""Exchange constraints: the one place where a budget becomes a tradable quantity,
and where a leg's venue units meet the base quantity (DESIGN.md, "Messages", units).

Every leg of an instrument holds the same base quantity, a multiple of every
spot and linear leg's step in base units, clamped to every leg's `max_qty` and
`max_notional` (Binance's LOT_SIZE and NOTIONAL filters), and meeting every
leg's `min_qty` (in its own units) and `min_notional` (quote); otherwise the
whole order is rejected. There is never a one-legged order. A linear leg's
contracts hold exactly the base quantity; an inverse leg's contracts round down
and their unhedged quote notional is reported (`hedge_residual`).

Venue units (sources): OKX instruments `ctVal` (BTC-USDT-SWAP 0.01 BTC,
CRV-USDT-SWAP 10 CRV; https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments);
Binance COIN-M `contractSize` (BTCUSD_PERP 100 USD, the others 10 USD;
https://developers.binance.com/docs/derivatives/coin-margined-futures/market-data/rest-api/Exchange-Information).
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from math import lcm
from typing import Any, NamedTuple

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
    """The base quantity every leg holds and each leg's quantity in its venue's
    units, or the reason none can.

    `qty` is the base quantity; `step` the common base step of the spot and linear
    legs; `unclamped` what the budget buys on that step before any leg's maximum;
    `clamped_by` the last leg rule that lowered it (None: none did). `leg_qty` is
    each leg's quantity in its own units, in the instrument's leg order;
    `hedge_residual` the quote notional each inverse leg leaves unhedged (its venue
    symbol and base_qty x price - contracts x contract_size), in leg order."""

    qty: Decimal
    step: Decimal
    unclamped: Decimal
    clamped_by: Clamp | None = None
    reason: str | None = None
    detail: str | None = None
    leg_qty: tuple[Decimal, ...] = ()
    hedge_residual: tuple[tuple[str, Decimal], ...] = ()


@lru_cache(maxsize=4096)
def common_step(steps: tuple[Decimal, ...]) -> Decimal:
    """The smallest quantity that is a whole multiple of every step (their LCM)."""
    exponent = min(step.as_tuple().exponent for step in steps)
    scale = Decimal(1).scaleb(exponent)  # 10**exponent, exact
    units = [int((step / scale).to_integral_value()) for step in steps]
    return Decimal(lcm(*units)) * scale


def base_step(leg: Leg) -> Decimal:
    """A spot or linear leg's step in base units: `qty_step` base units (spot), or
    `qty_step` contracts of `contract_size` base units (linear)."""
    return leg.qty_step * leg.contract_size if leg.kind == "linear" else leg.qty_step


def base_max(leg: Leg, price: Decimal) -> Decimal | None:
    """A leg's `max_qty` as a base quantity at `price` (inverse: contracts of
    `contract_size` quote units); None: no maximum."""
    if leg.max_qty is None:
        return None
    if leg.kind == "spot":
        return leg.max_qty
    if leg.kind == "linear":
        return leg.max_qty * leg.contract_size
    return leg.max_qty * leg.contract_size / price


def venue_qty(leg: Leg, base_qty: Decimal, price: Decimal) -> Decimal:
    """A base quantity in the leg's own units: base units (spot), contracts of
    `contract_size` base units (linear, exact when `base_qty` is on the leg's base
    step), or contracts of `contract_size` quote units at `price`, rounded down to
    the leg's `qty_step` (inverse)."""
    if leg.kind == "spot":
        return base_qty
    if leg.kind == "linear":
        return base_qty / leg.contract_size
    return (base_qty * price / leg.contract_size // leg.qty_step) * leg.qty_step


def base_of(kind: str, contract_size: Decimal, qty: Decimal, price: Decimal) -> Decimal:
    """A quantity in a leg's units (a fill naming the leg) as a base quantity at
    `price` (> 0): itself (spot), qty x contract_size (linear), or qty x
    contract_size / price (inverse: contracts of quote units), rounded half-even to
    1e-18 base units (a quotient may not be a finite decimal)."""
    if kind == "spot":
        return qty
    if kind == "linear":
        return qty * contract_size
    return (qty * contract_size / price).quantize(_BASE_QUANTUM)


_BASE_QUANTUM = Decimal("1e-18")


def leg_notional(leg: Leg, qty: Decimal, price: Decimal) -> Decimal:
    """The quote notional of `qty` in the leg's own units at `price`: qty x price
    (spot), qty x contract_size x price (linear), qty x contract_size (inverse)."""
    if leg.kind == "spot":
        return qty * price
    if leg.kind == "linear":
        return qty * leg.contract_size * price
    return qty * leg.contract_size


def fit_to_legs(budget: Decimal, price: Decimal, legs: tuple[Leg, ...],
                max_hedge_residual_pct: Decimal | None = None) -> Fit:
    """Turn a USD budget at `price` (> 0) into one base quantity valid on every leg
    and each leg's quantity in its venue's units (in the engine's exact context,
    see `decimals.ENGINE_CONTEXT`).

    The base quantity is budget / price rounded down to the common base step of
    the spot and linear legs (`base_step`), so its notional never exceeds the
    budget; then clamped down, on the same step, to every leg's `max_qty` (in base
    units, `base_max`) and to every leg's `max_notional` / price. Each leg's
    quantity is `venue_qty`; an inverse leg's contracts round down, and the quote
    notional they leave unhedged is its `hedge_residual`. Rejects with
    BELOW_MIN_QTY (nothing left: the detail names the leg and the rule that bound
    it, a maximum below one step included; or a leg under its `min_qty` in its own
    units), BELOW_MIN_NOTIONAL (a leg's quote notional under its minimum), or
    HEDGE_MISMATCH (an inverse leg's residual above `max_hedge_residual_pct` of
    the order's notional), naming the leg.
    """
    sized = sized_legs(legs)
    step = sized.step
    lot = price * step  # the notional of one common step
    # Integer division of positive operands is the exact floor: whole steps that fit.
    unclamped = (budget // lot) * step if budget > 0 else _ZERO
    return _fit(unclamped, sized, price, True, ("budget", budget), max_hedge_residual_pct)


def fit_qty_to_legs(qty: Decimal, price: Decimal, legs: tuple[Leg, ...], minimums: bool) -> Fit:
    """Turn a base quantity (>= 0) at `price` (> 0) into one quantity valid on every
    leg, as `fit_to_legs` does for a budget: rounded down to the common step, clamped
    to every leg's maximum; the legs' minimums are enforced only with `minimums`
    (a reduce of the whole position is never refused for dust), but a leg whose
    quantity rounds to zero (an inverse leg under one contract) is refused
    BELOW_MIN_QTY in any case: never a one-legged order. Each leg's quantity
    in its venue's units as `fit_to_legs` gives it."""
    sized = sized_legs(legs)
    step = sized.step
    unclamped = (qty // step) * step if qty > 0 else _ZERO
    return _fit(unclamped, sized, price, minimums, ("qty_wanted", qty), None)


class _LegValues:
    """A leg's fields as plain attributes: a fit reads each leg's several times, and a
    pydantic model's attribute read costs about ten times a plain one's."""

    def __init__(self, leg: Leg) -> None:
        self.__dict__.update(vars(leg))


class SizedLegs:
    """An instrument's legs as a fit and an order read them, made once per legs tuple
    (`sized_legs`): each leg's values (`legs`), their common base step (`common_step`
    of each spot and linear leg's `base_step`), their venue symbols, whether any leg
    is in contracts, whether any is inverse, and each leg's (kind, contract_size)
    when any is in contracts ((): every leg spot)."""

    def __init__(self, legs: tuple[Leg, ...]) -> None:
        self.source = legs
        self.legs: tuple[Leg, ...] = tuple(_LegValues(leg) for leg in legs)  # type: ignore[misc]
        self.step = common_step(tuple(base_step(leg) for leg in legs if leg.kind != "inverse"))
        self.venue_symbols = tuple(leg.venue_symbol for leg in legs)
        self.contracts = any(leg.kind != "spot" for leg in legs)
        self.inverse = any(leg.kind == "inverse" for leg in legs)
        self.units = tuple((leg.kind, leg.contract_size) for leg in legs) if self.contracts else ()


# id(legs) -> their SizedLegs: an instrument's legs are sized on every signal of its
# symbol and change only with a new instrument record
_SIZED: dict[int, SizedLegs] = {}
_SIZED_KEPT = 4096


def sized_legs(legs: tuple[Leg, ...]) -> SizedLegs:
    """The SizedLegs of `legs`, made once per legs tuple (kept with it, so its id is its own)."""
    known = _SIZED.get(id(legs))
    if known is None or known.source is not legs:
        if len(_SIZED) >= _SIZED_KEPT:  # forgotten all at once past the bound
            _SIZED.clear()
        known = _SIZED[id(legs)] = SizedLegs(legs)
    return known


def _fit(unclamped: Decimal, sized: SizedLegs, price: Decimal, minimums: bool, wanted: tuple[str, Decimal],
         max_hedge_residual_pct: Decimal | None) -> Fit:
    """The one rule of exchange constraints, from a base quantity already on the
    common base step of the legs (`sized`): the legs' maximums, each leg's quantity in
    its units, then (with `minimums`) the legs' minimums and the hedge residual.
    `wanted`: what the quantity was made from, (its name, its value), for a detail
    (written only when one is: most fits are not refused for less than one step)."""
    legs, step = sized.legs, sized.step
    lot = price * step
    qty = unclamped
    clamped_by: Clamp | None = None
    for leg in legs:
        most = None if leg.max_qty is None else base_max(leg, price)
        if most is not None and qty > most:
            qty = (most // step) * step
            clamped_by = Clamp(leg.venue_symbol, "max_qty", leg.max_qty)  # type: ignore[arg-type]
        if leg.max_notional is not None and qty * price > leg.max_notional:
            qty = (leg.max_notional // lot) * step
            clamped_by = Clamp(leg.venue_symbol, "max_notional", leg.max_notional)
    fitted = (qty, step, unclamped, clamped_by)  # what a refusal carries (`_refused`)
    if qty <= 0:
        if clamped_by is not None:
            return _refused(fitted, "BELOW_MIN_QTY",
                            f"{clamped_by} qty_step={c(step)} qty=0: no whole step fits under it")
        # no leg's rule bound it: the budget buys less than one step common to every leg
        return _refused(fitted, "BELOW_MIN_QTY",
                        f"qty=0 common_step={c(step)} {wanted[0]}={c(wanted[1])} price={c(price)}")
    # every leg's quantity in its units: the base quantity itself on every spot leg
    leg_qty = tuple([venue_qty(leg, qty, price) for leg in legs]) if sized.contracts else (qty,) * len(legs)
    notional = qty * price
    residual = tuple([(leg.venue_symbol, notional - leg_notional(leg, q, price))
                      for leg, q in zip(legs, leg_qty) if leg.kind == "inverse"]) if sized.inverse else ()
    clamp_note = f" clamped_by={clamped_by.venue_symbol}:{clamped_by.rule}" if clamped_by is not None else ""
    if not minimums:
        # dust is no reason to refuse, but a leg of no contracts at all (an inverse leg
        # rounded to zero) would be a one-legged order no fill could report back
        for leg, q in zip(legs, leg_qty):
            if q <= 0:
                return _refused(fitted, "BELOW_MIN_QTY", f"leg={leg.venue_symbol} qty={c(q)}: under one {leg.kind} "
                                f"contract at price={c(price)}, never a one-legged order{clamp_note}",
                                leg_qty, residual)
        return _new(Fit, (qty, step, unclamped, clamped_by, None, None, leg_qty, residual))
    for leg, q in zip(legs, leg_qty):
        if q < leg.min_qty or q <= 0:
            return _refused(fitted, "BELOW_MIN_QTY", f"leg={leg.venue_symbol} qty={c(q)} min_qty={c(leg.min_qty)}"
                            f"{clamp_note}", leg_qty, residual)
    for leg, q in zip(legs, leg_qty):
        leg_value = notional if leg.kind == "spot" else leg_notional(leg, q, price)
        if leg_value < leg.min_notional:
            return _refused(fitted, "BELOW_MIN_NOTIONAL", f"leg={leg.venue_symbol} notional={c(leg_value)} "
                            f"min_notional={c(leg.min_notional)}{clamp_note}", leg_qty, residual)
    if max_hedge_residual_pct is not None:
        for venue_symbol, left in residual:
            if left * 100 > max_hedge_residual_pct * notional:
                return _refused(fitted, "HEDGE_MISMATCH", f"leg={venue_symbol} hedge_residual={c(left)} "
                                f"notional={c(notional)} max_hedge_residual_pct={c(max_hedge_residual_pct)}",
                                leg_qty, residual)
    return _new(Fit, (qty, step, unclamped, clamped_by, None, None, leg_qty, residual))


def _refused(fitted: tuple[Decimal, Decimal, Decimal, Clamp | None], reason: str, detail: str,
             leg_qty: tuple[Decimal, ...] = (), residual: tuple[tuple[str, Decimal], ...] = ()) -> Fit:
    """A fit refused for `reason` (its `detail`), with what `_fit` had computed: `fitted`
    (qty, step, unclamped, clamped_by), and each leg's quantity and residual if it got that far."""
    return _new(Fit, (*fitted, reason, detail, leg_qty, residual))  # type: ignore[no-any-return]


# a Fit of every field, without the NamedTuple constructor's Python frame (a fit is made per signal sized)
_new: Any = tuple.__new__
