"""Static group membership (SIZER_GROUP_INSTANCE_ID) misconfigured by hand: two
workers of one application given the same instance id. The broker lets the newer
one take the older one's place and answers the older one FENCED_INSTANCE_ID: that
one stops at once, in one line naming the setting (exit 2, a configuration
fault), and the other decides every signal exactly once."""

from __future__ import annotations

import time

import pytest

from streams.bench.generate import session
from tests.integration.harness import Worker, eventually
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


def line_for(deployment, instance_id: str) -> str:
    return (f"sizer: another worker joined group {deployment.app_id} with group.instance.id {instance_id} "
            "(SIZER_GROUP_INSTANCE_ID): each worker needs its own")


def revoked(worker: Worker) -> int:
    return worker.log().count("partitions revoked")


# An operator's restart (SIGTERM, then the same id again inside the session timeout) and a
# crash restarted at once (SIGKILL) are the same member coming back, not a second one: nobody
# stops, and under SIGTERM the other worker sees no rebalance.
@pytest.mark.parametrize("end", ["stop", "kill"])
def test_a_static_member_restarted_inside_its_session_timeout_is_not_taken_for_a_duplicate(
        deployment, workers, end):
    inputs = list(session(600, portfolios=20, seed=27))
    before, after = inputs[:300], inputs[300:]
    data = str(deployment.workdir / "data-a")
    first = workers("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-0", SIZER_DATA_DIR=data)
    other = workers("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-1",
                    SIZER_DATA_DIR=str(deployment.workdir / "data-b"))
    deployment.publish(before)
    deployment.wait_for("decisions", sum(1 for role, _ in before if role == "signals"))
    time.sleep(1.0)  # the group settled on both
    settled = revoked(other)

    code = getattr(first, end)()
    assert code == (0 if end == "stop" else -9), first.log()[-3000:]
    again = workers("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-0", SIZER_DATA_DIR=data)
    try:
        deployment.publish(after)
        assert_exactly_once(deployment, inputs, timeout_s=120)
        for worker in (again, other):
            assert worker.alive(), worker.log()[-3000:]
            assert "group.instance.id" not in worker.log(), worker.log()[-3000:]
            assert "Traceback" not in worker.log(), worker.log()[-3000:]
        if end == "stop":
            assert revoked(other) == settled, other.log()[-3000:]
    finally:
        again.kill()


# Three workers, two of them given one id by mistake: exactly one of that pair stops in one
# line (under JSON logs too, the line itself plain and last), the other two decide every
# signal once. Under at-least-once (commits without the instance id) one of the pair stops
# just the same, and nothing hangs.
@pytest.mark.parametrize("extra", [{"SIZER_LOG_FORMAT": "json"}, {"SIZER_PROCESSING_GUARANTEE": "at_least_once"}],
                         ids=["exactly_once_json", "at_least_once"])
def test_two_of_three_workers_sharing_an_id_one_of_the_pair_stops_the_others_decide(deployment, workers, extra):
    inputs = list(session(900, portfolios=20, seed=28))
    before, during, after = inputs[:300], inputs[300:600], inputs[600:]
    pair = [workers("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-0",
                    SIZER_DATA_DIR=str(deployment.workdir / "data-a"), **extra)]
    third = workers("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-2",
                    SIZER_DATA_DIR=str(deployment.workdir / "data-c"), **extra)
    deployment.publish(before)
    deployment.wait_for("decisions", sum(1 for role, _ in before if role == "signals"))
    pair.append(deployment.worker("--preset", "conviction", SIZER_GROUP_INSTANCE_ID="worker-0",
                                  SIZER_DATA_DIR=str(deployment.workdir / "data-b"), **extra).spawn())
    started = time.monotonic()
    try:
        publisher = deployment.publish_over(during, seconds=5, chunks=10)
        while not any(exited(worker) for worker in pair) and time.monotonic() < started + FENCED_WITHIN_S:
            time.sleep(0.1)
        print(f"\na worker of the pair exited {time.monotonic() - started:.1f} s after the second started")
        gone = [worker for worker in pair if exited(worker)]
        assert len(gone) == 1, "\n\n".join(worker.log()[-3000:] for worker in pair)
        log = gone[0].log()
        assert gone[0].process.returncode == 2, log[-4000:]
        assert log.rstrip().splitlines()[-1] == line_for(deployment, "worker-0"), log[-4000:]
        assert "Traceback" not in log and "mode.redirect" not in log, log[-4000:]
        kept = next(worker for worker in pair if worker is not gone[0])
        kept.wait_ready(60)
        publisher.join()
        deployment.publish(after)
        if extra.get("SIZER_PROCESSING_GUARANTEE") == "at_least_once":
            signals = sum(1 for role, _ in inputs if role == "signals")
            eventually(lambda: len({r.json()["signal_id"] for r in deployment.read("decisions")}) == signals,
                       timeout_s=120, what=f"a decision for each of the {signals} signals")
        else:
            assert_exactly_once(deployment, inputs, timeout_s=120)
        for worker in (kept, third):
            assert worker.alive(), worker.log()[-3000:]
            assert "Traceback" not in worker.log(), worker.log()[-4000:]
    finally:
        pair[1].kill()
