"""Workers on the three-node cluster (replication 3, min.insync.replicas 2) never take
each other down: started together on a fresh install, both come up; one rejoining
while the other takes its partitions over crashes neither."""

from __future__ import annotations

import asyncio
import random
import uuid

from streams.bench.generate import session
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import Replication, declare_changelogs
from tests.integration.invariants import assert_exactly_once


def test_changelogs_declared_by_workers_on_different_brokers_at_once(cluster):
    """What two workers starting together do: each declares the same changelogs,
    through another broker of the cluster, one a moment after the other. The
    second finds them listed before it can describe them; it must wait, not refuse."""

    async def race(names: dict[str, int], lag_s: float) -> None:
        first, second = (ConnectionSettings(bootstrap=f"127.0.0.1:{port}").for_role("test")
                         for port in (cluster.ports[0], cluster.ports[2]))

        async def later() -> list[str]:
            await asyncio.sleep(lag_s)
            return await declare_changelogs(second, names, Replication(3, 2))

        await asyncio.gather(declare_changelogs(first, names, Replication(3, 2)), later())

    rng = random.Random(26)
    for _ in range(12):
        tag = uuid.uuid4().hex[:8]
        asyncio.run(race({f"race-{tag}-{table}-changelog": 6 for table in ("a", "b", "c", "d", "e")},
                         rng.uniform(0.0, 0.15)))


def test_two_workers_started_together_on_a_fresh_install(replicated):
    first, second = (replicated.worker("--preset", "conviction", SIZER_DATA_DIR=str(replicated.workdir / name))
                     for name in ("data-a", "data-b"))
    first.spawn(), second.spawn()  # at once, as compose and a two-replica release start them
    try:
        first.wait_ready(120), second.wait_ready(120)
        inputs = list(session(600, portfolios=20, seed=26))
        replicated.publish(inputs)
        assert_exactly_once(replicated, inputs)
        assert first.alive() and second.alive()
    finally:
        first.kill(), second.kill()


def test_a_worker_rejoining_while_the_survivor_takes_over(replicated, workers_on):
    start = workers_on(replicated)
    env = {"SIZER_STANDBY_REPLICAS": "1"}
    first = start("--preset", "conviction", SIZER_DATA_DIR=str(replicated.workdir / "data-a"), **env)
    second = start("--preset", "conviction", SIZER_DATA_DIR=str(replicated.workdir / "data-b"), **env)
    # the first worker's partitions were moved once more when the second joined
    first.wait_log("partitions assigned", occurrences=2, timeout_s=120)
    inputs = list(session(3000, portfolios=20, seed=27))
    publisher = replicated.publish_over(inputs, seconds=30)
    replicated.wait_for("decisions", 200)
    assignments = second.log().count("partitions assigned")
    first.kill()
    # the survivor takes the dead worker's partitions over (after its session timeout)
    # and, while it recovers them, the dead worker is back
    second.wait_log("partitions assigned", occurrences=assignments + 1, timeout_s=60)
    again = start("--preset", "conviction", SIZER_DATA_DIR=str(replicated.workdir / "data-a"), **env)
    publisher.join()

    assert_exactly_once(replicated, inputs)
    assert second.alive(), f"the survivor exited:\n{second.log()[-3000:]}"
    assert again.alive(), f"the rejoining worker exited:\n{again.log()[-3000:]}"
