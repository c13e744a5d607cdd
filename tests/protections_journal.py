"""One desk's day that combines every protection with halts, equity adjustments,
leg fills and reservations: a config file and a journal, shared by the acceptance
test (`sizer replay`) and the broker test (the worker and the audit)."""

from __future__ import annotations

from typing import Any

from streams.engine import order_id_for
from tests.builders import T0, closed, control, filled, instrument, leg, reduce, signal

MIN = 60_000
ETH = instrument("ETH", leg("ETHUSDT", qty_step="0.001", min_qty="0.001", min_notional="5"), group="L1")
SOL = instrument("SOL", leg("SOLUSDT", qty_step="0.01", min_qty="0.01", min_notional="5"), group="L1")
BASIS = instrument("BTC-BASIS", leg("BTCUSDT", "buy", qty_step="0.001"), leg("BTCUSDT-PERP", "sell", qty_step="0.001"),
                   group="BTC")

DESK_CONFIG = (
    'preset = "conviction"\npair_cap_usd = 5000\n'
    'cooldown_after_loss_s = 1800\n'
    'loss_guard_count = 2\nloss_guard_window_s = 3600\nloss_guard_pause_s = 600\n'
    'max_orders_per_window = 3\norder_rate_window_s = 60\n'
    '[group_caps]\nL1 = "1500"\nBTC = "2%"\n'
    '[portfolios."desk-b"]\ncooldown_after_loss_s = 60\n'
)


def leg_filled(portfolio: str, order_id: str, symbol: str, qty: str, price: str, ts: int, venue: str) -> dict[str, Any]:
    entry = filled(portfolio, order_id, symbol, qty, price, ts=ts)
    entry["value"]["venue_symbol"] = venue
    return entry


def desk_day() -> list[dict[str, Any]]:
    basis_order = order_id_for("desk-a", "b1")
    entries = [
        ETH, SOL, BASIS,
        signal("desk-a", "ETH", "1", "100", T0, signal_id="e1"),  # 1000 (L1: 1000 of 1500)
        signal("desk-a", "SOL", "1", "100", T0 + 1000, signal_id="s1"),  # shrunk to L1's 500
        signal("desk-a", "SOL", "1", "100", T0 + 2000, signal_id="s2"),  # L1 full (a rejection is no order)
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 3000, signal_id="b1"),  # 1000 (BTC: 2% of 100,000)
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 4000, signal_id="b2"),  # 3 opens in 60 s: rate
        # one leg of the basis fills, then the other: one position, the reservation gone
        leg_filled("desk-a", basis_order, "BTC-BASIS", "10", "100", T0 + 5000, "BTCUSDT"),
        leg_filled("desk-a", basis_order, "BTC-BASIS", "10", "100", T0 + 5000, "BTCUSDT-PERP"),
        closed("desk-a", "ETH", "1", "90", "-10", ts=T0 + MIN),  # a loss: ETH cools down 30 min
        signal("desk-a", "ETH", "1", "100", T0 + 2 * MIN, signal_id="e2"),  # COOLDOWN
        control("desk-a", "halt", ts=T0 + 2 * MIN),
        reduce("desk-a", "BTC-BASIS", "100", "sell", ts=T0 + 3 * MIN, signal_id="x1"),  # a full halt stops it
        control("desk-a", "resume", ts=T0 + 3 * MIN),
        control("desk-a", "adjust_equity", ts=T0 + 3 * MIN, amount="-50000"),  # BTC's 2% is now 1000: full
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 4 * MIN, signal_id="b3"),  # GROUP_CAP_REACHED
        reduce("desk-a", "BTC-BASIS", "100", "sell", fraction="0.25", ts=T0 + 5 * MIN, signal_id="x2"),
        closed("desk-a", "SOL", "1", "90", "-10", ts=T0 + 6 * MIN),  # the second loss in the hour: paused
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 7 * MIN, signal_id="b4"),  # LOSS_GUARD
        reduce("desk-a", "ETH", "100", "buy", ts=T0 + 7 * MIN, signal_id="x3"),  # nothing held in ETH
        signal("desk-b", "ETH", "1", "100", T0, signal_id="e1"),
        closed("desk-b", "ETH", "1", "90", "-10", ts=T0 + MIN),
        signal("desk-b", "ETH", "0.5", "100", T0 + MIN + 59_000, signal_id="e2"),  # desk-b cools 60 s
        signal("desk-b", "ETH", "0.5", "100", T0 + 2 * MIN, signal_id="e3"),  # 650 shrunk to L1's 500
    ]
    return entries


# (portfolio, signal id) -> the decision's reason, or its notional when accepted, in journal order
DESK_DAY_DECISIONS = [
    ("desk-a", "e1", "1000"), ("desk-a", "s1", "500"), ("desk-a", "s2", "GROUP_CAP_REACHED"), ("desk-a", "b1", "1000"),
    ("desk-a", "b2", "RATE_LIMITED"), ("desk-a", "e2", "COOLDOWN"), ("desk-a", "x1", "HALTED"),
    ("desk-a", "b3", "GROUP_CAP_REACHED"), ("desk-a", "x2", "250"), ("desk-a", "b4", "LOSS_GUARD"),
    ("desk-a", "x3", "NOTHING_TO_REDUCE"),
    ("desk-b", "e1", "1000"), ("desk-b", "e2", "COOLDOWN"), ("desk-b", "e3", "500"),
]
