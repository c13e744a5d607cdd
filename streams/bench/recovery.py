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

From `--bulk-from` portfolios on (default 1,000,000) the state is not built by
the worker deciding every signal (minutes at a million) but by sending, in bulk,
the changelog records it would have written: the same engine and `TableStore`
decide each signal in this process (`changelog_records`), each portfolio's
records go to its signal's partition, and the worker's first start rebuilds its
tables from them. `--prepare` builds those records once into `--cache` before the
broker is needed (about three minutes for a million).

    python -m streams.bench.recovery [--portfolios 1000,100000,1000000] [--bulk-from N]
    python -m streams.bench.recovery --portfolios 1000000 --prepare

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

from typing import Any, Iterable, Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.bench.chaos import Worker
from streams.bench.generate import T0, spread_signals
from streams.kafka.io import publish
from streams.wire.admission import home_partition
from streams.worker.settings import load_settings
from streams.kafka.topics import apply, declare_changelogs, load_topics
from streams.worker.checkpoint import CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("exposure", "streak", "controls", "windows", "input-positions")  # the worker's (`worker.app`)
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


class _Recorded:
    """Table writes as the worker's `Outputs.put` makes them, noted instead of sent:
    (table name, key, value), the value None for a delete."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, bytes, bytes | None]] = []

    async def put(self, table: Any, key: bytes, value: bytes | None) -> None:
        self.writes.append((table.name, key, value))


class _Table(dict):  # type: ignore[type-arg]
    """A table as `TableStore` reads it (`.data` is the local store), kept empty:
    every portfolio is new, so nothing is read back."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.data = name, self


def changelog_records(entries: list[tuple[str, Any]], width: int) -> Iterator[tuple[str, bytes, bytes | None, int]]:
    """(table, key, value, partition) of every changelog record a worker writes
    deciding `entries` (instruments, then one signal per new portfolio): the same
    engine and `TableStore` as the worker's, each portfolio's records on its
    signal's partition, as the worker writes them."""
    from streams.config import load_config
    from streams.processor import Processor
    from streams.wire.models import Instrument, Signal
    from streams.worker.tables import TableStore

    config = load_config("conviction")  # the bench worker's preset
    tables = {name: _Table(name) for name in ("exposure", "streak", "controls", "windows")}
    recorded = _Recorded()
    store = TableStore(tables["exposure"], tables["streak"], tables["controls"], tables["windows"], config,
                       recorded, lambda: "event")
    instruments = {value["symbol"]: Instrument.model_validate(value) for role, value in entries
                   if role == "instruments"}
    processor = Processor(config, store, instruments)
    written = 0
    for role, value in entries:
        if role != "signals":
            continue
        processor.on_signal(Signal.model_validate(value))
        for changed, _ in store.changed():
            _run(store.write(changed))
        store.end_batch()
        written += 1
        if written % 10_000 == 0:
            store.forget()  # each portfolio is decided once: nothing to keep decoded
        partition = home_partition(value["portfolio_id"].encode(), width)
        for table, key, data in recorded.writes:
            yield table, key, data, partition
        recorded.writes.clear()


def _run(coroutine: Any) -> None:
    """Run a coroutine that never awaits anything pending (TableStore.write on `_Recorded`)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("a table write waited on something")


def cached_records(entries: list[tuple[str, Any]], width: int, portfolios: int,
                   cache: Path | None) -> Iterator[tuple[str, bytes, bytes | None, int]]:
    """`changelog_records`, kept in `cache` (a directory; None: not kept) the first
    time and read from there afterwards: deciding 1,000,000 signals takes minutes,
    which `--prepare` spends before the broker is needed."""
    import hashlib
    import pickle

    if cache is None:
        yield from changelog_records(entries, width)
        return
    digest = hashlib.sha256(repr(entries[:50] + entries[-5:]).encode()).hexdigest()[:12]
    path = cache / f"changelogs-{portfolios}-{width}-{digest}.pickle"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            chunk: list[tuple[str, bytes, bytes | None, int]] = []
            for record in changelog_records(entries, width):
                chunk.append(record)
                if len(chunk) >= 50_000:
                    pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
                    chunk = []
            pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)
    with path.open("rb") as source:
        while True:
            try:
                yield from pickle.load(source)
            except EOFError:
                return


async def produce_changelogs(client: Any, app_id: str, records: Iterable[tuple[str, bytes, bytes | None, int]],
                             ) -> int:
    """Send `records` to the app's changelogs (`<app id>-<table>-changelog`), in bulk;
    how many were sent."""
    producer = AIOKafkaProducer(**client.options(acks="all", linger_ms=50, max_batch_size=1_048_576,
                                                 compression_type=None))
    await producer.start()
    sent = 0
    try:
        pending = []
        for table, key, value, partition in records:
            pending.append(await producer.send(f"{app_id}-{table}-changelog", value, key=key, partition=partition))
            sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def fresh_deployment(name: str) -> tuple[Any, Any, Any, dict[str, str]]:
    """Topics under a new prefix `<name><tag>-`, applied on the broker of the
    environment's settings, for exactly-once workers of group `<name>-<tag>`:
    (worker settings, client, topics, the workers' environment)."""
    kafka = load_settings()
    client = kafka.for_role(f"bench-{name}")
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"{name}{tag}-", f"{name}-{tag}"
    topics = load_topics(ROOT / "topics" / "topics.toml", prefix, replication=kafka.replication)
    asyncio.run(apply(client, topics))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "SIZER_TOPIC_PREFIX": prefix,
           "SIZER_APP_ID": app_id, "SIZER_PROCESSING_GUARANTEE": "exactly_once"}
    return kafka, client, topics, env


def measure(portfolios: int, workdir: Path, say=print, bulk: bool = False,
            cache: Path | None = None) -> dict[str, tuple[float, float]]:
    kafka, client, topics, env = fresh_deployment("recovery")
    app_id = env["SIZER_APP_ID"]
    worker = Worker(f"{app_id}-0", workdir, env)
    width = topics["signals"].partitions
    began = time.monotonic()
    entries = list(spread_signals(portfolios, portfolios, seed=portfolios))
    if bulk:
        # the changelogs the worker would have written deciding `entries`, sent in bulk;
        # the worker's first start rebuilds its tables from them
        asyncio.run(declare_changelogs(client, {f"{app_id}-{table}-changelog": width for table in TABLES},
                                       kafka.replication))
        instruments = [entry for entry in entries if entry[0] == "instruments"]
        asyncio.run(publish(client, topics, instruments))
        records = cached_records(entries, width, portfolios, cache)
        sent = asyncio.run(produce_changelogs(client, app_id, records))
        say(f"  {portfolios:,} portfolios: {sent:,} changelog records sent in {time.monotonic() - began:.0f} s")
        worker.start()
        worker.wait_ready(timeout_s=3600.0)
    else:
        worker.start()
        worker.wait_ready()
        for start in range(0, len(entries), 50_000):
            asyncio.run(publish(client, topics, entries[start:start + 50_000]))

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
    parser.add_argument("--bulk-from", type=int, default=1_000_000,
                        help="from this many portfolios on, build the state by sending the changelog records the "
                             "worker would write instead of having the worker decide every signal")
    parser.add_argument("--cache", type=Path, default=ROOT / ".sizer-data" / "bench-recovery",
                        help="where the bulk-built changelog records are kept between runs")
    parser.add_argument("--prepare", action="store_true",
                        help="only build the cache of the bulk-built counts (no broker), then exit")
    args = parser.parse_args(argv)
    counts = [int(text.replace("_", "")) for text in args.portfolios.split(",") if text.strip()]
    from streams.bench import run_bench

    width = load_topics(ROOT / "topics" / "topics.toml", "")["signals"].partitions
    if args.prepare:
        for count in (count for count in counts if count >= args.bulk_from):
            began = time.monotonic()
            entries = list(spread_signals(count, count, seed=count))
            records = sum(1 for _ in cached_records(entries, width, count, args.cache))
            print(f"{count:,} portfolios: {records:,} changelog records in {args.cache} "
                  f"({time.monotonic() - began:.0f} s)")
        return 0

    def run() -> int:
        results = {}
        with tempfile.TemporaryDirectory(prefix="sizer-recovery-") as workdir:
            for count in counts:
                results[count] = measure(count, Path(workdir), bulk=count >= args.bulk_from, cache=args.cache)
        print(f"\n{'portfolios':>12}  " + "  ".join(f"{name:>26}" for name in RESTARTS))
        for count, figures in results.items():
            print(f"{count:>12,}  " + "  ".join(f"{figures[name][0]:>9.1f} s / {figures[name][1]:>6.1f} s   "
                                                 for name in RESTARTS))
        print("(first decision / every partition's first decision, from the process start)")
        return 0

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
