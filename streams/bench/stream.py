"""`make bench`: the worker against the practical limit and the naive baseline, on one broker.

For each contender, on its own fresh topics and group:

- sustained throughput: a backlog of signals is published, the contender
  started, and the rate is measured between 10% and 90% of the decisions being
  readable (read_committed, so exactly-once counts only committed ones);
- latency: on fresh topics, after a warm-up of one signal per portfolio (all
  decided), signals are offered at a fixed rate (1,000/s by default), each
  stamped with its send time, and counted from the second second on (the
  first, from idle to loaded, is a warm-up: broker and contender alike answer
  its first tens of milliseconds slower, 25 ms for the plain loop, 60 ms for
  the worker, on the build machine); a read_committed consumer of the
  decisions gives send-to-decision latency (the order, when there is one, is in
  the same transaction or batch as its decision), p50 and p99;
- peak RSS of the contender's process (VmHWM).

Contenders: (1) a plain aiokafka loop doing the same decode, engine and encode
work (`plain_loop`), (2) a straightforward Faust agent (`naive_agent`), (3) the
product's worker, at-least-once and exactly-once. Prints a table and the ratios
to (1). Uses KAFKA_BOOTSTRAP_SERVERS (the Makefile starts the local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bench.generate import session
from streams.kafka.io import publish
from streams.kafka.settings import ClientConfig, load_kafka_settings
from streams.kafka.topics import TopicSet, apply, load_topics

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SIZER = str(Path(sys.executable).with_name("sizer"))

PORTFOLIOS = 100  # signals of the latency run go round-robin to p0..p99
LOADED_WARM_UP_S = 1.0  # the offered load runs this long before latencies count

CONTENDERS: list[tuple[str, list[str], dict[str, str]]] = [
    ("(1) plain aiokafka loop", [PYTHON, "-m", "streams.bench.plain_loop"], {}),
    ("(2) straightforward Faust agent", [PYTHON, "-m", "streams.bench.naive_agent"], {}),
    ("(3) worker, at-least-once", [SIZER, "worker", "--preset", "conviction"],
     {"SIZER_PROCESSING_GUARANTEE": "at_least_once"}),
    ("(3) worker, exactly-once", [SIZER, "worker", "--preset", "conviction"],
     {"SIZER_PROCESSING_GUARANTEE": "exactly_once"}),
]


@dataclass
class Figures:
    name: str
    rate: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    latency_samples: int = 0
    rss_mb: float = 0.0


class Contender:
    """One contender process on fresh topics and a fresh group."""

    def __init__(self, client: ClientConfig, command: list[str], env: dict[str, str], workdir: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.client = client
        bootstrap = client.bootstrap
        self.topics: TopicSet = load_topics(ROOT / "topics" / "topics.toml", f"bench{tag}-")
        self.command = command
        self.workdir = workdir / tag
        self.workdir.mkdir(parents=True)
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SIZER_TOPIC_PREFIX": f"bench{tag}-",
                    "SIZER_APP_ID": f"bench-{tag}", "SIZER_DATA_DIR": str(self.workdir / "data"),
                    "SIZER_WEB_PORT": str(free_port()), **env}
        self.process: subprocess.Popen[bytes] | None = None
        asyncio.run(apply(client, self.topics))

    def start(self) -> None:
        log = open(self.workdir / "contender.log", "wb")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir)

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        """Stop the process and delete the topics."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        asyncio.run(self.delete_topics())

    async def delete_topics(self) -> None:
        """Its topics and faust's (changelogs, assignor), so that runs do not pile up
        partitions on the broker (thousands of them slow it down)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.client.options())
        await admin.start()
        try:
            prefixes = (self.env["SIZER_TOPIC_PREFIX"], self.env["SIZER_APP_ID"] + "-")
            names = [name for name in await admin.list_topics() if name.startswith(prefixes)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            log = (self.workdir / "contender.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(self.command)} exited:\n{log}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signals_only(count: int, seed: int) -> list[tuple[str, Any]]:
    return [(role, value) for role, value in session(count, portfolios=100, seed=seed) if role != "fills"]


async def committed_count(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    """Decisions readable under read_committed (transaction markers count too: a few per second)."""
    ends = await consumer.end_offsets(tps)
    return sum(ends.values())


async def throughput(contender: Contender, backlog: int, timeout_s: float) -> float:
    entries = signals_only(backlog, seed=11)
    await publish(contender.client, contender.topics, entries)
    spec = contender.topics["decisions"]
    tps = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
    consumer = AIOKafkaConsumer(**contender.client.options(isolation_level="read_committed"))
    await consumer.start()
    try:
        contender.start()
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and contender.alive():
            count = await committed_count(consumer, tps)
            samples.append((time.monotonic(), count))
            if count >= 0.9 * backlog:
                break
            await asyncio.sleep(0.1)
        contender.check_alive()
    finally:
        await consumer.stop()
    started = next(((t, c) for t, c in samples if c >= 0.1 * backlog), None)
    if started is None or samples[-1][0] <= started[0]:
        return 0.0
    return (samples[-1][1] - started[1]) / (samples[-1][0] - started[0])


async def latency(contender: Contender, rate: int, seconds: float) -> list[float]:
    """Offer `rate` signals a second for `seconds`; send-to-decision latencies in ms."""
    setup = signals_only(0, seed=3)  # the instruments
    await publish(contender.client, contender.topics, setup)
    contender.start()
    spec = contender.topics["decisions"]
    consumer = AIOKafkaConsumer(spec.name, **contender.client.options(
        isolation_level="read_committed", auto_offset_reset="earliest", fetch_max_wait_ms=5))
    producer = AIOKafkaProducer(**contender.client.options(acks="all", linger_ms=0))
    await consumer.start()
    await producer.start()
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    topic = contender.topics.name("signals")

    def signal_value(signal_id: str, n: int) -> bytes:
        return json.dumps({"signal_id": signal_id, "portfolio_id": f"p{n % PORTFOLIOS}", "symbol": "SOL-USD",
                           "side": "buy", "score": str((n * 37 % 100) / 100), "price": "150",
                           "ts": int(time.time() * 1000)}).encode()

    async def receive(until: float) -> None:
        while time.monotonic() < until:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    signal_id = json.loads(record.value)["signal_id"]
                    if signal_id in sent and signal_id not in received:
                        received[signal_id] = now

    try:
        # warm up: one signal per portfolio, all decided, so that the measurement is
        # of the steady state (every portfolio and every output partition in use),
        # not of first writes to fresh topics
        tag = uuid.uuid4().hex[:6]
        for n in range(PORTFOLIOS):
            sent[f"warm-{tag}-{n}"] = time.monotonic()
            await producer.send(topic, signal_value(f"warm-{tag}-{n}", n), key=f"p{n}".encode())
        await producer.flush()
        deadline = time.monotonic() + 120
        while len(received) < PORTFOLIOS and time.monotonic() < deadline:
            contender.check_alive()
            await receive(time.monotonic() + 0.2)
        if len(received) < PORTFOLIOS:
            raise RuntimeError(f"the contender decided {len(received)} of {PORTFOLIOS} warm-up signals")
        sent.clear()
        received.clear()
        receiver = asyncio.create_task(receive(time.monotonic() + LOADED_WARM_UP_S + seconds + 10))
        interval = 0.01
        per_tick = max(1, int(rate * interval))
        start = time.monotonic()
        measured_from = start + LOADED_WARM_UP_S
        n = 0
        while time.monotonic() - start < LOADED_WARM_UP_S + seconds:
            tick = start + (n // per_tick) * interval
            delay = tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(per_tick):
                signal_id = f"lat-{n}"
                n += 1
                sent[signal_id] = time.monotonic()
                await producer.send(topic, signal_value(signal_id, n), key=f"p{n % PORTFOLIOS}".encode())
        while len(received) < len(sent) and not receiver.done():
            await asyncio.sleep(0.1)
        receiver.cancel()
    finally:
        await producer.stop()
        await consumer.stop()
    return [(received[s] - sent[s]) * 1000 for s in received if sent[s] >= measured_from]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(client: ClientConfig, name: str, command: list[str], env: dict[str, str], args: argparse.Namespace,
            workdir: Path) -> Figures:
    figures = Figures(name)
    contender = Contender(client, command, env, workdir)
    try:
        figures.rate = asyncio.run(throughput(contender, args.backlog, args.timeout))
        figures.rss_mb = contender.peak_rss_mb() if contender.alive() else 0.0
    finally:
        contender.close()
    contender = Contender(client, command, env, workdir)
    try:
        samples = asyncio.run(latency(contender, args.rate, args.seconds))
        figures.latency_samples = len(samples)
        figures.p50_ms, figures.p99_ms = percentile(samples, 0.50), percentile(samples, 0.99)
        figures.rss_mb = max(figures.rss_mb, contender.peak_rss_mb() if contender.alive() else 0.0)
    finally:
        contender.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.stream", description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=60_000, help="signals for the throughput run")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds at most per throughput run")
    parser.add_argument("--rate", type=int, default=1000, help="offered signals per second for latency")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency run")
    parser.add_argument("--only", default="", help="run only contenders whose name contains this")
    args = parser.parse_args(argv)
    client = load_kafka_settings().for_role("bench")
    bootstrap = client.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="sizer-bench-"))
    results: list[Figures] = []
    for name, command, env in CONTENDERS:
        if args.only and args.only not in name:
            continue
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(client, name, command, env, args, workdir))
    base = results[0].rate if results and results[0].name.startswith("(1)") else None
    naive = next((r.rate for r in results if r.name.startswith("(2)")), None)
    print(f"\nbroker {bootstrap}; backlog {args.backlog} signals; latency at {args.rate} signals/s "
          f"for {args.seconds:.0f} s; logs in {workdir}\n")
    print(f"| {'contender':<33} | {'signals/s':>9} | {'x (1)':>6} | {'x (2)':>6} | {'p50 ms':>7} | "
          f"{'p99 ms':>7} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 35}|{'-' * 10}:|{'-' * 7}:|{'-' * 7}:|{'-' * 8}:|{'-' * 8}:|{'-' * 12}:|")
    for r in results:
        ratio = f"{r.rate / base:.2f}" if base else "-"
        versus_naive = f"{r.rate / naive:.1f}" if naive else "-"
        print(f"| {r.name:<33} | {r.rate:>9,.0f} | {ratio:>6} | {versus_naive:>6} | {r.p50_ms:>7.1f} | "
              f"{r.p99_ms:>7.1f} | {r.rss_mb:>11.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
