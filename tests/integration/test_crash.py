"""SIGKILL at random points while 20,000 signals and fills stream through, five
times, under exactly-once: afterwards every signal has exactly one decision, no
order id appears twice, no accepted order ever took exposure past the cap, and the
final state is what an offline replay of the same interleaving gives."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from decimal import Decimal as D

from streams.bench.generate import session
from tests.integration.harness import decisions_by_signal


SIGNALS = int(os.environ.get("SIZER_CRASH_SIGNALS", "13400"))  # with fills: over 20,000 inputs
KILLS = int(os.environ.get("SIZER_CRASH_KILLS", "5"))


def test_five_sigkills_lose_nothing_and_double_nothing(deployment, workers):
    rng = random.Random(5)
    inputs = list(session(SIGNALS, portfolios=20, seed=5))
    signal_count = sum(1 for role, _ in inputs if role == "signals")
    assert len(inputs) >= 1.45 * SIGNALS

    worker = workers("--preset", "conviction")
    deployment.publish(inputs)
    for kill in range(KILLS):
        time.sleep(rng.uniform(1.0, 4.0))
        assert worker.alive()
        worker.kill()  # SIGKILL: no flush, no commit, no goodbye
        worker = workers("--preset", "conviction")

    decisions = deployment.wait_for("decisions", signal_count, timeout_s=600)
    deployment.wait_consumed("fills", timeout_s=300)
    # one probe per portfolio records the final state in its decision's trace
    portfolios = sorted({value["portfolio_id"] for role, value in inputs if role == "signals"})
    deployment.publish([("signals", {"signal_id": f"probe-{p}", "portfolio_id": p, "symbol": "SOL-USD",
                                     "side": "buy", "score": "0", "price": "150", "ts": 1_767_300_000_000})
                        for p in portfolios])
    decisions = deployment.wait_for("decisions", signal_count + len(portfolios), timeout_s=120)
    orders = deployment.read("orders")

    positions = Counter((r.json()["trace"]["input"]["partition"], r.json()["trace"]["input"]["offset"])
                        for r in decisions)
    assert len(positions) == signal_count + len(portfolios)
    assert max(positions.values()) == 1, "a signal was decided twice"
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

    # the offline replay of the recorded interleaving gives every decision, probes (final state) included
    code, report, _ = deployment.audit()
    assert (code, report["mismatches"], report["verified"]) == (0, [], signal_count + len(portfolios)), \
        {k: v for k, v in report.items() if k != "mismatches"} | {"mismatches": report["mismatches"][:5]}
    assert worker.alive()
