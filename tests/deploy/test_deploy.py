"""The shipped deployment: Prometheus config and alert rules (promtool), the Grafana
dashboard against the metrics the worker exports, the compose file and the image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from streams.metrics import SizerMetrics
from tests.prometheus_tools import ensure_debian_package, ensure_prometheus

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def promtool() -> str:
    reason = ensure_prometheus()
    if reason:
        pytest.skip(reason)
    return shutil.which("promtool")


def test_promtool_accepts_the_shipped_prometheus_config(promtool):
    done = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_every_alert_rule_has_unit_tests_that_fire_and_that_do_not(promtool):
    done = subprocess.run([promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    for rule in rules:
        cases = [case for test in tests for case in test["alert_rule_test"] if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in cases), f"{rule['alert']}: no case where it fires"
        assert any(not case["exp_alerts"] for case in cases), f"{rule['alert']}: no case where it stays quiet"
    assert {rule["alert"] for rule in rules} == {
        "SizerCapUtilisationHigh", "SizerDeadLetters", "SizerPortfolioInDrawdown", "SizerConsumerLagGrowing",
        "SizerWorkerDown"}


def exported_series() -> set[str]:
    """Every series name the worker's /metrics can carry, with histogram and counter suffixes."""
    registry = CollectorRegistry()
    FaustMetrics.create(registry, "faust")
    SizerMetrics(registry)
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "gauge": [""], "summary": ["", "_sum", "_count", "_created"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_dashboard_references_only_metrics_the_worker_exports():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sizer.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    functions = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "without", "avg", "max", "min"}
    used = set()
    for expr in exprs:
        without_labels = re.sub(r"\{[^}]*\}", "", expr)
        without_labels = re.sub(r"\[[^\]]*\]", "", without_labels)
        without_labels = re.sub(r"by \([^)]*\)", "", without_labels)
        used.update(token for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels)
                    if token not in functions)
    unknown = used - exported_series() - {"up"}
    assert not unknown, f"dashboard uses metrics the worker does not export: {sorted(unknown)}"
    # and it shows what operators need
    for needed in ("sizer_decisions_total", "sizer_portfolio_exposure_usd", "sizer_portfolio_cap_usd",
                   "sizer_portfolio_consecutive_losses", "sizer_portfolio_phase", "sizer_consumer_lag_messages",
                   "sizer_decision_latency_seconds_bucket", "sizer_dead_letters_total"):
        assert needed in used, needed


def test_alert_rules_reference_only_exported_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        names = set(re.findall(r"\b(sizer_[a-z_]+|up)\b", rule["expr"]))
        assert names and names <= exported_series() | {"up"}, rule["alert"]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_kafka_topics_workers_prometheus_and_grafana():
    services = compose()["services"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", services["kafka"]["image"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["topics"]["command"] == ["topics", "apply"]
    workers = [name for name, service in services.items() if service.get("command") == ["worker"]]
    assert len(workers) >= 1
    for name in workers:
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    targets = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0][
        "static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{name}:6066" for name in workers)
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]
    dockerfile = (ROOT / compose()["x-sizer"]["build"]["dockerfile"]).read_text()
    assert "COPY topics ./topics" in dockerfile and "SIZER_TOPICS_FILE=/app/topics/topics.toml" in dockerfile


def test_docker_compose_config_accepts_the_compose_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin (no Docker engine on this machine)")
    done = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_compose_v1_config_accepts_the_compose_file():
    """Debian's docker-compose (v1) validates the file without an engine; the file keeps
    to what both v1 and the v2 plugin accept."""
    reason = ensure_debian_package("docker-compose", "docker-compose")
    if reason:
        pytest.skip(reason)
    legacy = shutil.which("docker-compose")
    done = subprocess.run([legacy, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
