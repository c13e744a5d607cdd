"""Two workers sharing the partitions, one killed; and the broker stopped and started
under a running worker. Both end on every invariant of `invariants`."""

from __future__ import annotations

import time

from streams.bench.generate import session
from tests.integration.harness import Broker, Deployment
from tests.integration.invariants import assert_exactly_once


def mid_stream(deployment: Deployment, publisher) -> bool:
    """Some signals are decided and more are still being published."""
    return publisher.is_alive() and sum(deployment.end_offsets("decisions").values()) > 0


def test_failover_to_the_other_worker_with_standby_replicas(deployment, workers):
    inputs = list(session(6000, portfolios=20, seed=8))
    first = workers("--preset", "conviction", SIZER_STANDBY_REPLICAS="1",
                    SIZER_DATA_DIR=str(deployment.workdir / "data-a"))
    second = workers("--preset", "conviction", SIZER_STANDBY_REPLICAS="1",
                     SIZER_DATA_DIR=str(deployment.workdir / "data-b"))
    # both share the group: each has active partitions and standbys of the other's
    # faust's Recovery, or the worker's SafeSeekRecovery (streams.faust_compat.recovery)
    first.wait_log("Recovery]: Worker ready", timeout_s=120, occurrences=2)
    publisher = deployment.publish_over(inputs, seconds=20)
    time.sleep(6.0)
    assert mid_stream(deployment, publisher)
    first.kill()
    publisher.join()

    assert_exactly_once(deployment, inputs)
    assert second.alive()
    log = second.log()
    assert "standby" in log.lower(), "the survivor kept no standby replicas"


def test_the_worker_rides_out_a_broker_restart(tmp_path, workers_on):
    broker = Broker(tmp_path / "kafka")
    broker.start()
    try:
        deployment = Deployment.create(broker.bootstrap, tmp_path)
        worker = workers_on(deployment)("--preset", "conviction")
        inputs = list(session(4000, portfolios=20, seed=9))
        publisher = deployment.publish_over(inputs, seconds=20)
        time.sleep(6.0)
        assert mid_stream(deployment, publisher)
        broker.stop()
        time.sleep(5.0)
        broker.start()
        publisher.join()

        assert_exactly_once(deployment, inputs)
        assert worker.alive(), "the worker did not recover on its own"
    finally:
        broker.stop()
