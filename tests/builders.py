"""Builders for wire messages and journals, shared by the test suites."""

from __future__ import annotations

import itertools
import json
from typing import Any

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch ms

_ids = itertools.count(1)


def leg(venue_symbol: str, side: str = "buy", qty_step: str = "0.001", min_qty: str = "0",
        max_qty: str | None = None, min_notional: str = "0") -> dict[str, Any]:
    return {"venue_symbol": venue_symbol, "side": side, "qty_step": qty_step, "min_qty": min_qty,
            "max_qty": max_qty, "min_notional": min_notional}


def instrument(symbol: str, *legs: dict[str, Any], group: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"symbol": symbol, "legs": list(legs) or [leg(symbol)]}
    if group is not None:
        value["group"] = group
    return {"topic": "instruments", "value": value}


def signal(portfolio_id: str, symbol: str, score: str, price: str, ts: int = T0, side: str = "buy",
           signal_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A signal; `fields` adds others (intent="reduce", reduce_fraction="0.5")."""
    return {"topic": "signals", "value": {
        "signal_id": signal_id or f"s-{next(_ids)}", "portfolio_id": portfolio_id, "symbol": symbol,
        "side": side, "score": score, "price": price, "ts": ts, **fields}}


def reduce(portfolio_id: str, symbol: str, price: str, side: str, fraction: str | None = None, ts: int = T0,
           signal_id: str | None = None) -> dict[str, Any]:
    """A reduce signal (no score: a reduce is sized from the held position)."""
    entry = signal(portfolio_id, symbol, "1", price, ts=ts, side=side, signal_id=signal_id, intent="reduce")
    del entry["value"]["score"]
    if fraction is not None:
        entry["value"]["reduce_fraction"] = fraction
    return entry


def filled(portfolio_id: str, order_id: str, symbol: str, qty: str, price: str, ts: int = T0,
           final: bool = True, event_id: str | None = None) -> dict[str, Any]:
    return {"topic": "fills", "value": {
        "event_id": event_id or f"f-{next(_ids)}", "portfolio_id": portfolio_id, "ts": ts,
        "type": "order_filled", "order_id": order_id, "symbol": symbol, "qty": qty, "price": price,
        "final": final}}


def canceled(portfolio_id: str, order_id: str, ts: int = T0, event_id: str | None = None) -> dict[str, Any]:
    return {"topic": "fills", "value": {
        "event_id": event_id or f"f-{next(_ids)}", "portfolio_id": portfolio_id, "ts": ts,
        "type": "order_canceled", "order_id": order_id}}


def closed(portfolio_id: str, symbol: str, qty: str, price: str, pnl: str, ts: int = T0,
           event_id: str | None = None) -> dict[str, Any]:
    return {"topic": "fills", "value": {
        "event_id": event_id or f"f-{next(_ids)}", "portfolio_id": portfolio_id, "ts": ts,
        "type": "position_closed", "symbol": symbol, "qty": qty, "price": price, "realized_pnl": pnl}}


def journal_text(entries: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(entry) + "\n" for entry in entries)


def control(portfolio_id: str, kind: str, ts: int = T0, command_id: str | None = None, operator: str = "alice",
            reason: str = "test", **fields: Any) -> dict[str, Any]:
    """An operator command: halt, resume, release (order_id=...), adjust_equity (amount=...)."""
    return {"topic": "controls", "value": {
        "command_id": command_id or f"c-{next(_ids)}", "portfolio_id": portfolio_id, "ts": ts, "type": kind,
        "operator": operator, "reason": reason, **fields}}
