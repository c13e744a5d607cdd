"""The demo's scripted trading session, as (topic, value) pairs in publishing order.

Graduated preset: three instruments, then portfolios that show confidence tiers,
fills and cancels, a burst that runs into the 1%-of-equity cap, a losing streak
that halves sizes and the wins that restore them, and the gate's rejections.
"""

from __future__ import annotations

from typing import Any, Iterator

from streams.engine import order_id_for

T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z

INSTRUMENTS = [
    {"symbol": "BTC-PERP-BASIS", "legs": [
        {"venue_symbol": "BTCUSDT", "side": "buy", "qty_step": "0.001", "min_qty": "0.001", "max_qty": None, "min_notional": "5"},
        {"venue_symbol": "BTCUSDT-PERP", "side": "sell", "qty_step": "0.001", "min_qty": "0.001", "max_qty": "100", "min_notional": "5"}]},
    {"symbol": "ETH-USD", "legs": [
        {"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001", "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]},
    {"symbol": "SOL-USD", "legs": [
        {"venue_symbol": "SOLUSDT", "side": "buy", "qty_step": "0.01", "min_qty": "0.01", "max_qty": None, "min_notional": "5"}]},
]
PRESET = "graduated"


def _signal(sid: str, portfolio: str, symbol: str, score: str, price: str, ts: int, side: str = "buy") -> dict[str, Any]:
    return {"signal_id": sid, "portfolio_id": portfolio, "symbol": symbol, "side": side,
            "score": score, "price": price, "ts": ts}


def _close(eid: str, portfolio: str, symbol: str, pnl: str, ts: int) -> dict[str, Any]:
    return {"event_id": eid, "portfolio_id": portfolio, "ts": ts, "type": "position_closed",
            "symbol": symbol, "qty": "0.5", "price": "2500", "realized_pnl": pnl}


def phases() -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """The session in phases. Signals and fills travel on separate topics, so the
    live demo waits for each phase to be consumed before publishing the next one:
    a signal that follows its fills in the story also follows them in the worker."""
    t = T0
    alpha_fills = [
        ("fills", {"event_id": "af-1", "portfolio_id": "alpha", "ts": t + 300, "type": "order_filled",
                   "order_id": order_id_for("alpha", "a-1"), "symbol": "BTC-PERP-BASIS", "qty": "0.002",
                   "price": "50010", "final": True}),
        ("fills", {"event_id": "af-2", "portfolio_id": "alpha", "ts": t + 400, "type": "order_canceled",
                   "order_id": order_id_for("alpha", "a-2")}),
    ]
    return [
        ("instruments", [("instruments", instrument) for instrument in INSTRUMENTS]),
        ("alpha: confidence tiers", [
            ("signals", _signal("a-1", "alpha", "BTC-PERP-BASIS", "0.92", "50000", t)),
            ("signals", _signal("a-2", "alpha", "ETH-USD", "0.70", "2500", t + 100)),
            ("signals", _signal("a-3", "alpha", "SOL-USD", "0.41", "150", t + 200)),
        ]),
        ("alpha: a fill and a cancel free the reservations", alpha_fills),
        ("alpha: sized against the position, not the reservations", [
            ("signals", _signal("a-4", "alpha", "ETH-USD", "0.88", "2500", t + 500, side="sell")),
        ]),
        ("bravo: a burst in one instant runs into the 1% cap", [
            ("signals", _signal(f"b-{n}", "bravo", "SOL-USD", "0.95", "150", t + 1_000)) for n in range(1, 15)
        ]),
        ("charlie: two losing closes", [
            ("fills", _close("cf-1", "charlie", "ETH-USD", "-40", t + 2_000)),
            ("fills", _close("cf-2", "charlie", "ETH-USD", "-25", t + 2_100)),
        ]),
        ("charlie: drawdown halves the size", [
            ("signals", _signal("c-1", "charlie", "ETH-USD", "0.90", "2500", t + 2_200)),
        ]),
        ("charlie: two winning closes", [
            ("fills", _close("cf-3", "charlie", "ETH-USD", "30", t + 2_300)),
            ("fills", _close("cf-4", "charlie", "ETH-USD", "45", t + 2_400)),
        ]),
        ("charlie: full size again", [
            ("signals", _signal("c-2", "charlie", "ETH-USD", "0.90", "2500", t + 2_500)),
        ]),
        ("delta: the gate", [
            ("signals", _signal("d-1", "delta", "BTC-PERP-BASIS", "0.86", "50000", t + 3_000_000)),
            ("signals", _signal("d-1", "delta", "BTC-PERP-BASIS", "0.86", "50000", t + 3_000_000)),
            ("signals", _signal("d-2", "delta", "DOGE-USD", "0.99", "0.2", t + 3_000_100)),
            ("signals", _signal("d-3", "delta", "ETH-USD", "0.99", "2500", t + 2_000_000)),
        ]),
    ]


def session() -> Iterator[tuple[str, dict[str, Any]]]:
    """The whole session in publishing order."""
    for _, entries in phases():
        yield from entries
