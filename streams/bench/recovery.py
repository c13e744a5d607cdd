"""`make bench-recovery`: how long a worker's restart takes to its first decision,
against the state it holds.

For each portfolio count (1,000, 100,000 and 1,000,000 by default) one
exactly-once worker on fresh topics decides one signal for every portfolio (so
each holds exposure, streak and dedupe-window state), then is restarted four ways:

- clean (SIGTERM), with its checkpoint: local tables kept, the changelogs read
  from the checkpoint on;
- clean, the checkpoint removed before the start: every table rebuilt from the
  changelogs (what every start did before the checkpoint);
- SIGKILL: no checkpoint was written, every table rebuilt;
- clean again with the checkpoint (a second sample).

Each restart's figure is the time from starting the process to the first
decision readable (read_committed) of probe signals sent as it starts, one per
input partition, and to the last of them (every partition back).

    python -m streams.bench.recovery [--portfolios 1000,100000,1000000]

Uses KAFKA_BOOTSTRAP_SERVERS (the Makefile starts the local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from streams.bench.chaos import Worker
from streams.bench.generate import T0, spread_signals
from streams.kafka.io import publish
from streams.wire.admission import home_partition
from streams.worker.settings import load_settings
from streams.kafka.topics import apply, load_topics
from streams.worker.checkpoint import CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]
RESTARTS = ("clean, checkpoint", "clean, no checkpoint", "SIGKILL", "clean, checkpoint (again)")


def probes(width: int, round_: int, portfolios: int) -> list[tuple[str, dict[str, object]]]:
    """One signal per input partition, for portfolios already holding state."""
    found: dict[int, str] = {}
    for n in range(portfolios):
        # the partition the worker admits the key on, as the publisher places it
        found.setdefault(home_partition(f"p{n}".encode(), width), f"p{n}")
        if len(found) == width:
            break
    return [("signals", {"signal_id": f"probe-{round_}-{p}", "portfolio_id": portfolio, "symbol": "SOL-USD",
                         "side": "buy", "score": "0.5", "price": "150", "ts": T0 + 10**9 + round_})
            for p, portfolio in sorted(found.items())]


async def decided(client, topic: str, ids: set[str], timeout_s: float) -> list[float]:
    """Monotonic times at which each of `ids` became readable in `topic` (decisions)."""
    import json

    consumer = AIOKafkaConsumer(topic, **client.options(group_id=None, isolation_level="read_committed",
                                                        auto_offset_reset="latest", fetch_max_wait_ms=20))
    await consumer.start()
    times: list[float] = []
    try:
        await consumer.seek_to_end()
        deadline = time.monotonic() + timeout_s
        while len(times) < len(ids) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    if json.loads(record.value)["signal_id"] in ids:
                        times.append(time.monotonic())
        return times
    finally:
        await consumer.stop()


def measure(portfolios: int, workdir: Path, say=print) -> dict[str, tuple[float, float]]:
    kafka = load_settings()
    client = kafka.for_role("bench-recovery")
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"recovery{tag}-", f"recovery-{tag}"
    topics = load_topics(ROOT / "topics" / "topics.toml", prefix, replication=kafka.replication)
    asyncio.run(apply(client, topics))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "SIZER_TOPIC_PREFIX": prefix,
           "SIZER_APP_ID": app_id, "SIZER_PROCESSING_GUARANTEE": "exactly_once"}
    worker = Worker(f"{app_id}-0", workdir, env)
    worker.start()
    worker.wait_ready()
    began = time.monotonic()
    entries = list(spread_signals(portfolios, portfolios, seed=portfolios))
    for start in range(0, len(entries), 50_000):
        asyncio.run(publish(client, topics, entries[start:start + 50_000]))
    width = topics["signals"].partitions

    def probe(round_: int, timeout_s: float = 900.0) -> list[float]:
        batch = probes(width, round_, portfolios)
        ids = {value["signal_id"] for _, value in batch}

        async def both() -> list[float]:
            waiting = asyncio.create_task(decided(client, topics.name("decisions"), ids, timeout_s))
            await asyncio.sleep(0.5)  # the reader at the end first
            await publish(client, topics, batch)
            return await waiting

        return asyncio.run(both())

    probe(0, timeout_s=3600.0)  # every portfolio's signal decided before it (one partition each, in order)
    say(f"  {portfolios:,} portfolios: state built in {time.monotonic() - began:.0f} s")
    figures: dict[str, tuple[float, float]] = {}
    for round_, restart in enumerate(RESTARTS, start=1):
        if restart == "SIGKILL":
            worker.signal(signal.SIGKILL)
        else:
            worker.signal(signal.SIGTERM)
        if restart == "clean, no checkpoint":
            for found in (worker.workdir / "data").rglob(CHECKPOINT):
                found.unlink()
        started = time.monotonic()
        worker.start()
        times = probe(round_)
        if len(times) < width:
            figures[restart] = (float("nan"), float("nan"))
        else:
            figures[restart] = (min(times) - started, max(times) - started)
        say(f"    {restart:<26} first decision {figures[restart][0]:6.1f} s, every partition "
            f"{figures[restart][1]:6.1f} s")
        worker.wait_ready()
    worker.signal(signal.SIGTERM)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.recovery", description=__doc__.split("\n")[0])
    parser.add_argument("--portfolios", default="1000,100000,1000000",
                        help="comma-separated portfolio counts")
    args = parser.parse_args(argv)
    counts = [int(text.replace("_", "")) for text in args.portfolios.split(",") if text.strip()]
    from streams.bench import run_bench

    def run() -> int:
        results = {}
        with tempfile.TemporaryDirectory(prefix="sizer-recovery-") as workdir:
            for count in counts:
                results[count] = measure(count, Path(workdir))
        print(f"\n{'portfolios':>12}  " + "  ".join(f"{name:>26}" for name in RESTARTS))
        for count, figures in results.items():
            print(f"{count:>12,}  " + "  ".join(f"{figures[name][0]:>9.1f} s / {figures[name][1]:>6.1f} s   "
                                                 for name in RESTARTS))
        print("(first decision / every partition's first decision, from the process start)")
        return 0

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
