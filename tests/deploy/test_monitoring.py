"""Alerts and dashboard under plain Prometheus and under the Prometheus Operator: the
chart's PrometheusRule and dashboard ConfigMap are deploy/prometheus/alerts.yml and
deploy/grafana/dashboards/sizer.json (one file each, linked from the chart's files/), and
the rules' unit tests pass on the series as each setup labels them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import CHART, ROOT, by_kind, render

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sizer.json"
OPERATOR = ["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
            "--set", "grafanaDashboard.enabled=true"]


def operator_job(kinds: dict[str, list[dict]]) -> str:
    """The job label the Operator gives the scraped series: the Service's label named by the
    ServiceMonitor's jobLabel, or else the Service's name (the Operator's documented rule)."""
    monitor, = kinds["ServiceMonitor"]
    service, = kinds["Service"]
    job_label = monitor["spec"].get("jobLabel")
    return service["metadata"]["labels"][job_label] if job_label else service["metadata"]["name"]


def operator_rule_tests(tmp: Path, rules: dict, job: str) -> Path:
    """deploy/prometheus/alerts_test.yml with every series labelled as a ServiceMonitor's
    scrape labels it (job, namespace, service, pod, container, endpoint), run on `rules`."""
    extra = {"namespace": "trading", "service": "sizer-sizer", "pod": "sizer-sizer-0", "container": "worker",
             "endpoint": "http"}
    added = ", ".join(f'{name}="{value}"' for name, value in extra.items())
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    for test in tests["tests"]:
        for series in test["input_series"]:
            assert 'job="sizer"' in series["series"], series
            series["series"] = series["series"].replace('job="sizer"', f'job="{job}", {added}')
        for case in test["alert_rule_test"]:
            for alert in case["exp_alerts"]:
                if "job" in alert["exp_labels"]:  # the rule keeps the series' labels
                    alert["exp_labels"].update(job=job, **extra)
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    tests["rule_files"] = ["rules.yml"]
    (tmp / "rules_test.yml").write_text(yaml.safe_dump(tests))
    return tmp / "rules_test.yml"


def test_the_chart_ships_the_alert_rules_and_dashboard_of_deploy_as_they_are():
    assert (CHART / "files" / "alerts.yml").resolve() == (PROMETHEUS / "alerts.yml").resolve()
    assert (CHART / "files" / "dashboard.json").resolve() == DASHBOARD.resolve()


def test_alerts_fire_on_the_series_the_operator_scrapes_through_the_chart(helm, promtool, tmp_path):
    kinds = by_kind(render(helm, *OPERATOR))
    rule, = kinds["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    job = operator_job(kinds)
    assert job == "sizer"
    done = subprocess.run([promtool, "test", "rules", str(operator_rule_tests(tmp_path, rule["spec"], job))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_without_the_chart_job_label_the_operator_series_would_fire_nothing(helm, promtool, tmp_path):
    """The finding this chart fixes: the Operator's default job (the Service's name) matches
    no rule filtering on job, and promtool says so."""
    kinds = by_kind(render(helm, *OPERATOR))
    del kinds["ServiceMonitor"][0]["spec"]["jobLabel"]
    job = operator_job(kinds)
    assert job == "sizer-sizer"
    rule, = kinds["PrometheusRule"]
    done = subprocess.run([promtool, "test", "rules", str(operator_rule_tests(tmp_path, rule["spec"], job))],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "SizerWorkerDown" in done.stdout + done.stderr and "SizerWorkerRestarting" in done.stdout + done.stderr


def test_plain_prometheus_scrapes_under_the_job_the_chart_selects_by(helm):
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job, = [scrape["job_name"] for scrape in config["scrape_configs"]]
    assert job == yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["job"]
    assert 'job="sizer"' in (PROMETHEUS / "alerts.yml").read_text()


def test_another_job_name_reaches_the_monitor_the_rules_and_the_dashboard(helm):
    kinds = by_kind(render(helm, *OPERATOR, "--set", "monitoring.job=trading-sizer"))
    assert operator_job(kinds) == "trading-sizer"
    rules = yaml.safe_dump(kinds["PrometheusRule"][0]["spec"])
    dashboard = kinds["ConfigMap"][[c["metadata"]["name"] for c in kinds["ConfigMap"]].index("sizer-sizer-dashboard")]
    text = dashboard["data"]["sizer.json"]
    for selectors in (re.findall(r'job="([^"]*)"', rules), re.findall(r'job=\\"([^"\\]*)\\"', text)):
        assert selectors and set(selectors) == {"trading-sizer"}


def test_the_dashboard_configmap_is_the_dashboard_with_the_sidecar_label(helm):
    kinds = by_kind(render(helm, *OPERATOR, "--set", "grafanaDashboard.annotations.grafana_folder=Trading"))
    dashboard, = [c for c in kinds["ConfigMap"] if c["metadata"]["name"] == "sizer-sizer-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Trading"}
    assert json.loads(dashboard["data"]["sizer.json"]) == json.loads(DASHBOARD.read_text())
    kinds = by_kind(render(helm))
    assert "PrometheusRule" not in kinds
    assert "sizer-sizer-dashboard" not in [c["metadata"]["name"] for c in kinds["ConfigMap"]]
