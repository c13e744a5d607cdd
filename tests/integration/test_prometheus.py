"""A real Prometheus server scrapes a running worker and evaluates the shipped rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.builders import T0
from tests.integration.harness import eventually, free_port
from tests.prometheus_tools import ensure_prometheus

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


@pytest.fixture
def prometheus(tmp_path):
    reason = ensure_prometheus()
    if reason:
        pytest.skip(reason)
    started = []

    def start(target_port: int) -> str:
        port = free_port()
        shutil.copy(RULES, tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            f"  - job_name: sizer\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        log = open(tmp_path / "prometheus.log", "wb")
        process = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def api(base: str, path: str, **params: str):
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]
    except OSError:
        return None


def query(base: str, expr: str) -> dict[str, float]:
    data = api(base, "query", query=expr) or {"result": []}
    return {json.dumps(item["metric"], sort_keys=True): float(item["value"][1]) for item in data["result"]}


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
