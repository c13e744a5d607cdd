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
from streams.engine.state import PortfolioState, held_value, open_reservations


class CapRoom(NamedTuple):
    """One cap of one portfolio (USD): what it allows, the exposure it measures, and
    `remaining` = cap - exposure (the pipeline's `remaining`; at or below zero the
    cap refuses every signal it measures)."""

    cap: str  # "portfolio", or "pair" (one per symbol held or reserved)
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
    then the pair cap of every symbol the portfolio holds or has reserved, by symbol.
    Reservations that would lapse at the portfolio clock (`reservation_ttl_s`) are
    not counted, as the next decision would not count them."""
    exposure = state.exposure
    clock = exposure.latest_ts if exposure.latest_ts is not None else 0
    held, _ = held_value(exposure, None, config)
    reserved = open_reservations(exposure.reservations, clock, None, config).reserved
    limit = config.portfolio_cap.amount(state.streak.equity)
    rooms = [CapRoom("portfolio", None, limit, held + reserved, limit - (held + reserved))]
    pair_cap = config.pair_cap
    if pair_cap is not None:
        symbols = sorted({*exposure.positions, *(r.symbol for r in exposure.reservations.values())})
        for symbol in symbols:
            _, held_symbol = held_value(exposure, symbol, config)
            reserved_symbol = open_reservations(exposure.reservations, clock, symbol, config).reserved_symbol
            used = held_symbol + reserved_symbol
            rooms.append(CapRoom("pair", symbol, pair_cap, used, pair_cap - used))
    return rooms
