"""One transactional producer per worker (`SIZER_TRANSACTIONS=per_worker`) on the real
broker: a worker paused past its session timeout (a zombie) whose partitions the
group gave to another must not commit what it did before the pause, and the
coordinator refuses a transaction's offsets from a generation the group has left
(KIP-447, `streams.faust_compat.group_commit`)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bench.generate import session
from streams.faust_compat.group_commit import GroupMetadata, GroupMetadataProducer, GroupMovedOn
from tests.integration.harness import Deployment, Worker, eventually
from tests.integration.invariants import assert_exactly_once

# the shortest session a 3.9 broker admits (group.min.session.timeout.ms), and so the
# shortest transaction timeout (the worker's is its session timeout)
PER_WORKER = {"SIZER_TRANSACTIONS": "per_worker", "SIZER_SESSION_TIMEOUT_S": "6", "SIZER_HEARTBEAT_INTERVAL_S": "1"}
VARIANTS = ("produced", "offsets", "never_resumed")
JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\)")


def stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state T in /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def generation(worker: Worker) -> int | None:
    """The generation the worker last joined its group in (aiokafka's log line)."""
    joined = JOINED.findall(worker.log())
    return int(joined[-1]) if joined else None


def ready(worker: Worker) -> bool:
    answer = worker.health("ready")
    return answer is not None and answer[0] == 200


def paused_worker(deployment: Deployment, variant: str) -> None:
    """A zombie and a survivor in one group; the zombie SIGSTOPs itself at its second
    commit (after producing, or after its offsets were accepted), the group gives its
    partitions to the survivor once its session times out, and it is resumed (or never)."""
    point = "offsets" if variant == "offsets" else "produced"
    zombie = deployment.worker("--preset", "conviction", SIZER_DATA_DIR=str(deployment.workdir / "data-z"),
                               STREAMS_TEST_STOP_AT=f"{point}:2", **PER_WORKER).spawn()
    survivor = deployment.worker("--preset", "conviction", SIZER_DATA_DIR=str(deployment.workdir / "data-s"),
                                 **PER_WORKER).spawn()
    try:
        zombie.wait_ready()
        survivor.wait_ready()
        # the group settled: both members in one generation, both ready in it
        eventually(lambda: generation(zombie) == generation(survivor) is not None and ready(zombie) and ready(survivor),
                   timeout_s=60, what="both workers ready in one generation")
        inputs = list(session(800, portfolios=20, seed=11))
        publisher = deployment.publish_over(inputs, seconds=4, chunks=16)
        eventually(lambda: stopped(zombie.process.pid), timeout_s=60, what="the zombie stopped mid-transaction")
        assigned = survivor.log().count("partitions assigned")
        settled = survivor.log().count("changelogs settled")
        # the group gives the zombie's partitions to the survivor once its session times out
        survivor.wait_log("partitions assigned", timeout_s=60, occurrences=assigned + 1)
        if variant == "offsets":
            # its transaction's offsets were accepted before the pause: only the broker's
            # abort of the transaction past its timeout (the session timeout) stops its
            # commit, and the survivor's recovery waits for that
            survivor.wait_log("changelogs settled", timeout_s=60, occurrences=settled + 1)
        if variant != "never_resumed":
            os.kill(zombie.process.pid, signal.SIGCONT)
            code = zombie.process.wait(timeout=60)
            assert code == 75, zombie.log()[-3000:]
            assert "exiting so that a restart rebuilds the local tables" in zombie.log()
            if variant == "produced":
                assert "the group moved on from this worker" in zombie.log() or "fenced" in zombie.log()
        publisher.join()

        assert_exactly_once(deployment, inputs)
        # what the zombie produced before its pause was written, and aborted
        assert len(deployment.read("decisions", "read_uncommitted")) > len(deployment.read("decisions"))
        assert survivor.alive(), survivor.log()[-3000:]  # never dropped from the group while it waited
    finally:
        for worker in (zombie, survivor):
            if worker.alive():
                worker.kill()


@pytest.fixture(scope="module")
def paused_workers(bootstrap: str, tmp_path_factory) -> dict[str, BaseException | None]:
    """Every variant of `paused_worker` at once, each on its own topics and group: most
    of each is waiting on the broker (the session timeout, the transaction's)."""
    deployments = {variant: Deployment.create(bootstrap, tmp_path_factory.mktemp(f"zombie-{variant}"))
                   for variant in VARIANTS}
    with ThreadPoolExecutor(len(VARIANTS)) as pool:
        runs = {variant: pool.submit(paused_worker, deployments[variant], variant) for variant in VARIANTS}
    return {variant: run.exception() for variant, run in runs.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_paused_worker_cannot_commit_after_the_group_moved_on(paused_workers, variant):
    failure = paused_workers[variant]
    if failure is not None:
        raise failure


def test_the_coordinator_refuses_a_transactions_offsets_from_an_old_generation(deployment: Deployment):
    """Two members join one group in turn; offsets sent with the first member's first
    generation are refused (and the transaction can only abort), with its current
    generation accepted. The same offsets sent as aiokafka sends them (v0, no group
    metadata) are accepted: the fence is the generation."""
    signals, decisions = deployment.topics.name("signals"), deployment.topics.name("decisions")
    group = f"{deployment.app_id}-protocol"
    tp = TopicPartition(signals, 0)

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(signals, bootstrap_servers=deployment.bootstrap, group_id=group,
                                enable_auto_commit=False, session_timeout_ms=10_000, heartbeat_interval_ms=500)

    def metadata(consumer: AIOKafkaConsumer) -> GroupMetadata:
        coordinator = consumer._coordinator
        return GroupMetadata(coordinator.generation, coordinator.member_id)

    async def commit(producer: AIOKafkaProducer, meta: GroupMetadata | None) -> str:
        await producer.begin_transaction()
        await producer.send(decisions, b"x", partition=0)
        try:
            if meta is None:  # aiokafka's own producer: v0, the group id alone
                await producer.send_offsets_to_transaction({tp: 1}, group)
            else:
                await producer.send_offsets_to_transaction({tp: 1}, group, meta)
        except GroupMovedOn as refused:
            await producer.abort_transaction()
            return f"refused: {refused}"
        await producer.commit_transaction()
        return "committed"

    async def run() -> None:
        first, second = member(), member()
        producer = GroupMetadataProducer(bootstrap_servers=deployment.bootstrap,
                                         transactional_id=f"{group}-{uuid.uuid4().hex[:6]}")
        plain = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap,
                                 transactional_id=f"{group}-{uuid.uuid4().hex[:6]}")
        await first.start()
        await producer.start()
        await plain.start()
        try:
            while not first.assignment():
                await first.getmany(timeout_ms=100)
            old = metadata(first)
            await second.start()
            while not (second.assignment() and metadata(first).generation_id > old.generation_id):
                await asyncio.gather(first.getmany(timeout_ms=100), second.getmany(timeout_ms=100))
            current = metadata(first)
            assert current.generation_id > old.generation_id >= 0
            assert (await commit(producer, old)).startswith("refused: ")
            assert "IllegalGeneration" in await commit(producer, GroupMetadata(old.generation_id,
                                                                                current.member_id))
            assert await commit(producer, current) == "committed"
            assert await commit(plain, None) == "committed"  # v0: nothing to fence with
            assert (await commit(producer, old)).startswith("refused: ")  # and v3 still refuses
        finally:
            await plain.stop()
            await producer.stop()
            await second.stop()
            await first.stop()

    asyncio.run(run())
    # two transactions committed one record each; the three refused were aborted
    assert len(deployment.read("decisions")) == 2
    assert len(deployment.read("decisions", "read_uncommitted")) == 5
