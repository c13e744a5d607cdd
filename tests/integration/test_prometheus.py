"""A real Prometheus server scrapes a running worker and evaluates the shipped rules."""

from __future__ import annotations

from tests.builders import T0
from tests.integration.harness import eventually
from tests.integration.prometheus import api, query

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def test_prometheus_scrapes_the_worker_and_fires_the_dead_letter_alert(deployment, workers, prometheus):
    worker = workers("--preset", "graduated")
    base = prometheus(worker.web_port)
    deployment.publish([("instruments", ETH)] + [
        ("signals", {"signal_id": f"s{i}", "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy",
                     "score": "0.9", "price": "2500", "ts": T0 + i}) for i in range(3)])
    deployment.wait_for("decisions", 3)

    eventually(lambda: query(base, 'up{job="sizer"}') and list(query(base, 'up{job="sizer"}').values()) == [1.0],
               what="prometheus scraping the worker")
    eventually(lambda: sum(query(base, 'sizer_decisions_total{outcome="accepted"}').values()) == 3,
               what="3 accepted decisions in prometheus")
    assert list(query(base, 'sizer_portfolio_exposure_usd{portfolio="p1"}').values()) == [300.0]
    assert not [a for a in api(base, "alerts")["alerts"] if a["labels"]["alertname"] == "SizerDeadLetters"]

    deployment.publish([("signals", b"not json at all")], keys={0: b"p1"})
    deployment.wait_for("dlq", 1)

    def dead_letter_alert_firing() -> bool:
        alerts = (api(base, "alerts") or {"alerts": []})["alerts"]
        return any(a["labels"]["alertname"] == "SizerDeadLetters" and a["state"] == "firing"
                   and a["labels"]["reason"] == "INVALID_JSON" for a in alerts)

    eventually(dead_letter_alert_firing, timeout_s=60, what="SizerDeadLetters firing")


def test_every_dashboard_panel_returns_data_after_a_demo_session(deployment, workers, prometheus):
    import json
    import time
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
                            / "sizer.json").read_text())
    worker = workers("--preset", "graduated", SIZER_LAG_INTERVAL_S="0.5")
    base = prometheus(worker.web_port)
    deployment.run_demo_session()
    deployment.publish([("signals", b"not json")], keys={0: b"alpha"})  # a dead letter too
    deployment.wait_for("dlq", 1)
    eventually(lambda: sum(query(base, "sum(sizer_decisions_total)").values()) > 0, what="decisions in prometheus")
    variables = {"$instance": ".*", "$portfolio": ".*", "$topn": "10"}
    panels = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    deadline = time.monotonic() + 60
    empty = panels
    while empty and time.monotonic() < deadline:  # rates need two scrapes in their window
        time.sleep(1)
        empty = []
        for title, expr in panels:
            for name, value in variables.items():
                expr = expr.replace(name, value)
            if not query(base, expr):
                empty.append((title, expr))
    assert not empty, f"panels whose query returns nothing: {empty}"
