"""The input positions against faust's committed offsets: whatever faust resumes
from, every input is processed exactly once. The group's committed offsets are
moved by hand while the worker is stopped, the two ways faust's own bookkeeping
goes wrong after a restart."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.builders import T0
from tests.integration.harness import Deployment
from tests.integration.invariants import assert_exactly_once
from tests.integration.test_metrics import scrape
from tests.integration.harness import eventually

SOL = {"symbol": "SOL-USD", "legs": [{"venue_symbol": "SOLUSDT", "side": "buy", "qty_step": "0.1",
                                       "min_qty": "0.1", "max_qty": "10000", "min_notional": "5"}]}


def signals(first: int, count: int) -> list[tuple[str, dict]]:
    return [("signals", {"signal_id": f"s{n}", "portfolio_id": f"p{n % 7}", "symbol": "SOL-USD", "side": "buy",
                         "score": str((n % 10) / 10), "price": "150", "ts": T0 + n})
            for n in range(first, first + count)]


def commit_group_offsets(deployment: Deployment, where: str) -> None:
    """Set the worker group's committed offsets on `signals` to the start or the end."""
    async def run() -> None:
        spec = deployment.topics["signals"]
        tps = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
        consumer = AIOKafkaConsumer(spec.name, bootstrap_servers=deployment.bootstrap, group_id=deployment.app_id,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            while len(consumer.assignment()) < len(tps):  # joins the (otherwise empty) group
                await consumer.getmany(timeout_ms=200)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: (ends[tp] if where == "end" else 0) for tp in tps if ends[tp] > 0})
        finally:
            await consumer.stop()

    asyncio.run(run())


def counter(worker, name: str) -> float:
    return scrape(worker.web_port).get((name, (("topic", "signals"),)), 0.0)


def decide_and_stop(deployment: Deployment, workers, count: int) -> list[tuple[str, dict]]:
    """`count` signals decided by a worker that is then stopped; the inputs."""
    inputs = [("instruments", SOL), *signals(0, count)]
    worker = workers("--preset", "conviction")
    deployment.publish(inputs)
    deployment.wait_for("decisions", count)
    assert worker.stop() == 0
    return inputs


def test_rewound_offsets_are_not_decided_again(deployment, workers):
    inputs = decide_and_stop(deployment, workers, 40)

    commit_group_offsets(deployment, "start")  # faust will deliver all 40 again
    worker = workers("--preset", "conviction")
    eventually(lambda: counter(worker, "sizer_inputs_redelivered_total") >= 40, what="40 redeliveries skipped")
    assert_exactly_once(deployment, inputs)


def test_offsets_committed_past_unprocessed_inputs_lose_nothing(deployment, workers):
    decide_and_stop(deployment, workers, 10)

    # 30 signals faust will never deliver: the group's offsets say they are done
    deployment.publish(signals(10, 30))
    commit_group_offsets(deployment, "end")
    worker = workers("--preset", "conviction")
    # no later record reveals the gap: the stall watch seeks back to the positions
    deployment.wait_for("decisions", 40, timeout_s=60)
    assert counter(worker, "sizer_partition_reseeks_total") >= 1
    assert worker.stop() == 0

    # and a later record reveals it: the skipped ones are read back and decided first
    deployment.publish(signals(40, 30))
    commit_group_offsets(deployment, "end")
    worker = workers("--preset", "conviction")
    deployment.publish(signals(70, 7))
    deployment.wait_for("decisions", 77, timeout_s=60)
    assert counter(worker, "sizer_inputs_recovered_total") >= 30
    assert_exactly_once(deployment, [("instruments", SOL), *signals(0, 77)])
