"""The invariants every fault test ends on, checked under read_committed: every
signal has exactly one decision, no order id appears twice, no accepted order took
exposure past a cap, and the final state equals an offline replay of the recorded
interleaving (the audit re-derives every decision, one probe per portfolio
carrying the final state in its trace)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal as D
from typing import Any

from tests.integration.harness import Deployment, decisions_by_signal


def assert_exactly_once(deployment: Deployment, inputs: list[tuple[str, Any]], timeout_s: float = 600) -> None:
    signal_count = sum(1 for role, _ in inputs if role == "signals")
    deployment.wait_for("decisions", signal_count, timeout_s=timeout_s)
    deployment.wait_consumed("fills", timeout_s=300)
    portfolios = sorted({value["portfolio_id"] for role, value in inputs if role == "signals"})
    deployment.publish([("signals", {"signal_id": f"probe-{p}", "portfolio_id": p, "symbol": "SOL-USD",
                                     "side": "buy", "score": "0", "price": "150", "ts": 1_767_300_000_000})
                        for p in portfolios])
    expected = signal_count + len(portfolios)
    decisions = deployment.wait_for("decisions", expected, timeout_s=120)
    orders = deployment.read("orders")

    positions = Counter((r.json()["trace"]["input"]["partition"], r.json()["trace"]["input"]["offset"])
                        for r in decisions)
    twice = sorted(position for position, n in positions.items() if n > 1)
    assert not twice, f"{len(twice)} signals decided twice, first {twice[:5]}"
    assert len(positions) == expected, f"{expected - len(positions)} signals never decided"
    by_signal = decisions_by_signal(decisions)
    assert all(len(ds) == 1 for ds in by_signal.values())
    order_ids = Counter(o.json()["order_id"] for o in orders)
    assert max(order_ids.values()) == 1, "an order id appears twice"
    accepted = [d for ds in by_signal.values() for d in ds if d["outcome"] == "accepted"]
    assert sorted(order_ids) == sorted(d["order_id"] for d in accepted)
    for decision in accepted:
        trace = decision["trace"]
        assert D(trace["state"]["exposure"]) + D(decision["notional"]) <= D(trace["caps"]["portfolio_cap"])
        assert D(trace["caps"]["pair_exposure"]) + D(decision["notional"]) <= D(trace["caps"]["pair_cap"])

    code, report, _ = deployment.audit()
    assert (code, report["mismatches"], report["verified"]) == (0, [], expected), \
        {k: v for k, v in report.items() if k != "mismatches"} | {"mismatches": report["mismatches"][:5]}
