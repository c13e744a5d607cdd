"""A deterministic synthetic session: instruments, then signals with fills, cancels
and closes mixed in, across many portfolios. Used by the benchmarks and the demo."""

from __future__ import annotations

import random
from typing import Any, Iterator

from streams.engine import order_id_for

T0 = 1_767_225_600_000

INSTRUMENTS: list[dict[str, Any]] = [
    {"symbol": "BTC-PERP-BASIS", "legs": [
        {"venue_symbol": "BTCUSDT", "side": "buy", "qty_step": "0.001", "min_qty": "0.001", "max_qty": None, "min_notional": "5"},
        {"venue_symbol": "BTCUSDT-PERP", "side": "sell", "qty_step": "0.001", "min_qty": "0.001", "max_qty": "100", "min_notional": "5"}]},
    {"symbol": "ETH-PERP-BASIS", "legs": [
        {"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.004", "min_qty": "0.008", "max_qty": None, "min_notional": "5"},
        {"venue_symbol": "ETHUSDT-PERP", "side": "sell", "qty_step": "0.006", "min_qty": "0.006", "max_qty": "500", "min_notional": "5"}]},
    {"symbol": "SOL-USD", "legs": [
        {"venue_symbol": "SOLUSDT", "side": "buy", "qty_step": "0.1", "min_qty": "0.1", "max_qty": "10000", "min_notional": "5"}]},
    {"symbol": "DOGE-USD", "legs": [
        {"venue_symbol": "DOGEUSDT", "side": "buy", "qty_step": "1", "min_qty": "10", "max_qty": None, "min_notional": "5"}]},
]
PRICES = {"BTC-PERP-BASIS": 50_000, "ETH-PERP-BASIS": 3_000, "SOL-USD": 150, "DOGE-USD": 0.2}


def session(signals: int, portfolios: int = 100, seed: int = 7) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (topic, value) pairs: every instrument, then `signals` signals with about
    one fill event for every two signals, in event-time order."""
    rng = random.Random(seed)
    for instrument in INSTRUMENTS:
        yield "instruments", instrument
    symbols = list(PRICES)
    recent: dict[str, list[tuple[str, str, str, str]]] = {}
    ts = T0
    event = 0
    for n in range(signals):
        ts += rng.randint(1, 40)
        portfolio = f"p{rng.randrange(portfolios)}"
        symbol = rng.choice(symbols)
        price = PRICES[symbol] * (1 + (rng.random() - 0.5) / 50)
        price_text = f"{price:.4f}" if price < 1 else f"{price:.2f}"
        signal_id = f"s-{n}"
        yield "signals", {"signal_id": signal_id, "portfolio_id": portfolio, "symbol": symbol,
                          "side": rng.choice(("buy", "sell")), "score": f"{rng.random():.3f}",
                          "price": price_text, "ts": ts}
        recent.setdefault(portfolio, []).append((order_id_for(portfolio, signal_id), symbol, price_text, signal_id))
        if rng.random() < 0.5:
            event += 1
            pending = recent[rng.choice(list(recent))]
            if not pending:
                continue
            order_id, sym, px, _ = pending.pop(0)
            owner = next(p for p, items in recent.items() if items is pending)
            kind = rng.random()
            base = {"event_id": f"f-{event}", "portfolio_id": owner, "ts": ts}
            if kind < 0.55:
                yield "fills", {**base, "type": "order_filled", "order_id": order_id, "symbol": sym,
                                "qty": "0.01", "price": px, "final": True}
            elif kind < 0.75:
                yield "fills", {**base, "type": "order_canceled", "order_id": order_id}
            else:
                pnl = f"{(rng.random() - 0.45) * 40:.2f}"
                yield "fills", {**base, "type": "position_closed", "symbol": sym, "qty": "0.01",
                                "price": px, "realized_pnl": pnl}


def spread_signals(signals: int, portfolios: int, seed: int = 7) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (topic, value) pairs: every instrument, then `signals` signals (no fills)
    going round the portfolios p0..p{portfolios - 1} in turn, so that any `signals` >=
    `portfolios` touches every portfolio; symbol, side, score and price vary as in
    `session`."""
    if portfolios < 1:
        raise ValueError(f"portfolios must be >= 1, not {portfolios}")
    rng = random.Random(seed)
    for instrument in INSTRUMENTS:
        yield "instruments", instrument
    symbols = list(PRICES)
    ts = T0
    for n in range(signals):
        ts += rng.randint(1, 40)
        symbol = rng.choice(symbols)
        price = PRICES[symbol] * (1 + (rng.random() - 0.5) / 50)
        yield "signals", {"signal_id": f"s-{n}", "portfolio_id": f"p{n % portfolios}", "symbol": symbol,
                          "side": rng.choice(("buy", "sell")), "score": f"{rng.random():.3f}",
                          "price": f"{price:.4f}" if price < 1 else f"{price:.2f}", "ts": ts}
