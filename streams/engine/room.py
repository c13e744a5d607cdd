"""How much room a portfolio has under each of its caps, as the next signal's
decision would read it: the exposure of the pipeline's step 6 (positions on the
configured basis plus the reservations still open on the portfolio clock, by the
same functions the pipeline calls) against each cap in force.

Pure: the state and the configuration in, values out. `sizer status` prints it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from streams.config import SizingConfig
from streams.engine.protections import group_exposure
from streams.engine.state import PortfolioState, held_value, open_reservations


class CapRoom(NamedTuple):
    """One cap of one portfolio (USD): what it allows, the exposure it measures, and
    `remaining` = cap - exposure (the pipeline's `remaining`; at or below zero the
    cap refuses every signal it measures)."""

    cap: str  # "portfolio"; "group" (one per capped group held or reserved, `symbol` the group); "pair"
    symbol: str | None
    limit: Decimal
    exposure: Decimal
    remaining: Decimal

    @property
    def used(self) -> Decimal:
        """exposure / limit (a fraction; above 1 past the cap)."""
        return self.exposure / self.limit


def cap_room(state: PortfolioState, config: SizingConfig) -> list[CapRoom]:
    """Each cap of `config` for `state`: the portfolio cap first (on the equity now),
    then the cap of every group of `group_caps` the portfolio holds or has reserved
    (`protections.group_exposure`), then the pair cap of every symbol it holds or has
    reserved, by name.
    Reservations that would lapse at the portfolio clock (`reservation_ttl_s`) are
    not counted, as the next decision would not count them."""
    exposure = state.exposure
    clock = exposure.latest_ts if exposure.latest_ts is not None else 0
    held, _ = held_value(exposure, None, config)
    still_open = open_reservations(exposure.reservations, clock, None, config)
    limit = config.portfolio_cap.amount(state.streak.equity)
    used = held + still_open.reserved
    rooms = [CapRoom("portfolio", None, limit, used, limit - used)]
    measured = exposure._replace(reservations=still_open.reservations)
    records = [*exposure.positions.values(), *still_open.reservations.values()]
    for group in sorted({r.group for r in records if r.group is not None and r.group in config.group_caps}):
        group_limit = config.group_caps[group].amount(state.streak.equity)
        used = group_exposure(measured, group, "", config)  # "": no signal's symbol joins the group
        rooms.append(CapRoom("group", group, group_limit, used, group_limit - used))
    pair_cap = config.pair_cap
    if pair_cap is not None:
        symbols = sorted({*exposure.positions, *(r.symbol for r in exposure.reservations.values())})
        for symbol in symbols:
            _, held_symbol = held_value(exposure, symbol, config)
            reserved_symbol = open_reservations(exposure.reservations, clock, symbol, config).reserved_symbol
            used = held_symbol + reserved_symbol
            rooms.append(CapRoom("pair", symbol, pair_cap, used, pair_cap - used))
    return rooms
