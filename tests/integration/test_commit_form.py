"""A worker started with another commit form (SIZER_PROCESSING_GUARANTEE,
SIZER_TRANSACTIONS) than the running group's, as a rolling restart that changes
either would start it: the forms do not fence each other, so the leader assigns it
nothing and it stops in one line naming both forms (exit 2, a configuration fault),
while the running worker decides every signal exactly once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

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
        assert "it is assigned nothing" in first.log(), first.log()[-4000:]
    finally:
        second.kill()


class Stranger(AbstractPartitionAssignor):
    """Another client's assignor under faust's protocol name, joining with metadata of its own."""

    name = "faust"
    version = 0
    assigned: list = []

    @classmethod
    def assign(cls, cluster, members):  # never the leader here
        raise AssertionError("the stranger was elected leader")

    @classmethod
    def metadata(cls, topics):
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"\x00 not a faust record")

    @classmethod
    def on_assignment(cls, assignment):
        cls.assigned.append(assignment.assignment)


async def stranger_in(deployment, seconds: float) -> list:
    consumer = AIOKafkaConsumer(deployment.topics["signals"].name, deployment.topics["fills"].name,
                                bootstrap_servers=deployment.bootstrap, group_id=deployment.app_id,
                                enable_auto_commit=False, partition_assignment_strategy=(Stranger,))
    await consumer.start()
    records = []
    try:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def test_a_member_that_is_no_sizer_worker_is_assigned_nothing_and_the_group_goes_on(deployment, workers):
    # another client joined the group under faust's protocol name: the leader's assignment
    # failed on its metadata at every join, and no worker was assigned anything again
    inputs = list(session(600, portfolios=20, seed=37))
    before, during = inputs[:200], inputs[200:]
    first = workers("--preset", "conviction", SIZER_DATA_DIR=str(deployment.workdir / "data-a"))
    deployment.publish(before)
    deployment.wait_for("decisions", sum(1 for role, _ in before if role == "signals"))

    Stranger.assigned = []
    stranger = threading.Thread(target=lambda: Stranger.assigned.append(asyncio.run(stranger_in(deployment, 30))))
    stranger.start()
    time.sleep(5)
    deployment.publish(during)
    assert_exactly_once(deployment, inputs, timeout_s=120)
    stranger.join(timeout=60)
    *assignments, records = Stranger.assigned
    assert records == [] and assignments and all(not a for a in assignments), Stranger.assigned
    log = first.log()
    assert first.alive(), log[-3000:]
    assert "runs no form (its group metadata is not a sizer worker's)" in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
