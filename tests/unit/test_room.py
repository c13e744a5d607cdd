"""`engine.room.cap_room`: the room under each cap, as the next decision would read it."""

from __future__ import annotations

from decimal import Decimal

from streams.config import SizingConfig
from streams.engine.room import CapRoom, cap_room
from streams.engine.state import Book, Exposure, PortfolioState, Position, Streak, reservation

D = Decimal


def state(equity: str = "100000") -> PortfolioState:
    return PortfolioState(
        Exposure(positions=Book({"ETH": Position(D("2"), D("400"))}),
                 reservations=Book({"o1": reservation("ETH", D("1"), D("300"), ts=1_000),
                                    "o2": reservation("SOL", D("5"), D("100"), ts=50_000)}),
                 latest_ts=100_000),
        Streak(equity=D(equity)))


def test_each_cap_measures_positions_and_open_reservations_against_its_limit():
    config = SizingConfig(portfolio_cap="1%", pair_cap_usd=D("800"))
    # independently: ETH holds 400 and reserves 300, SOL reserves 500; the cap is 1% of 100,000
    assert cap_room(state(), config) == [
        CapRoom("portfolio", None, D("1000"), D("1200"), D("-200")),
        CapRoom("pair", "ETH", D("800"), D("700"), D("100")),
        CapRoom("pair", "SOL", D("800"), D("500"), D("300")),
    ]


def test_a_reservation_that_lapsed_on_the_portfolio_clock_takes_no_room():
    # o1 was made at 1 s, the clock is at 100 s: with a 60 s lifetime it has lapsed, o2 (50 s) has not
    config = SizingConfig(portfolio_cap="5000", reservation_ttl_s=D("60"), max_signal_age_s=D("30"),
                          max_future_skew_s=D("30"))
    rooms = {(room.cap, room.symbol): room for room in cap_room(state(), config)}
    assert rooms[("portfolio", None)].exposure == D("900")
    assert rooms[("pair", "ETH")].exposure == D("400")
    assert rooms[("portfolio", None)].used == D("0.18")


def test_a_group_cap_measures_what_its_orders_instruments_named_as_the_group():
    config = SizingConfig(portfolio_cap="5000", group_caps={"L1": "1500"})
    held = PortfolioState(
        Exposure(positions=Book({"ETH": Position(D("2"), D("400"), "buy", "L1")}),
                 reservations=Book({"o1": reservation("SOL", D("5"), D("100"), ts=1_000, group="L1"),
                                    "o2": reservation("BTC", D("1"), D("700"), ts=1_000)}),
                 latest_ts=2_000),
        Streak(equity=D("100000")))
    rooms = {(room.cap, room.symbol): room for room in cap_room(held, config)}
    assert rooms[("group", "L1")] == CapRoom("group", "L1", D("1500"), D("900"), D("600"))  # ETH 400 + SOL 500
    assert rooms[("portfolio", None)].exposure == D("1600")
