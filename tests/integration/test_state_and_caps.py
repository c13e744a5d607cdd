"""Fills, cancels and closes move state; bursts never pass the cap; a restarted
worker resumes from its changelog. All against a real worker on the real broker."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest

from tests.builders import T0
from tests.integration.harness import decisions_by_signal

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def sig(sid, portfolio, score, price="2500", ts=T0, symbol="ETH-USD"):
    return ("signals", {"signal_id": sid, "portfolio_id": portfolio, "symbol": symbol, "side": "buy",
                        "score": score, "price": price, "ts": ts})


def fill(eid, portfolio, kind, ts=T0, **fields):
    return ("fills", {"event_id": eid, "portfolio_id": portfolio, "ts": ts, "type": kind, **fields})


def test_fills_and_cancels_free_exposure_and_closes_move_streaks(deployment, workers):
    workers("--preset", "graduated")
    deployment.publish([("instruments", ETH)] + [sig(f"s{i}", "p1", "0.9", ts=T0 + i) for i in range(11)])
    first = decisions_by_signal(deployment.wait_for("decisions", 11))
    assert [first[f"s{i}"][0]["notional"] for i in range(10)] == ["100"] * 10
    assert first["s10"][0]["reason"] == "EXPOSURE_CAP_REACHED"

    # A cancel releases one reservation; a final fill turns another into a position.
    deployment.publish([
        fill("f1", "p1", "order_canceled", T0 + 20, order_id=first["s0"][0]["order_id"]),
        fill("f2", "p1", "order_filled", T0 + 21, order_id=first["s1"][0]["order_id"], symbol="ETH-USD",
             qty="0.04", price="2400", final=True),
    ])
    deployment.wait_consumed("fills")
    deployment.publish([sig("s11", "p1", "0.9", ts=T0 + 30)])
    after_fills = decisions_by_signal(deployment.wait_for("decisions", 12))["s11"][0]
    assert after_fills["outcome"] == "accepted"
    assert after_fills["trace"]["state"]["reserved"] == "800"
    assert after_fills["trace"]["state"]["positions"] == "96"  # 0.04 x 2400
    assert after_fills["trace"]["caps"]["remaining"] == "104"

    # Two losing closes: drawdown halves the size and equity takes the losses.
    deployment.publish([
        fill("c1", "p1", "position_closed", T0 + 40, symbol="ETH-USD", qty="0.02", price="2300", realized_pnl="-2"),
        fill("c2", "p1", "position_closed", T0 + 41, symbol="ETH-USD", qty="0.02", price="2300", realized_pnl="-2"),
    ])
    deployment.wait_consumed("fills")
    deployment.publish([sig("s12", "p1", "0.9", ts=T0 + 50)])
    halved = decisions_by_signal(deployment.wait_for("decisions", 13))["s12"][0]
    state = halved["trace"]["state"]
    assert (state["consecutive_losses"], state["drawdown"], state["equity"], state["positions"]) == (2, True, "99996", "0")
    assert halved["trace"]["drawdown_multiplier"] == "0.5"

    # Two wins restore full size.
    deployment.publish([
        fill("c3", "p1", "position_closed", T0 + 60, symbol="ETH-USD", qty="0.01", price="2600", realized_pnl="3"),
        fill("c4", "p1", "position_closed", T0 + 61, symbol="ETH-USD", qty="0.01", price="2600", realized_pnl="5"),
    ])
    deployment.wait_consumed("fills")
    deployment.publish([sig("s13", "p1", "0.7", ts=T0 + 70, price="10")])
    restored = decisions_by_signal(deployment.wait_for("decisions", 14))["s13"][0]
    state = restored["trace"]["state"]
    assert (state["consecutive_wins"], state["drawdown"], state["equity"], state["closed_trades"]) == (2, False, "100004", 4)
    assert restored["trace"]["budget"] == "75.003"  # 100004 x 0.1% x 0.75


def test_a_burst_of_1000_signals_never_takes_accepted_notional_over_the_cap(deployment, workers):
    workers("--preset", "conviction")
    rng = random.Random(11)
    markets = [{"symbol": f"M{i}", "legs": [{"venue_symbol": f"M{i}USDT", "side": "buy", "qty_step": "0.01",
                                             "min_qty": "0.01", "max_qty": None, "min_notional": "1"}]}
               for i in range(12)]
    burst = [sig(f"b{i}", "whale", f"{rng.random():.2f}", price=f"{rng.uniform(5, 500):.2f}", ts=T0,
                 symbol=f"M{rng.randrange(12)}") for i in range(1000)]
    deployment.publish([("instruments", m) for m in markets])
    deployment.publish(burst)

    decisions = deployment.wait_for("decisions", 1000, timeout_s=120)
    orders = deployment.read("orders")

    assert len(decisions) == 1000
    assert len({r.json()["signal_id"] for r in decisions}) == 1000
    total = sum(D(o.json()["notional"]) for o in orders)
    assert 0 < total <= D(5000)
    per_symbol: dict[str, D] = {}
    for order in orders:
        per_symbol[order.json()["symbol"]] = per_symbol.get(order.json()["symbol"], D(0)) + D(order.json()["notional"])
    assert max(per_symbol.values()) <= D(1000)
    # The cap binds: the burst fills it to within exchange rounding, and every
    # decision's own view (exposure before + its notional) stays under it.
    assert total > D(4900)
    for record in decisions:
        decision = record.json()
        if decision["outcome"] == "accepted":
            assert D(decision["trace"]["state"]["exposure"]) + D(decision["notional"]) <= D(5000)
    rejected = [r.json() for r in decisions if r.json()["outcome"] == "rejected"]
    assert len(rejected) > 900


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_restarted_worker_resumes_from_its_changelog(deployment, workers, guarantee):
    first = workers("--preset", "graduated", "--processing-guarantee", guarantee)
    closes = [fill(f"c{i}", "p1", "position_closed", T0 + i, symbol="ETH-USD", qty="0.01", price="2500",
                   realized_pnl="10" if i % 3 else "-4") for i in range(21)]  # 14 wins, 7 losses
    deployment.publish([("instruments", ETH)] + closes)
    deployment.wait_consumed("fills")
    deployment.publish([sig("s1", "p1", "0.9", ts=T0 + 100), sig("s2", "p1", "0.7", ts=T0 + 101),
                        sig("q1", "p2", "0.9", ts=T0 + 100)])
    before = decisions_by_signal(deployment.wait_for("decisions", 3))
    deployment.publish([fill("f1", "p1", "order_filled", T0 + 102, order_id=before["s1"][0]["order_id"],
                             symbol="ETH-USD", qty="0.05", price="2500", final=False)])
    deployment.wait_consumed("fills")
    assert first.stop() == 0

    workers("--preset", "graduated", "--processing-guarantee", guarantee)
    deployment.publish([sig("s3", "p1", "0.9", ts=T0 + 200), sig("q2", "p2", "0.9", ts=T0 + 200)])
    decisions = deployment.wait_for("decisions", 5)
    after = decisions_by_signal(decisions)

    state = after["s3"][0]["trace"]["state"]
    # 21 closes: 14 wins of 10, 7 losses of 4 -> equity 100112, phase 2 (win rate 66.7%, PF 5)
    assert (state["closed_trades"], state["phase"], state["equity"]) == (21, 2, "100112")
    assert (state["consecutive_wins"], state["consecutive_losses"], state["drawdown"]) == (2, 0, False)
    s1, s2 = before["s1"][0], before["s2"][0]
    # s1's reservation was partly filled (0.05 of its qty), s2's is untouched
    s1_left = (D(s1["qty"]) - D("0.05")) * D(2500)
    assert D(state["reserved"]) == s1_left + D(s2["notional"])
    assert state["positions"] == "125"
    assert after["q2"][0]["trace"]["state"]["reserved"] == before["q1"][0]["notional"]
    assert after["s3"][0]["trace"]["input"]["last_fill_offset"] is not None

    # And the whole history re-derives bit for bit across the restart.
    code, report, _ = deployment.audit()
    assert (code, report["verified"], report["mismatches"]) == (0, 5, [])


def test_a_restarted_worker_still_knows_every_id_of_its_dedupe_windows(deployment, workers):
    """The windows' older chunks live in the `windows` table, each written once: after
    a restart a resent signal or fill of an old chunk is still a duplicate."""
    first = workers("--preset", "graduated")
    closes = [fill(f"c{i}", "p1", "position_closed", T0 + i, symbol="ETH-USD", qty="0.01", price="2500",
                   realized_pnl="1") for i in range(70)]  # a chunk of 64 fill ids closed, 6 open
    deployment.publish([("instruments", ETH)] + closes)
    deployment.wait_consumed("fills")
    deployment.publish([sig(f"s{i}", "p1", "0.9", ts=T0 + 100 + i) for i in range(150)])  # chunks 0, 1 closed
    deployment.wait_for("decisions", 150)
    assert first.stop() == 0

    workers("--preset", "graduated")
    deployment.publish([closes[3]])  # in the fills' closed chunk
    deployment.wait_consumed("fills")
    deployment.publish([sig("s5", "p1", "0.9", ts=T0 + 300), sig("s149", "p1", "0.9", ts=T0 + 301),
                        sig("new", "p1", "0.9", ts=T0 + 302)])
    decisions = decisions_by_signal(deployment.wait_for("decisions", 153))
    assert decisions["s5"][-1]["reason"] == "DUPLICATE_SIGNAL"  # chunk 0
    assert decisions["s149"][-1]["reason"] == "DUPLICATE_SIGNAL"  # the open chunk
    state = decisions["new"][0]["trace"]["state"]
    assert state["closed_trades"] == 70  # the resent close changed nothing
    assert decisions["new"][0]["reason"] != "DUPLICATE_SIGNAL"


def test_the_worker_creates_its_changelogs_before_its_consumer_subscribes(deployment, workers):
    """A changelog faust creates as it starts may be missing from its consumer's first
    metadata: the group then rebalances five minutes later (a stall in recovery)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    worker = workers("--preset", "conviction")
    names = [f"{deployment.app_id}-{table}-changelog"
             for table in ("exposure", "streak", "controls", "windows", "input-positions")]

    async def described() -> tuple[dict[str, int], dict[str, str]]:
        admin = AIOKafkaAdminClient(**deployment.client.options())
        await admin.start()
        try:
            partitions = {entry["topic"]: len(entry["partitions"]) for entry in await admin.describe_topics(names)}
            policies = {}
            for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
                for resource in response.resources:
                    policies[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
            return partitions, policies
        finally:
            await admin.close()

    partitions, policies = asyncio.run(described())
    width = deployment.topics["signals"].partitions
    assert partitions == {name: width for name in names}
    assert policies == {name: "compact" for name in names}
    assert "not found in cluster metadata" not in worker.log()
