"""The worker's /metrics after a known sequence: exact counts, exposure, streaks, phase."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.builders import T0
from tests.integration.harness import decisions_by_signal, eventually

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def sig(sid, score, ts, portfolio="p1"):
    return ("signals", {"signal_id": sid, "portfolio_id": portfolio, "symbol": "ETH-USD", "side": "buy",
                        "score": score, "price": "2500", "ts": ts})


def close(eid, pnl, ts):
    return ("fills", {"event_id": eid, "portfolio_id": "p1", "ts": ts, "type": "position_closed",
                      "symbol": "ETH-USD", "qty": "0.01", "price": "2500", "realized_pnl": pnl})


def test_metrics_report_exact_counts_exposure_streaks_and_phase(deployment, workers):
    worker = workers("--preset", "graduated", SIZER_LAG_INTERVAL_S="0.5")
    deployment.publish([("instruments", ETH)] + [sig(f"s{i}", "0.9", T0 + i) for i in range(11)]
                       + [sig("weak", "0.5", T0 + 20), sig("q1", "0.7", T0 + 21, portfolio="p2")])
    deployment.publish([("signals", b"{not json")], keys={0: b"p1"})
    decisions = decisions_by_signal(deployment.wait_for("decisions", 13))
    deployment.publish([
        ("fills", {"event_id": "x1", "portfolio_id": "p1", "ts": T0 + 30, "type": "order_canceled",
                   "order_id": decisions["s0"][0]["order_id"]}),
        close("c1", "-5", T0 + 31), close("c2", "-5", T0 + 32), close("c2", "-5", T0 + 32),  # a duplicate
    ])
    deployment.wait_consumed("fills")
    deployment.wait_consumed("signals")

    def settled() -> bool:
        samples = scrape(worker.web_port)
        return samples.get(("sizer_fill_events_total", (("outcome", "duplicate"), ("type", "position_closed")))) == 1.0

    eventually(settled, what="fill metrics")
    samples = scrape(worker.web_port)

    assert value(samples, "sizer_decisions_total", outcome="accepted", reason="") == 11  # 10 for p1, 1 for p2
    assert value(samples, "sizer_decisions_total", outcome="rejected", reason="EXPOSURE_CAP_REACHED") == 1
    assert value(samples, "sizer_decisions_total", outcome="rejected", reason="LOW_CONFIDENCE") == 1
    assert value(samples, "sizer_dead_letters_total", topic="signals", reason="INVALID_JSON") == 1
    assert value(samples, "sizer_accepted_notional_usd_count") == 11
    assert value(samples, "sizer_accepted_notional_usd_sum") == 1075  # 10 x 100 + 75
    assert value(samples, "sizer_decision_latency_seconds_count") == 11
    assert value(samples, "sizer_fill_events_total", type="order_canceled", outcome="applied") == 1
    assert value(samples, "sizer_fill_events_total", type="position_closed", outcome="applied") == 2
    assert value(samples, "sizer_fill_events_total", type="position_closed", outcome="duplicate") == 1

    # p1: one reservation canceled (900 left), two losses: drawdown, equity 99990, cap 1% of it
    assert value(samples, "sizer_portfolio_reserved_usd", portfolio="p1") == 900
    assert value(samples, "sizer_portfolio_exposure_usd", portfolio="p1") == 900
    assert value(samples, "sizer_portfolio_equity_usd", portfolio="p1") == 99990
    assert value(samples, "sizer_portfolio_cap_usd", portfolio="p1") == 999.9
    assert abs(value(samples, "sizer_portfolio_cap_utilisation_ratio", portfolio="p1") - 900 / 999.9) < 1e-9
    assert value(samples, "sizer_portfolio_consecutive_losses", portfolio="p1") == 2
    assert value(samples, "sizer_portfolio_consecutive_wins", portfolio="p1") == 0
    assert value(samples, "sizer_portfolio_drawdown_mode", portfolio="p1") == 1
    assert value(samples, "sizer_portfolio_phase", portfolio="p1") == 1
    assert value(samples, "sizer_portfolio_exposure_usd", portfolio="p2") == 75
    assert value(samples, "sizer_portfolio_series") == 2

    # consumer lag per input partition, caught up; faust's own sensors beside ours
    def lag_at_zero() -> bool:
        # every input partition's series published (the first reading comes one lag
        # interval after start) and at zero; an empty set must not pass
        readings = [v for (name, _), v in scrape(worker.web_port).items() if name == "sizer_consumer_lag_messages"]
        return len(readings) == 3 * deployment.topics["signals"].partitions and all(v == 0 for v in readings)

    eventually(lag_at_zero, what="lag at zero on every input partition")
    lag = [labels for (name, labels) in scrape(worker.web_port) if name == "sizer_consumer_lag_messages"]
    assert {dict(labels)["topic"] for labels in lag} == {"signals", "fills", "controls"}
    assert len(lag) == 3 * deployment.topics["signals"].partitions
    assert any(name.startswith("faust_") for name, _ in samples)
    # every batch handled is timed, and (exactly-once) the commits that made its orders readable
    samples = scrape(worker.web_port)
    assert value(samples, "sizer_batch_seconds_count") == value(samples, "sizer_batch_inputs_count") > 0
    assert value(samples, "sizer_commit_seconds_count") > 0


def test_portfolio_series_are_bounded(deployment, workers):
    worker = workers("--preset", "graduated", SIZER_METRICS_PORTFOLIO_LIMIT="3")
    deployment.publish([("instruments", ETH)] + [sig(f"s{i}", "0.9", T0 + i, portfolio=f"p{i}") for i in range(8)])
    deployment.wait_for("decisions", 8)
    eventually(lambda: scrape(worker.web_port).get(("sizer_portfolio_series_dropped_total", ())) == 5.0,
               what="5 portfolios dropped")
    samples = scrape(worker.web_port)
    assert value(samples, "sizer_portfolio_series") == 3
    assert len([1 for (name, _) in samples if name == "sizer_portfolio_exposure_usd"]) == 3
