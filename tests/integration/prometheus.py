"""A real Prometheus server (Debian's package) scraping real workers, with the shipped rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import free_port
from tests.prometheus_tools import ensure_prometheus

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture
def prometheus(tmp_path):
    reason = ensure_prometheus()
    if reason:
        pytest.skip(reason)
    started = []

    def start(*target_ports: int) -> str:
        port = free_port()
        shutil.copy(RULES, tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            f"  - job_name: sizer\n    static_configs: [{{targets: {[f'127.0.0.1:{port}' for port in target_ports]}}}]\n")
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


