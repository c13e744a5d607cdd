"""Static group membership (SIZER_GROUP_INSTANCE_ID) misconfigured by hand: two
workers of one application given the same instance id. The broker lets the newer
one take the older one's place and answers the older one FENCED_INSTANCE_ID: that
one stops at once, in one line naming the setting (exit 2, a configuration
fault), and the other decides every signal exactly once."""

from __future__ import annotations

import time

import pytest

from streams.bench.generate import session
from tests.integration.harness import Worker
from tests.integration.invariants import assert_exactly_once

FENCED_WITHIN_S = 60.0


def exited(worker: Worker) -> bool:
    return worker.process is not None and worker.process.poll() is not None


# The first worker learns it was fenced at its next heartbeat or, when the newcomer's
# producers fence its transactions first (a heartbeat every 50 s: always), by asking.
@pytest.mark.parametrize("heartbeat", [{}, {"SIZER_SESSION_TIMEOUT_S": "60", "SIZER_HEARTBEAT_INTERVAL_S": "50"}],
                         ids=["heartbeat", "transaction"])
def test_a_worker_fenced_by_another_with_its_group_instance_id_stops_in_one_line(deployment, workers, heartbeat):
    inputs = list(session(900, portfolios=20, seed=26))
    before, during, after = inputs[:300], inputs[300:600], inputs[600:]
    first = workers("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-0",
                    SIZER_DATA_DIR=str(deployment.workdir / "data-a"), **heartbeat)
    deployment.publish(before)
    deployment.wait_for("decisions", sum(1 for role, _ in before if role == "signals"))

    second = deployment.worker("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-0",
                               SIZER_DATA_DIR=str(deployment.workdir / "data-b"))
    started = time.monotonic()
    second.spawn()
    try:
        publisher = deployment.publish_over(during, seconds=5, chunks=10)
        deadline = started + FENCED_WITHIN_S
        while not (exited(first) or exited(second)) and time.monotonic() < deadline:
            time.sleep(0.1)
        fenced_after_s = time.monotonic() - started
        print(f"\nthe fenced worker exited {fenced_after_s:.1f} s after the second worker started")
        # the broker lets the newest member with an instance id take its place
        assert exited(first), (f"no worker exited within {FENCED_WITHIN_S} s; first:\n{first.log()[-3000:]}\n"
                               f"second:\n{second.log()[-3000:]}")
        assert not exited(second), f"both exited; second:\n{second.log()[-3000:]}"
        log = first.log()
        line = (f"sizer: another worker joined group {deployment.app_id} with group.instance.id worker-0 "
                "(SIZER_GROUP_INSTANCE_ID): each worker needs its own")
        # one line names the cause, the last one: nothing else is said of it, and the process ends there
        naming = [text for text in log.splitlines() if "group.instance.id" in text]
        assert (first.process.returncode, naming) == (2, [line]), log[-4000:]
        assert log.rstrip().endswith(line), log[-4000:]
        assert "Traceback" not in log, log[-4000:]
        if heartbeat:
            assert "a send or commit was refused" in log, log[-4000:]

        second.wait_ready(60)
        publisher.join()
        deployment.publish(after)
        assert_exactly_once(deployment, inputs, timeout_s=120)
        assert second.alive(), second.log()[-3000:]
        assert "Traceback" not in second.log(), second.log()[-4000:]
    finally:
        second.kill()
