"""Operator controls on the real broker (issue 15): `sizer control halt` while
signals stream under exactly-once, then a SIGKILL right after `resume`."""

from __future__ import annotations

import json
import subprocess
import time

from tests.builders import T0, instrument, leg
from tests.integration.harness import SIZER, Deployment

ENV = {"SIZING_PORTFOLIO_CAP": "1000000000", "SIZING_PAIR_CAP_USD": "1000000000"}
PORTFOLIOS = ("p1", "p2", "p3")


def stream(count: int) -> list[tuple[str, dict]]:
    """`count` signals per portfolio, interleaved, each sized small enough never to hit a cap."""
    x = instrument("X", leg("XUSDT", qty_step="0.01"))["value"]
    return [("instruments", x)] + [
        ("signals", {"signal_id": f"s{n}", "portfolio_id": p, "symbol": "X", "side": "buy", "score": "0.5",
                     "price": "10", "ts": T0 + n})
        for n in range(count) for p in PORTFOLIOS]


def control(deployment: Deployment, *args: str) -> dict:
    done = subprocess.run([SIZER, "control", *args, "--timeout", "90"], env=deployment.env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_halt_rejects_exactly_the_signals_after_it_and_a_resume_survives_a_kill(deployment, workers):
    inputs = stream(400)
    none = subprocess.run([SIZER, "control", "status"], env=deployment.env(), capture_output=True, text=True)
    assert none.returncode == 3 and "no worker of group" in none.stderr, none.stderr  # no state, no wait
    worker = workers("--preset", "conviction", **ENV)
    publisher = deployment.publish_over(inputs, seconds=16)
    time.sleep(3.0)
    halted = control(deployment, "halt", "--portfolio", "p1", "--reason", "venue outage", "--operator", "alice")
    assert halted["state"]["halted"] and halted["state"]["halt"]["operator"] == "alice"
    time.sleep(3.0)
    resumed = control(deployment, "resume", "--portfolio", "p1", "--reason", "venue back")
    worker.kill()  # right after the resume was applied and committed
    workers("--preset", "conviction", **ENV)
    publisher.join()

    signals = sum(1 for role, _ in inputs if role == "signals")
    decisions = [r.json() for r in deployment.wait_for("decisions", signals, timeout_s=120)]
    assert len(decisions) == signals  # one each: nothing decided twice across the kill
    halt_at, resume_at = halted["offset"], resumed["offset"]
    for decision in decisions:
        applied = decision["trace"]["input"]["last_control_offset"]
        should_halt = decision["portfolio_id"] == "p1" and applied is not None and halt_at <= applied < resume_at
        assert (decision["reason"] == "HALTED") == should_halt, decision
    halted_count = sum(1 for d in decisions if d["reason"] == "HALTED")
    assert 0 < halted_count < 400
    assert all(d["outcome"] == "accepted" for d in decisions if d["portfolio_id"] != "p1")
    detail = next(d for d in decisions if d["reason"] == "HALTED")["trace"]["detail"]
    assert detail == f"command_id={halted['command']['command_id']} operator=alice reason=venue outage"

    status = control(deployment, "status", "--portfolio", "p1")
    assert status[0]["halted"] is False and status[0]["last_control_offset"] == resume_at
    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, signals), report
