"""The benchmarks that talk to a broker report one that cannot be reached, and bad
settings, as one line and the CLI's exit codes, never a traceback. No broker: the
bootstrap address is a port nothing listens on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    return free_port()  # closed again on return: nothing listens there


def bench(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("SIZER_", "KAFKA_"))}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**environment, **env})


@pytest.mark.parametrize("module, args", [
    ("streams.bench.stream", ["--only", "(0)", "--runs", "latency"]),
    ("streams.bench.audit", ["--signals", "10"]),
    ("streams.bench.soak", ["--minutes", "1"]),
], ids=["bench", "bench-audit", "soak"])
def test_a_broker_that_cannot_be_reached_is_one_line_and_exit_4(module, args):
    port = closed_port()
    done = bench(module, *args, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("bench: ")]
    assert lines == [f"bench: cannot reach the Kafka broker at 127.0.0.1:{port}: "
                     f"[Errno 111] Connect call failed ('127.0.0.1', {port})"], done.stderr


@pytest.mark.parametrize("variable, value, named", [
    ("SIZER_COMMIT_INTERVAL_S", "0", "commit_interval_s: Input should be greater than 0"),
    ("SIZING_PORTFOLIO_CAPP", "5000", "SIZING_PORTFOLIO_CAPP: not a known setting; did you mean SIZING_PORTFOLIO_CAP?"),
    ("SIZING_PORTFOLIO_CAP", "-1", "portfolio_cap"),
], ids=["kafka setting", "unknown sizing setting", "bad sizing value"])
def test_bad_settings_name_the_field_and_exit_2_before_any_contender_starts(variable, value, named):
    # a closed port: were the settings taken, the bench would fail to reach a broker, not run
    done = bench("streams.bench.stream", "--only", "(0)", "--runs", "latency",
                 KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}", **{variable: value})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert named in done.stderr
