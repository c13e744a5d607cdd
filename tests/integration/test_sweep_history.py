"""`sizer sweep --from-kafka` on the real broker: for the recorded configuration,
a sweep of one is the audit's re-derivation."""

from __future__ import annotations

import json
import subprocess

from streams.config import load_config
from tests.integration.harness import SIZER


def test_a_sweep_over_kafka_history_reproduces_the_recorded_decisions_for_the_recorded_config(deployment, workers):
    workers("--preset", "graduated")
    decisions = [r.json() for r in deployment.run_demo_session()]
    recorded_hash = load_config("graduated").config_hash
    assert {d["config_hash"] for d in decisions} == {recorded_hash}

    done = subprocess.run([SIZER, "sweep", "--from-kafka", "--policy", "graduated", "--policy", "static", "--json",
                           "--workers", "2"], env=deployment.env(), capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "kafka"
    assert report["history"]["signals"] == len(decisions) == 24
    assert report["history"]["recorded_config_hashes"] == [recorded_hash]
    rows = {row["label"]: row for row in report["configurations"]}
    graduated, static = rows["graduated"], rows["static"]
    # every recorded decision, byte for byte, under the recorded configuration
    assert graduated["config_hash"] == recorded_hash
    assert graduated["recorded_decisions"] == {"compared": 24, "identical": 24}
    assert graduated["decisions_changed"] == 0
    accepted = [d for d in decisions if d["outcome"] == "accepted"]
    assert graduated["accepted"] == len(accepted)
    assert graduated["rejected"] == dict(sorted(
        {reason: sum(1 for d in decisions if d["reason"] == reason)
         for reason in {d["reason"] for d in decisions if d["reason"]}}.items()))
    # charlie's closes name no recorded position: applied as recorded, -40 -25 +30 +45;
    # alpha's fill is a recorded order's, closed by nothing: no PnL from it
    assert graduated["pnl"] == "10" and graduated["closes"] == 4
    # another configuration is compared by outcome only, and differs
    assert static["recorded_decisions"] == {"compared": 0, "identical": 0}
    assert static["decisions_changed"] > 0
