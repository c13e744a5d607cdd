"""`make bench`: the worker against the limits and the alternatives, on one broker.

For each contender, on its own fresh topics and group, the runs chosen with
`--runs` (all by default):

- throughput: a backlog of signals is published, the contender started, and
  the rate is measured between 10% and 90% of the decisions being readable
  (read_committed, so exactly-once counts only committed ones);
- latency: on fresh topics, after a warm-up of one signal per portfolio (all
  decided), signals are offered at a fixed rate (1,000/s by default), each
  stamped with its send time, and counted from the second second on (the
  first, from idle to loaded, is a warm-up: broker and contender alike answer
  its first tens of milliseconds slower, 25 ms for the plain loop, 60 ms for
  the worker, on the build machine); a read_committed consumer of the
  decisions gives send-to-decision latency (the order, when there is one, is in
  the same transaction or batch as its decision), p50 and p99;
- hog: the latency run again with a CPU hog (a busy Python loop in its own
  process, pinned to the machine's last CPU) spinning from the end of the
  warm-up to the end of the run;
- peak RSS of the contender's process (VmHWM), the largest over its runs.

And `curve`: the worker exactly-once at its eager commit floor
(`SIZER_EAGER_COMMIT_FLOOR_S`), the latency run at offered loads from 200 to
8,000 signals a second: p50, p99 and the rate decisions became readable at.

And `transactions` (`streams.bench.transactions`): the exactly-once bare loop (0)
with one transaction per input partition against one transaction per batch,
alternated run by run, at two marker waits and with the broker's transaction
partition verification on and off: throughput, and latency at the same offered
rate.

And `scale`: the worker at-least-once, throughput and peak RSS with the signals
spread over 100, 10,000 and 100,000 portfolios (one backlog for all three, at
least twice the largest count, so that every portfolio is touched), and the RSS
per 1,000 portfolios. The backlog has no fills, so its reservations lapse after
one second of event time (`SCALE_SETTINGS`): every signal is then accepted at
every count, and the counts compare the same work. Without it the caps of 100
portfolios fill after a few signals each and 99.6% of the signals are rejected,
against 0.3% at 100,000, which would compare rejections with orders.

Contenders: (0) a bare consume-and-produce loop that copies each signal's bytes
to the decisions topic, no decode or engine: the limit Kafka and the client set
here (`bare_loop`), at-least-once and exactly-once (in transactions made as the
worker's are, each partition on its own: the limit on the worker's exactly-once
latency); (1) a plain aiokafka loop doing the same decode, engine and
encode work (`plain_loop`); (2) a straightforward Faust agent (`naive_agent`);
(3) the product's worker, at-least-once and exactly-once; (4) a Quix Streams
application doing the same work with its state in Quix' RocksDB state and
changelog (`quix_app`), at-least-once and exactly-once at the worker's commit
interval and at its eager commit floor. Prints a table with the throughput
ratios to (0) and to (1). Uses KAFKA_BOOTSTRAP_SERVERS (the Makefile starts the
local broker). (4) runs in .venv-bench (the `bench` extra, which `make bench`
installs); without it, (4) is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bench import run_bench
from streams.bench.generate import session, spread_signals
from streams.bench.transactions import MARKER_WAITS_MS, VERIFICATIONS, measure_transactions, print_transactions
from streams.kafka.io import publish
from streams.kafka.settings import ClientConfig
from streams.worker.settings import WorkerSettings, load_settings
from streams.kafka.topics import TopicSet, apply, load_topics
from streams.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SIZER = str(Path(sys.executable).with_name("sizer"))
# Quix Streams pins pydantic below the product's: contender (4) runs in its own environment
QUIX_PYTHON = os.environ.get("BENCH_QUIX_PYTHON") or str(ROOT / ".venv-bench" / "bin" / "python")

PORTFOLIOS = 100  # signals of the latency run go round-robin to p0..p99
LOADED_WARM_UP_S = 1.0  # the offered load runs this long before latencies count
RUNS = ("throughput", "latency", "hog", "scale", "curve", "transactions")
# runs of their own, not of each contender: left out with --only unless named
OWN_RUNS = ("scale", "curve", "transactions")
SCALE_PORTFOLIOS = (100, 10_000, 100_000)
CURVE_RATES = (200, 500, 1_000, 2_000, 4_000, 8_000)  # the 10 ms ticks offer multiples of 100/s
WORKER = [SIZER, "worker", "--preset", "conviction"]
AT_LEAST_ONCE = {"SIZER_PROCESSING_GUARANTEE": "at_least_once"}
# the scale run's reservations lapse after 1 s of event time (the backlog has no fills); the
# clock rules want the TTL at least max_signal_age_s + max_future_skew_s (its event times
# are in the past: a 0.5 s skew refuses none)
SCALE_SETTINGS = {**AT_LEAST_ONCE, "SIZING_RESERVATION_TTL_S": "1", "SIZING_MAX_SIGNAL_AGE_S": "0.5",
                  "SIZING_MAX_FUTURE_SKEW_S": "0.5"}


def contenders(kafka: WorkerSettings) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, command, environment) of every contender; the Quix ones at the worker's
    commit interval and, exactly-once, also at its eager commit floor (Quix has no
    eager commit: its timer is the only way to commit sooner)."""
    interval, floor = kafka.commit_interval_s, kafka.eager_commit_floor_s
    quix = [QUIX_PYTHON, "-m", "streams.bench.quix_app"]
    exactly_once = [(f"(4) Quix Streams, exactly-once, commit {interval:g} s", quix,
                     {"SIZER_PROCESSING_GUARANTEE": "exactly_once", "SIZER_COMMIT_INTERVAL_S": str(interval)})]
    if floor and floor != interval:
        exactly_once.append((f"(4) Quix Streams, exactly-once, commit {floor:g} s", quix,
                             {"SIZER_PROCESSING_GUARANTEE": "exactly_once", "SIZER_COMMIT_INTERVAL_S": str(floor)}))
    return [
        ("(0) bare consume-and-produce loop", [PYTHON, "-m", "streams.bench.bare_loop"], AT_LEAST_ONCE),
        ("(0) bare consume-and-produce loop, exactly-once", [PYTHON, "-m", "streams.bench.bare_loop"],
         {"SIZER_PROCESSING_GUARANTEE": "exactly_once"}),
        # at the retry backoff of the worker's producer with one transaction per worker
        # (`faust_compat.worker_transactions.RETRY_BACKOFF_MS`, 20 ms) and aiokafka's marker
        # wait, 20 ms (the worker's grows from 2 to 20 ms: `group_commit.MARKER_WAITS_S`)
        ("(0) bare consume-and-produce loop, exactly-once, one transaction per batch",
         [PYTHON, "-m", "streams.bench.bare_loop"],
         {"SIZER_PROCESSING_GUARANTEE": "exactly_once", "BENCH_TRANSACTIONS": "per_batch",
          "BENCH_MARKER_WAIT_MS": "20"}),
        ("(1) plain aiokafka loop", [PYTHON, "-m", "streams.bench.plain_loop"], {}),
        ("(2) straightforward Faust agent", [PYTHON, "-m", "streams.bench.naive_agent"], {}),
        ("(3) worker, at-least-once", WORKER, AT_LEAST_ONCE),
        ("(3) worker, exactly-once, one transaction per partition", WORKER,
         {"SIZER_PROCESSING_GUARANTEE": "exactly_once", "SIZER_TRANSACTIONS": "per_partition"}),
        ("(3) worker, exactly-once, one transaction per worker", WORKER,
         {"SIZER_PROCESSING_GUARANTEE": "exactly_once", "SIZER_TRANSACTIONS": "per_worker"}),
        (f"(4) Quix Streams, at-least-once, commit {interval:g} s", quix,
         {"SIZER_PROCESSING_GUARANTEE": "at_least_once", "SIZER_COMMIT_INTERVAL_S": str(interval)}),
        *exactly_once,
    ]


@dataclass
class Figures:
    name: str
    rate: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    latency_samples: int = 0
    hog_p50_ms: float = float("nan")
    hog_p99_ms: float = float("nan")
    hog_samples: int = 0
    rss_mb: float = 0.0
    failures: list[str] = field(default_factory=list)  # "run: why (log)", the run's figures left out
    # the worker's own account of the latency run (its /metrics): batch and commit times
    stages: dict[str, "Stage"] = field(default_factory=dict)


@dataclass
class Stage:
    """One of the worker's timing histograms over a run: how many, mean, p50, p99 (ms,
    interpolated within buckets as Prometheus' histogram_quantile does)."""

    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets,
    +Inf last: linear within the bucket the rank falls in; the highest finite bound
    when it falls in +Inf; nan with no observations."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def worker_stages(text: str, names: Sequence[str] = ("sizer_batch_seconds", "sizer_commit_seconds",
                                                     "sizer_gc_pause_seconds")) -> dict[str, Stage]:
    """The `names` histograms of a /metrics page, as Stages (ms); a labelled one (the
    collections, by generation) as one Stage per label value, `name{value}`."""
    from prometheus_client.parser import text_string_to_metric_families

    stages = {}
    for family in text_string_to_metric_families(text):
        if family.name not in names:
            continue
        series: dict[str, list[Any]] = {}
        for s in family.samples:
            label = ",".join(v for k, v in sorted(s.labels.items()) if k != "le")
            series.setdefault(f"{family.name}{{{label}}}" if label else family.name, []).append(s)
        for name, samples in series.items():
            buckets = sorted((float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket"))
            count = next((s.value for s in samples if s.name.endswith("_count")), 0.0)
            total = next((s.value for s in samples if s.name.endswith("_sum")), 0.0)
            stages[name] = Stage(int(count), 1000 * total / count if count else float("nan"),
                                 1000 * histogram_quantile(0.50, buckets), 1000 * histogram_quantile(0.99, buckets))
    return stages


@dataclass
class ScalePoint:
    portfolios: int
    rate: float = float("nan")
    rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


class Contender:
    """One contender process on fresh topics and a fresh group."""

    def __init__(self, client: ClientConfig, command: list[str], env: dict[str, str], workdir: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
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
        return proc_status_mb(self.process.pid, "VmHWM") if self.alive() else 0.0  # type: ignore[union-attr]

    def rss_mb(self) -> float:
        return proc_status_mb(self.process.pid, "VmRSS") if self.alive() else 0.0  # type: ignore[union-attr]

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
        """Its topics and the framework's (faust's changelogs and assignor, Quix'
        `changelog__<group>--...`), so that runs do not pile up partitions on the
        broker (thousands of them slow it down): every name with its tag in it."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.client.options())
        await admin.start()
        try:
            names = [name for name in await admin.list_topics() if self.tag in name]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stages(self) -> dict[str, Stage]:
        """The worker's batch and commit times so far, from its /metrics (empty for a
        contender that serves none)."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.env['SIZER_WEB_PORT']}/metrics", timeout=5) as page:
                return worker_stages(page.read().decode())
        except OSError:
            return {}

    def check_alive(self) -> None:
        if not self.alive():
            log = (self.workdir / "contender.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(self.command)} exited:\n{log}")


def proc_status_mb(pid: int, field_name: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in MB; 0 when absent."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def cpu_hog() -> Iterator[subprocess.Popen[bytes]]:
    """A busy loop in its own process for the duration, pinned to the last CPU (the
    'other core' of a two-core machine: the scheduler moves everything else off it)."""
    hog = subprocess.Popen([PYTHON, "-c", "while True: pass"])
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(hog.pid, {cpus[-1]})
        yield hog
    finally:
        hog.kill()
        hog.wait()


def signals_only(count: int, seed: int) -> list[tuple[str, Any]]:
    return [(role, value) for role, value in session(count, portfolios=100, seed=seed) if role != "fills"]


async def committed_count(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    """Decisions readable under read_committed (transaction markers count too: a few per second)."""
    ends = await consumer.end_offsets(tps)
    return sum(ends.values())


async def throughput(contender: Contender, entries: Iterable[tuple[str, Any]], backlog: int,
                     timeout_s: float) -> float:
    """Publish `entries` (with `backlog` signals among them), start the contender and
    measure decisions/s between 10% and 90% of `backlog` readable; 0 if it never got there."""
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


async def latency(contender: Contender, rate: int, seconds: float, hog: bool = False,
                  readable: list[float] | None = None) -> list[float]:
    """Offer `rate` signals a second for `seconds`; send-to-decision latencies in ms.
    `hog`: a CPU hog spins from the end of the warm-up to the end of the run.
    `readable`, when given, gets the rate (decisions a second) at which the measured
    signals' decisions became readable, from the first offered to the last read."""
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

    with contextlib.ExitStack() as hogging:
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
            if hog:
                hogging.enter_context(cpu_hog())
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
    measured = [s for s in received if sent[s] >= measured_from]
    if readable is not None and measured:
        last = max(received[s] for s in measured)
        readable.append(len(measured) / (last - measured_from) if last > measured_from else float("nan"))
    return [(received[s] - sent[s]) * 1000 for s in measured]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(value: float, base: float | None) -> str:
    """`value / base` to two places, '-' when either is missing or the base is zero."""
    if base is None or base != base or not base or value != value:
        return "-"
    return f"{value / base:.2f}"


def rss_per_thousand(points: list[tuple[int, float]]) -> float:
    """MB of peak RSS per 1,000 portfolios between the smallest and the largest count of
    (portfolios, peak RSS MB) points; nan with fewer than two distinct counts."""
    if len({p for p, _ in points}) < 2:
        return float("nan")
    (low, low_mb), (high, high_mb) = min(points), max(points)
    return (high_mb - low_mb) / ((high - low) / 1000)


def scale_backlog(backlog: int, portfolios: Iterable[int]) -> int:
    """The scale run's backlog: at least `backlog` and twice the largest portfolio count,
    so that with signals going round the portfolios every one is touched twice."""
    return max(backlog, 2 * max(portfolios))


def measure(client: ClientConfig, name: str, command: list[str], env: dict[str, str], args: argparse.Namespace,
            workdir: Path) -> Figures:
    """The contender's runs, each on a fresh process and topics. A run whose contender
    exits or never answers is recorded in `failures` and the others still run."""
    figures = Figures(name)
    if "throughput" in args.runs:
        contender = Contender(client, command, env, workdir)
        try:
            figures.rate = asyncio.run(throughput(contender, signals_only(args.backlog, seed=11), args.backlog,
                                                  args.timeout))
            figures.rss_mb = contender.peak_rss_mb()
        except RuntimeError as exc:
            figures.failures.append(f"throughput: {str(exc).splitlines()[0]} (log {contender.workdir})")
        finally:
            contender.close()
    for hog in (False, True):
        run = "hog" if hog else "latency"
        if run not in args.runs:
            continue
        contender = Contender(client, command, env, workdir)
        try:
            samples = asyncio.run(latency(contender, args.rate, args.seconds, hog=hog))
            p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
            if hog:
                figures.hog_samples, figures.hog_p50_ms, figures.hog_p99_ms = len(samples), p50, p99
            else:
                figures.latency_samples, figures.p50_ms, figures.p99_ms = len(samples), p50, p99
                figures.stages = contender.stages()
            figures.rss_mb = max(figures.rss_mb, contender.peak_rss_mb())
        except RuntimeError as exc:
            figures.failures.append(f"{run}: {str(exc).splitlines()[0]} (log {contender.workdir})")
        finally:
            contender.close()
    return figures


def measure_scale(client: ClientConfig, portfolios: int, backlog: int, args: argparse.Namespace,
                  workdir: Path) -> ScalePoint:
    point = ScalePoint(portfolios)
    contender = Contender(client, WORKER, SCALE_SETTINGS, workdir)
    try:
        # room for a slower machine: the backlog is larger than the throughput run's
        timeout = max(args.timeout, backlog / 1000)
        point.rate = asyncio.run(throughput(contender, spread_signals(backlog, portfolios, seed=13), backlog,
                                            timeout))
        point.rss_mb = contender.peak_rss_mb()
    finally:
        contender.close()
    return point


@dataclass
class CurvePoint:
    rate: int
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    readable: float = float("nan")


def measure_curve(client: ClientConfig, rates: Iterable[int], args: argparse.Namespace,
                  workdir: Path) -> list[CurvePoint]:
    points = []
    for rate in rates:
        print(f"measuring curve, the worker exactly-once at {rate:,} signals/s ...", file=sys.stderr, flush=True)
        point = CurvePoint(rate)
        contender = Contender(client, WORKER, {"SIZER_PROCESSING_GUARANTEE": "exactly_once"}, workdir)
        try:
            readable: list[float] = []
            samples = asyncio.run(latency(contender, rate, args.seconds, readable=readable))
            point.p50_ms, point.p99_ms = percentile(samples, 0.50), percentile(samples, 0.99)
            point.readable = readable[0] if readable else float("nan")
        except Exception as exc:  # noqa: BLE001 - one failed point must not lose the others
            print(f"curve at {rate:,}/s failed: {exc!r} (logs in {contender.workdir})", file=sys.stderr)
        finally:
            contender.close()
        points.append(point)
    return points


def print_curve(points: list[CurvePoint], floor_s: float) -> None:
    print(f"\ncurve: the worker, exactly-once, eager commit floor {floor_s * 1000:g} ms\n")
    print(f"| {'offered /s':>10} | {'readable /s':>11} | {'p50 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 11}:|{'-' * 12}:|{'-' * 8}:|{'-' * 8}:|")
    for p in points:
        print(f"| {p.rate:>10,} | {p.readable:>11,.0f} | {p.p50_ms:>7.1f} | {p.p99_ms:>7.1f} |")


def print_table(results: list[Figures]) -> None:
    bare = next((r.rate for r in results if r.name.startswith("(0)")), None)
    plain = next((r.rate for r in results if r.name.startswith("(1)")), None)
    width = max([33, *(len(r.name) for r in results)])
    print(f"| {'contender':<{width}} | {'signals/s':>9} | {'x (0)':>6} | {'x (1)':>6} | {'p50 ms':>7} | "
          f"{'p99 ms':>7} | {'p50 hog':>7} | {'p99 hog':>7} | {'peak RSS MB':>11} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}:|{'-' * 7}:|{'-' * 7}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|"
          f"{'-' * 12}:|")
    for r in results:
        rate = f"{r.rate:,.0f}" if r.rate == r.rate else "-"
        print(f"| {r.name:<{width}} | {rate:>9} | {ratio(r.rate, bare):>6} | {ratio(r.rate, plain):>6} | "
              f"{r.p50_ms:>7.1f} | {r.p99_ms:>7.1f} | {r.hog_p50_ms:>7.1f} | {r.hog_p99_ms:>7.1f} | "
              f"{r.rss_mb:>11.0f} |")
    for r in results:
        for failure in r.failures:
            print(f"{r.name} failed, {failure}")
    staged = [r for r in results if r.stages]
    if staged:
        print("\nthe worker's own account of its latency run (/metrics, warm-up included; p50/p99 "
              "interpolated within buckets):\n")
        print(f"| {'contender':<{width}} | {'stage':<7} | {'count':>6} | {'mean ms':>7} | {'p50 ms':>7} | "
              f"{'p99 ms':>7} |")
        print(f"|{'-' * (width + 2)}|{'-' * 9}|{'-' * 7}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|")
        for r in staged:
            for name, stage in r.stages.items():
                label = name.removeprefix("sizer_").replace("_seconds", "").replace("_pause", "")
                print(f"| {r.name:<{width}} | {label:<7} | {stage.count:>6,} | {stage.mean_ms:>7.1f} | "
                      f"{stage.p50_ms:>7.1f} | {stage.p99_ms:>7.1f} |")


def print_scale(points: list[ScalePoint], backlog: int) -> None:
    print(f"\nscale: the worker, at-least-once, {backlog:,} signals spread round the portfolios, reservations "
          f"lapsing after 1 s of event time (every signal accepted at every count)\n")
    smallest = points[0].rate if points else None
    print(f"| {'portfolios':>10} | {'signals/s':>9} | {'x first':>7} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 11}:|{'-' * 10}:|{'-' * 8}:|{'-' * 12}:|")
    for p in points:
        print(f"| {p.portfolios:>10,} | {p.rate:>9,.0f} | {ratio(p.rate, smallest):>7} | {p.rss_mb:>11.0f} |")
    per_thousand = rss_per_thousand([(p.portfolios, p.rss_mb) for p in points])
    if per_thousand == per_thousand:
        low, high = min(p.portfolios for p in points), max(p.portfolios for p in points)
        print(f"\npeak RSS per 1,000 portfolios: {per_thousand:.2f} MB (from {low:,} to {high:,} portfolios)")


def print_medians(results: list[Figures], rounds: int) -> None:
    """Each contender's median (min-max) over its alternated runs."""
    import statistics

    def spread(values: list[float], digits: int) -> str:
        values = [v for v in values if v == v]
        if not values:
            return "-"
        return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"

    print(f"\nmedians (min-max) over {rounds} alternated runs of each contender:\n")
    print(f"| {'contender':<72} | {'signals/s':>26} | {'p50 ms':>19} | {'p99 ms':>21} |")
    print(f"|{'-' * 74}|{'-' * 27}:|{'-' * 20}:|{'-' * 22}:|")
    for name in dict.fromkeys(f.name for f in results):
        mine = [f for f in results if f.name == name]
        print(f"| {name:<72} | {spread([f.rate for f in mine], 0):>26} | {spread([f.p50_ms for f in mine], 1):>19} | "
              f"{spread([f.p99_ms for f in mine], 1):>21} |")


def parse_runs(text: str) -> tuple[str, ...]:
    runs = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        raise argparse.ArgumentTypeError(f"runs are a comma-separated choice of {', '.join(RUNS)}, not {text!r}")
    return runs


def parse_rounds(text: str) -> int:
    counts = parse_counts(text)
    if len(counts) != 1:
        raise argparse.ArgumentTypeError(f"one integer >= 1, not {text!r}")
    return counts[0]


def parse_switches(text: str) -> tuple[bool, ...]:
    """`on,off` -> (True, False): each of `on` and `off` at most once, in the order given."""
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    if not words or set(words) - {"on", "off"} or len(set(words)) != len(words):
        raise argparse.ArgumentTypeError(f"a comma-separated choice of on and off, each once, not {text!r}")
    return tuple(w == "on" for w in words)


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(c.replace("_", "")) for c in text.split(",") if c.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"counts are comma-separated integers >= 1, not {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.stream", description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=60_000, help="signals for the throughput run")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds at most per throughput run")
    parser.add_argument("--rate", type=int, default=1000, help="offered signals per second for latency")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency run")
    parser.add_argument("--only", default="",
                        help="run only contenders whose name contains this (or one of several separated by |)")
    parser.add_argument("--repeat", type=parse_rounds, default=1,
                        help="run the contenders' runs this many times, in reverse order every other time "
                             "(alternated runs), and print each contender's medians (default 1)")
    parser.add_argument("--runs", type=parse_runs, default=None,
                        help=f"comma-separated runs among {','.join(RUNS)} (default: all; with --only, all but "
                             "scale and curve, the worker's alone, and transactions, (0)'s alone)")
    parser.add_argument("--portfolios", type=parse_counts, default=SCALE_PORTFOLIOS,
                        help="portfolio counts of the scale run (default: 100,10000,100000)")
    parser.add_argument("--curve-rates", type=parse_counts, default=CURVE_RATES,
                        help="offered loads of the curve run (default: 200,500,1000,2000,4000,8000)")
    parser.add_argument("--scale-backlog", type=int, default=0,
                        help="signals for each scale run (default: the backlog, at least twice the largest count)")
    parser.add_argument("--rounds", type=parse_rounds, default=1,
                        help="rounds of the transactions run, each form and setting once per round (default 1)")
    parser.add_argument("--marker-waits", type=parse_counts, default=MARKER_WAITS_MS,
                        help="marker waits (ms) of the transactions run (default: 20,2)")
    parser.add_argument("--verification", type=parse_switches, default=VERIFICATIONS,
                        help="the broker's transaction.partition.verification.enable in the transactions run "
                             "(default: on,off)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = tuple(r for r in RUNS if r not in OWN_RUNS) if args.only else RUNS
    kafka = load_settings()
    client = kafka.for_role("bench")
    bootstrap = client.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="sizer-bench-"))
    results: list[Figures] = []
    skipped: list[str] = []
    per_contender = [r for r in args.runs if r not in OWN_RUNS]
    chosen = [c for c in contenders(kafka) if not args.only or any(part in c[0] for part in args.only.split("|"))]
    for round_ in range(args.repeat if per_contender else 0):
        for name, command, env in (chosen if round_ % 2 == 0 else list(reversed(chosen))):
            if not Path(command[0]).exists():
                if round_ == 0:
                    skipped.append(f"{name}: {command[0]} not found (`make bench` installs it)")
                continue
            print(f"measuring {name} ({', '.join(per_contender)}), round {round_ + 1}/{args.repeat} ...",
                  file=sys.stderr, flush=True)
            results.append(measure(client, name, command, env, args, workdir))
    points: list[ScalePoint] = []
    backlog = args.scale_backlog or scale_backlog(args.backlog, args.portfolios)
    if "scale" in args.runs:
        for portfolios in args.portfolios:
            print(f"measuring scale, {portfolios:,} portfolios, {backlog:,} signals ...", file=sys.stderr,
                  flush=True)
            points.append(measure_scale(client, portfolios, backlog, args, workdir))
    curve = measure_curve(client, args.curve_rates, args, workdir) if "curve" in args.runs else []
    variants = measure_transactions(client, args, workdir) if "transactions" in args.runs else []
    parts = [f"broker {bootstrap}", f"runs {','.join(args.runs)}"]
    if "throughput" in args.runs:
        parts.append(f"backlog {args.backlog:,} signals")
    if "latency" in args.runs or "hog" in args.runs or "transactions" in args.runs:
        parts.append(f"latency at {args.rate:,} signals/s for {args.seconds:g} s")
    if "hog" in args.runs:
        parts.append("hog: a busy loop on the last CPU")
    print(f"\n{'; '.join(parts)}; logs in {workdir}\n")
    if results:
        print_table(results)
    if args.repeat > 1 and results:
        print_medians(results, args.repeat)
    for note in skipped:
        print(f"skipped {note}")
    if points:
        print_scale(points, backlog)
    if curve:
        print_curve(curve, kafka.eager_commit_floor_s)
    if variants:
        print_transactions(variants, args.rounds, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
