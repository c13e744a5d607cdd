"""`make demo`, the README's first command, end to end on the session's broker: the
worker it starts becomes ready, the scripted session is decided and summarised."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.harness import ROOT
from streams.ports import free_port


def test_the_live_demo_runs_its_session_and_exits_0(bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SIZER_WEB_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "streams.demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ready (log:" in done.stdout
    summary = done.stdout.split("== summary", 1)[1]
    assert "accepted" in summary and "accepted notional" in summary
