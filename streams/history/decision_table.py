"""Decisions as a readable, fixed-width table for a terminal."""

from __future__ import annotations

from typing import Any, Mapping

COLUMNS = (("portfolio", 10), ("signal", 8), ("symbol", 15), ("score", 5), ("decision", 21),
           ("qty", 9), ("notional", 9), ("exposure", 9), ("cap", 7))


def header() -> str:
    line = " ".join(f"{name:<{width}}" for name, width in COLUMNS)
    return f"{line}\n{'-' * len(line)}"


def row(decision: Mapping[str, Any]) -> str:
    """One decision (its wire form) as a table row; exposure is before the decision."""
    trace = decision.get("trace", {})
    outcome = "accepted" if decision["outcome"] == "accepted" else decision["reason"]
    values = (
        decision["portfolio_id"], decision["signal_id"], trace.get("signal", {}).get("symbol", ""),
        trace.get("signal", {}).get("score", ""), outcome, decision.get("qty") or "",
        decision.get("notional") or "", trace.get("state", {}).get("exposure", ""),
        trace.get("caps", {}).get("portfolio_cap", ""),
    )
    return " ".join(f"{str(value):<{width}.{width}}" for value, (_, width) in zip(values, COLUMNS))
