"""A worker started with another commit form (SIZER_PROCESSING_GUARANTEE,
SIZER_TRANSACTIONS) than the running group's, as a rolling restart that changes
either would start it: the forms do not fence each other, so the leader assigns it
nothing and it stops in one line naming both forms (exit 2, a configuration fault),
while the running worker decides every signal exactly once."""

from __future__ import annotations

import time

import pytest

from streams.bench.generate import session
from tests.integration.invariants import assert_exactly_once

STOPPED_WITHIN_S = 60.0


@pytest.mark.parametrize("running, newcomer", [("per_partition", "per_worker"), ("per_worker", "per_partition")])
def test_a_worker_of_another_transactions_form_is_assigned_nothing_and_stops_in_one_line(
        deployment, workers, running, newcomer):
    inputs = list(session(900, portfolios=20, seed=31))
    before, during, after = inputs[:300], inputs[300:600], inputs[600:]
    first = workers("--preset", "conviction", SIZER_TRANSACTIONS=running,
                    SIZER_DATA_DIR=str(deployment.workdir / "data-a"))
    deployment.publish(before)
    deployment.wait_for("decisions", sum(1 for role, _ in before if role == "signals"))

    second = deployment.worker("--preset", "conviction", SIZER_TRANSACTIONS=newcomer,
                               SIZER_DATA_DIR=str(deployment.workdir / "data-b"))
    started = time.monotonic()
    second.spawn()
    try:
        publisher = deployment.publish_over(during, seconds=5, chunks=10)
        while second.process.poll() is None and time.monotonic() < started + STOPPED_WITHIN_S:
            time.sleep(0.1)
        print(f"\nthe {newcomer} worker exited {time.monotonic() - started:.1f} s after it started")
        log = second.log()
        assert second.process.poll() is not None, f"it did not stop within {STOPPED_WITHIN_S} s:\n{log[-3000:]}"
        line = (f"sizer: the workers of group {deployment.app_id} run SIZER_PROCESSING_GUARANTEE=exactly_once "
                f"SIZER_TRANSACTIONS={running}, this one SIZER_PROCESSING_GUARANTEE=exactly_once "
                f"SIZER_TRANSACTIONS={newcomer}: the two do not fence each other's commits; stop every worker "
                "of the group to change either setting")
        assert second.process.returncode == 2, log[-4000:]
        assert log.rstrip().endswith(line), log[-4000:]
        assert "Traceback" not in log, log[-4000:]
        # it processed nothing: no partition was ever assigned to it
        assert "partitions assigned" not in log, log[-4000:]

        publisher.join()
        deployment.publish(after)
        assert_exactly_once(deployment, inputs, timeout_s=120)
        assert first.alive(), first.log()[-3000:]
        assert "it is assigned nothing and stops" in first.log(), first.log()[-4000:]
    finally:
        second.kill()
