"""The shipped deployment: Prometheus config and alert rules (promtool), the Grafana
dashboard against the metrics the worker exports, the compose file and the image."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from streams.metrics import SizerMetrics, process_collectors
from tests.prometheus_tools import ensure_debian_package

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


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
        "SizerCapUtilisationHigh", "SizerDeadLetters", "SizerPortfolioInDrawdown", "SizerPortfolioHalted",
        "SizerLossGuardPaused",
        "SizerConsumerLagGrowing", "SizerWorkerDown", "SizerInputsRecoveredRepeatedly", "SizerPartitionReseeksRepeated",
        "SizerProducerErrors", "SizerWorkerRestarting", "SizerWrongPartition", "SizerMaxDrawdownLatched"}
    readme = (ROOT / "docs" / "pages" / "operating.md").read_text()
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/pages/operating.md#{rule['alert'].lower()}", rule["alert"]
        assert f'<a id="{rule["alert"].lower()}"></a>' in readme, f"no runbook anchor for {rule['alert']}"
    drawdown, = [rule for rule in rules if rule["alert"] == "SizerPortfolioInDrawdown"]
    assert drawdown["for"] == "5m"


def exported_series() -> set[str]:
    """Every series name the worker's /metrics can carry, with histogram and counter suffixes."""
    registry = CollectorRegistry()
    FaustMetrics.create(registry, "faust")
    process_collectors(registry)
    SizerMetrics(registry)
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "gauge": [""], "summary": ["", "_sum", "_count", "_created"], "info": ["_info"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_dashboard_references_only_metrics_the_worker_exports():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sizer.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    functions = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "without", "avg", "max", "min",
                 "topk", "topn", "and", "or", "on", "vector", "changes", "portfolio", "instance"}
    used = set()
    for expr in exprs:
        without_labels = re.sub(r"\{[^}]*\}", "", expr)
        without_labels = re.sub(r"\[[^\]]*\]", "", without_labels)
        without_labels = re.sub(r"(by|on) \([^)]*\)", "", without_labels)
        used.update(token for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels)
                    if token not in functions)
    unknown = used - exported_series() - {"up"}
    assert not unknown, f"dashboard uses metrics the worker does not export: {sorted(unknown)}"
    # and it shows what operators need
    for needed in ("sizer_decisions_total", "sizer_portfolio_exposure_usd", "sizer_portfolio_cap_usd",
                   "sizer_portfolio_consecutive_losses", "sizer_portfolio_phase", "sizer_consumer_lag_messages",
                   "sizer_decision_latency_seconds_bucket", "sizer_dead_letters_total", "sizer_build_info",
                   "sizer_inputs_recovered_total", "sizer_partition_reseeks_total", "sizer_dead_letter_failures_total",
                   "faust_consumer_commit_latency_bucket", "faust_rebalance_done_latency_count",
                   "process_resident_memory_bytes"):
        assert needed in used, needed
    assert "faust_total_rebalances" not in used  # a gauge of rebalances in progress, not a count
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"instance", "portfolio", "topn"}
    for expr in exprs:
        assert 'instance=~"$instance"' in expr, expr
        if "sizer_portfolio_" in expr and "sizer_portfolio_series" not in expr:
            # never every portfolio's line: the top N by utilisation, or a sum
            assert 'portfolio=~"$portfolio"' in expr and ("topk($topn" in expr or expr.startswith("sum(")), expr
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    assert panels["Workers up"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert panels["Consumer lag per input partition"]["fieldConfig"]["defaults"]["thresholds"]["steps"]


def test_alert_rules_reference_only_exported_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        names = set(re.findall(r"\b(sizer_[a-z_]+|process_[a-z_]+|up)\b", rule["expr"]))
        assert names and names <= exported_series() | {"up"}, rule["alert"]


COMPOSE_ENV = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "a-test-password"}


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
    # Kafka keeps its data, workers are health-checked on /health/ready, Grafana has no default
    # admin login, alerts go to an Alertmanager
    assert "kafka-data:/var/lib/kafka/data" in services["kafka"]["volumes"]
    for name in workers:
        assert "/health/ready" in " ".join(services[name]["healthcheck"]["test"])
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    alerting = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["alerting"]
    assert alerting["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "alertmanager" in services


def test_the_image_is_pinned_locked_health_checked_and_its_context_small():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", base), base
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n.*/health/ready", dockerfile, re.M)
    assert re.search(r"^USER 10001", dockerfile, re.M)
    # the build context: an allowlist, so .venv, .kafka and .git never reach the daemon
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*" and set(ignore) >= {"!streams/", "!topics/", "!deploy/requirements.lock"}
    assert not any(entry.startswith("!") and (".venv" in entry or ".kafka" in entry) for entry in ignore)


def test_the_lock_pins_every_runtime_dependency_with_a_hash_within_pyproject():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$",
                         (DEPLOY / "requirements.lock").read_text(), re.M)
    pinned = {canonicalize_name(name): version for name, version, _ in entries}
    lines = [line for line in (DEPLOY / "requirements.lock").read_text().splitlines() if "==" in line]
    assert len(entries) == len(lines), "every pin carries its sha256"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in deploy/requirements.lock (run deploy/lock.py)"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} outside {requirement}"
        for extra in requirement.extras:  # faust-streaming[rocksdict]
            assert canonicalize_name(extra) in pinned
    for unpinned_before in ("mode-streaming", "rocksdict"):
        assert unpinned_before in pinned


def test_docker_compose_config_accepts_the_compose_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin (no Docker engine on this machine)")
    done = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, env=COMPOSE_ENV)
    assert done.returncode == 0, done.stderr


def test_compose_v1_config_accepts_the_compose_file():
    """Debian's docker-compose (v1) validates the file without an engine; the file keeps
    to what both v1 and the v2 plugin accept."""
    reason = ensure_debian_package("docker-compose", "docker-compose")
    if reason:
        pytest.skip(reason)
    legacy = shutil.which("docker-compose")
    done = subprocess.run([legacy, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT, env=COMPOSE_ENV)
    assert done.returncode == 0, done.stderr


def test_the_secured_compose_variant_runs_the_secured_broker_and_each_client_as_its_principal():
    import tomllib

    secured = yaml.safe_load((ROOT / "docker-compose.secured.yml").read_text())["services"]
    kafka = secured["kafka"]
    assert kafka["entrypoint"] == ["bash", "/broker/broker.sh", "run"]
    assert kafka["environment"]["KAFKA_SECURITY"] == "sasl_ssl"
    users = {name: service["environment"]["SIZER_SASL_USERNAME"] for name, service in secured.items()
             if "SIZER_SASL_USERNAME" in service.get("environment", {})}
    assert users == {"acls": "admin", "topics": "operator", "sizer-worker-1": "sizer-worker",
                     "sizer-worker-2": "sizer-worker"}
    # each client container mounts its own principal's secret volume and nothing of the broker's
    for name, user in users.items():
        volumes = {mount.split(":")[0] for mount in secured[name]["volumes"]}
        assert "kafka-secured" not in volumes, name
        assert {v for v in volumes if v.startswith("secret-")} == {f"secret-{user}"}, name
    exported = {mount.split(":")[0]: mount.split(":")[1] for mount in kafka["volumes"]}
    assert {volume: exported[volume] for volume in exported if volume.startswith("secret-")} == {
        f"secret-{user}": f"/export/{user}" for user in set(users.values())}
    assert kafka["environment"]["KAFKA_SECRETS_EXPORT"] == "/export"
    assert secured["acls"]["command"] == ["acls", "apply"]
    assert secured["topics"]["depends_on"]["acls"]["condition"] == "service_completed_successfully"
    # every principal of the ACL file is a SCRAM user the broker creates at format time
    script = (DEPLOY / "broker" / "broker.sh").read_text()
    created = set(re.search(r'scram_users="\$\{KAFKA_SCRAM_USERS:-([^}]*)\}"', script).group(1).split())
    with (ROOT / "topics" / "acls.toml").open("rb") as handle:
        principals = {entry["user"] for entry in tomllib.load(handle)["principals"].values()}
    assert principals | {"admin"} == created
    reason = ensure_debian_package("docker-compose", "docker-compose")
    if reason:
        pytest.skip(reason)
    done = subprocess.run([shutil.which("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "-f",
                           str(ROOT / "docker-compose.secured.yml"), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT, env=COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
