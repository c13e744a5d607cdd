"""`make soak`: the worker under a steady load with fills, minute by minute, for memory growth.

The worker (exactly-once unless `--guarantee at_least_once`) on fresh topics is
offered signals at a fixed rate (1,000/s by default) round its portfolios, and a
simulated execution desk answers the orders it reads back from the orders topic
(read_committed), so that reservations are made and released, legs filled one by
one and positions closed:

- about 15% of orders are canceled, the rest filled leg by leg, half of the
  legs in two parts (a partial fill, then the final one), 50-500 ms after the
  order is read;
- every filled order's position is closed 0.5-2 s after its last fill with a
  random realized PnL (wins and losses move the streak and equity), so that the
  portfolio cap keeps room and orders keep coming (an order left open would hold
  its reservation for good: the conviction preset sets no reservation TTL);
- 3% of fill events are sent twice (the same event id) and 1% of signals resent
  (the same signal id): the worker's dedupe windows see repeats all along.

Every minute it prints the worker's RSS (VmRSS) and its parts by kind of mapping
(the brk heap, anonymous mappings, mapped files: `rss_parts_mb`), what the worker
says it holds (RocksDB's memtables and table readers, glibc's thread arenas and
mmapped blocks, from its /metrics: `accounts_mb`), the p99 of the send-to-decision
latency of the decisions read in that minute, the worker's consumer lag (signals
and fills, end offset less committed offset) and what was sent. At the end: the
RSS slope over the minutes after the warm-up (least squares, MB/min) and whether
it is within noise of zero (its size at most twice its standard error), then each
part's slope: which kind of memory grows.

    python -m streams.bench.soak [--minutes 30] [--rate 1000] [--portfolios 100]

Uses KAFKA_BOOTSTRAP_SERVERS (the Makefile starts the local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import random
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bench import run_bench
from streams.bench.generate import PRICES
from streams.bench.stream import WORKER, Contender, percentile, signals_only
from streams.kafka.io import publish
from streams.worker.settings import load_settings
from streams.wire import decimals

WARM_UP_TIMEOUT_S = 120.0
MISSING_AFTER_S = 60.0  # a signal with no decision this long after it was sent counts as missing


# --------------------------------------------------------------------------- the trend

@dataclass(frozen=True)
class Trend:
    """A least-squares line through (minute, MB) points."""

    slope: float  # MB per minute
    stderr: float  # standard error of the slope; nan with fewer than three points
    points: int

    @property
    def within_noise(self) -> bool | None:
        """|slope| <= 2 standard errors (about a 95% interval around zero); None when
        there are too few points to tell."""
        if math.isnan(self.stderr):
            return None
        return abs(self.slope) <= 2 * self.stderr


def least_squares(points: Sequence[tuple[float, float]]) -> Trend:
    """The ordinary least-squares slope of y on x and its standard error.

    `points`: (x, y) pairs, at least two distinct x. The standard error is
    sqrt(SSR / (n - 2) / Sxx); nan with two points (no residual degrees of freedom).
    Raises ValueError with fewer than two points or a single distinct x."""
    n = len(points)
    if n < 2:
        raise ValueError(f"a slope needs at least two points, not {n}")
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        raise ValueError("a slope needs at least two distinct x")
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    if n == 2:
        return Trend(slope, float("nan"), n)
    intercept = mean_y - slope * mean_x
    ssr = sum((y - (intercept + slope * x)) ** 2 for x, y in points)
    return Trend(slope, math.sqrt(ssr / (n - 2) / sxx), n)


def rss_trend(rss_by_minute: Sequence[tuple[int, float]], warm_up_minutes: int) -> Trend | None:
    """The RSS slope (MB/min) over the minutes after `warm_up_minutes`; None with fewer
    than two of them."""
    after = [(float(m), mb) for m, mb in rss_by_minute if m > warm_up_minutes]
    return least_squares(after) if len(after) >= 2 else None


def default_warm_up(minutes: int) -> int:
    """Minutes left out of the slope: 5 for a long soak, a third of a short one."""
    return min(5, minutes // 3)


# --------------------------------------------------------------------------- the desk

class Desk:
    """A simulated execution desk: fill, cancel and close events for the orders it is
    shown, each due at a time in the future (seconds on the monotonic clock)."""

    def __init__(self, seed: int = 17) -> None:
        self._rng = random.Random(seed)
        self._due: list[tuple[float, int, bytes, dict[str, Any]]] = []
        self._seq = 0
        self.events = 0

    def _at(self, when: float, portfolio_id: str, value: dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._due, (when, self._seq, portfolio_id.encode(), value))

    def _event_id(self) -> str:
        self.events += 1
        return f"soak-f-{self.events}"

    def on_order(self, order: dict[str, Any], now: float) -> None:
        rng = self._rng
        portfolio, order_id = order["portfolio_id"], order["order_id"]
        if rng.random() < 0.15:
            self._at(now + rng.uniform(0.05, 0.3), portfolio,
                     {"event_id": self._event_id(), "portfolio_id": portfolio, "type": "order_canceled",
                      "order_id": order_id})
            return
        last = now
        price = order["price"]
        for leg in order["legs"]:
            qty = Decimal(leg["qty"])
            parts = [qty / 2, qty - qty / 2] if rng.random() < 0.5 else [qty]
            for index, part in enumerate(parts):
                last = max(last, now + rng.uniform(0.05, 0.5)) + 0.001 * index
                fill = {"event_id": self._event_id(), "portfolio_id": portfolio, "type": "order_filled",
                        "order_id": order_id, "symbol": order["symbol"], "venue_symbol": leg["venue_symbol"],
                        "qty": str(part), "price": price, "final": index == len(parts) - 1}
                self._at(last, portfolio, fill)
                if rng.random() < 0.03:
                    self._at(last + 0.01, portfolio, dict(fill))  # the same event again
        pnl = (rng.random() - 0.45) * 40
        self._at(last + rng.uniform(0.5, 2.0), portfolio,
                 {"event_id": self._event_id(), "portfolio_id": portfolio, "type": "position_closed",
                  "symbol": order["symbol"], "qty": order["qty"], "price": price, "realized_pnl": f"{pnl:.2f}"})

    def due(self, now: float) -> list[tuple[bytes, dict[str, Any]]]:
        """The events due by `now`, oldest first."""
        out = []
        while self._due and self._due[0][0] <= now:
            _, _, key, value = heapq.heappop(self._due)
            out.append((key, value))
        return out


# --------------------------------------------------------------------------- the run

@dataclass
class Minute:
    minute: int
    rss_mb: float
    p99_ms: float
    decisions: int
    lag: int
    signals: int
    fills: int
    orders: int
    missing: int
    parts: dict[str, float] = field(default_factory=dict)  # RSS by kind of mapping, MB (`rss_parts_mb`)
    accounts: dict[str, float] = field(default_factory=dict)  # the worker's own account, MB (`accounts_mb`)


RSS_PARTS = ("heap", "anon", "files")
# what the worker says it holds (its /metrics), MB: RocksDB's memtables and table readers
# over every table, glibc's thread arenas and mmapped blocks (`streams.worker.memory`)
ACCOUNTS = {"memtab": ("sizer_store_memory_bytes", {"kind": "memtables"}),
            "readers": ("sizer_store_memory_bytes", {"kind": "table_readers"}),
            "thr": ("sizer_malloc_bytes", {"arena": "threads", "kind": "system"}),
            "mmap": ("sizer_malloc_bytes", {"arena": "mmapped", "kind": "system"})}


def accounts_mb(metrics_text: str) -> dict[str, float]:
    """`ACCOUNTS` summed from a /metrics text, in MB (a family missing: left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            for column, (name, labels) in ACCOUNTS.items():
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found[column] = found.get(column, 0.0) + sample.value / 2**20
    return found


def worker_accounts(port: str) -> dict[str, float]:
    """`accounts_mb` of the worker serving /metrics on `port`; empty when it does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return accounts_mb(answer.read().decode())
    except OSError:
        return {}


def rss_parts_mb(smaps: str) -> dict[str, float]:
    """The resident memory of a /proc/<pid>/smaps text by kind of mapping, in MB:
    `heap` the brk heap (glibc's main malloc arena), `anon` the anonymous mappings
    (glibc's per-thread arenas, which RocksDB's and the interpreter's threads
    allocate from, and every block above the mmap threshold), `files` the mapped
    files (libraries, RocksDB's files). Stacks and the kernel's pages are left out."""
    parts = dict.fromkeys(RSS_PARTS, 0.0)
    kind = None
    for line in smaps.splitlines():
        head = line.split(maxsplit=6)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            path = head[5] if len(head) > 5 else ""
            kind = ("heap" if path == "[heap]" else "anon" if path == "" or path.startswith("[anon")
                    else "files" if path.startswith("/") else None)
        elif kind is not None and line.startswith("Rss:"):
            parts[kind] += int(line.split()[1]) / 1024
    return parts


def process_rss_parts(pid: int | None) -> dict[str, float]:
    """`rss_parts_mb` of a running process; empty when it is gone or unreadable."""
    try:
        return rss_parts_mb(Path(f"/proc/{pid}/smaps").read_text()) if pid else {}
    except OSError:
        return {}


async def consumer_lag(admin: Any, consumer: AIOKafkaConsumer, group: str, tps: list[TopicPartition]) -> int:
    """Records of `tps` not yet committed by `group` (end offset less committed offset)."""
    ends = await consumer.end_offsets(tps)
    committed = await admin.list_consumer_group_offsets(group)
    lag = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
    return lag


async def soak(contender: Contender, args: argparse.Namespace) -> list[Minute]:
    from aiokafka.admin import AIOKafkaAdminClient

    client, topics = contender.client, contender.topics
    await publish(client, topics, signals_only(0, seed=3))  # the instruments
    contender.start()
    consumer = AIOKafkaConsumer(topics.name("decisions"), topics.name("orders"), **client.options(
        isolation_level="read_committed", auto_offset_reset="earliest", fetch_max_wait_ms=5))
    producer = AIOKafkaProducer(**client.options(acks="all", linger_ms=0))
    admin = AIOKafkaAdminClient(**client.options())
    await consumer.start()
    await producer.start()
    await admin.start()
    inputs = [TopicPartition(topics.name(role), p) for role in ("signals", "fills")
              for p in range(topics[role].partitions)]
    signals_topic, fills_topic = topics.name("signals"), topics.name("fills")
    decisions_topic = topics.name("decisions")
    rng = random.Random(args.seed)
    desk = Desk(args.seed + 1)
    pending: dict[str, float] = {}  # signal id -> monotonic send time, until its decision is read
    latencies: list[float] = []  # of the current minute
    counts = {"signals": 0, "fills": 0, "orders": 0, "decisions": 0}
    recent: deque[tuple[bytes, bytes]] = deque(maxlen=1000)
    symbols = list(PRICES)

    def signal_value(n: int) -> tuple[str, bytes, bytes]:
        portfolio = f"p{n % args.portfolios}"
        symbol = rng.choice(symbols)
        price = PRICES[symbol] * (1 + (rng.random() - 0.5) / 50)
        signal_id = f"soak-{n}"
        value = json.dumps({"signal_id": signal_id, "portfolio_id": portfolio, "symbol": symbol,
                            "side": rng.choice(("buy", "sell")), "score": f"{rng.random():.3f}",
                            "price": f"{price:.4f}" if price < 1 else f"{price:.2f}",
                            "ts": int(time.time() * 1000)}).encode()
        return signal_id, portfolio.encode(), value

    async def receive(stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == decisions_topic:
                        sent = pending.pop(json.loads(record.value)["signal_id"], None)
                        if sent is not None:
                            latencies.append((now - sent) * 1000)
                            counts["decisions"] += 1
                    else:
                        counts["orders"] += 1
                        desk.on_order(decimals.loads_output(record.value), now)

    stop = asyncio.Event()
    receiver = asyncio.create_task(receive(stop))
    minutes: list[Minute] = []
    try:
        # warm up: one signal per portfolio, all decided
        for n in range(args.portfolios):
            signal_id, key, value = signal_value(n)
            pending[signal_id] = time.monotonic()
            await producer.send(signals_topic, value, key=key)
        await producer.flush()
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            contender.check_alive()
            await asyncio.sleep(0.2)
        if pending:
            raise RuntimeError(f"the worker decided {args.portfolios - len(pending)} of {args.portfolios} "
                               "warm-up signals")
        latencies.clear()
        counts.update(signals=0, fills=0, orders=0, decisions=0)
        print(f"{'minute':>6} | {'RSS MB':>7} | {'heap':>6} | {'anon':>6} | {'files':>6} | "
              + "".join(f"{column:>7} | " for column in ACCOUNTS) + f"{'p99 ms':>7} | "
              f"{'lag':>6} | {'signals':>7} | {'fills':>6} | "
              f"{'orders':>6} | {'decided':>7} | {'missing':>7}", flush=True)
        interval = 0.01
        per_tick = max(1, int(args.rate * interval))
        start = time.monotonic()
        n = args.portfolios
        tick_no = 0
        for minute in range(1, args.minutes + 1):
            minute_end = start + minute * 60
            while True:
                tick = start + tick_no * interval
                if tick >= minute_end:
                    break
                delay = tick - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tick_no += 1
                for _ in range(per_tick):
                    if recent and rng.random() < 0.01:
                        key, value = recent[rng.randrange(len(recent))]  # a resent signal: a duplicate
                    else:
                        signal_id, key, value = signal_value(n)
                        n += 1
                        pending[signal_id] = time.monotonic()
                        recent.append((key, value))
                    await producer.send(signals_topic, value, key=key)
                    counts["signals"] += 1
                for key, fill in desk.due(time.monotonic()):
                    fill["ts"] = int(time.time() * 1000)
                    await producer.send(fills_topic, json.dumps(fill).encode(), key=key)
                    counts["fills"] += 1
            contender.check_alive()
            now = time.monotonic()
            stale = [s for s, sent in pending.items() if now - sent > MISSING_AFTER_S]
            for signal_id in stale:
                del pending[signal_id]
            row = Minute(minute, contender.rss_mb(), percentile(latencies, 0.99), counts["decisions"],
                         await consumer_lag(admin, consumer, contender.env["SIZER_APP_ID"], inputs),
                         counts["signals"], counts["fills"], counts["orders"], len(stale),
                         process_rss_parts(contender.process.pid if contender.process else None),
                         await asyncio.to_thread(worker_accounts, contender.env["SIZER_WEB_PORT"]))
            minutes.append(row)
            parts = " | ".join(f"{row.parts.get(kind, 0.0):>6.1f}" for kind in RSS_PARTS)
            accounts = "".join(f"{row.accounts.get(column, math.nan):>7.1f} | " for column in ACCOUNTS)
            print(f"{row.minute:>6} | {row.rss_mb:>7.1f} | {parts} | {accounts}{row.p99_ms:>7.1f} | {row.lag:>6,} | "
                  f"{row.signals:>7,} | {row.fills:>6,} | {row.orders:>6,} | {row.decisions:>7,} | "
                  f"{row.missing:>7,}", flush=True)
            latencies.clear()
            counts.update(signals=0, fills=0, orders=0, decisions=0)
    finally:
        stop.set()
        await asyncio.gather(receiver, return_exceptions=True)
        await admin.close()
        await producer.stop()
        await consumer.stop()
    return minutes


def report(minutes: list[Minute], warm_up: int) -> str:
    """The closing lines: the RSS slope after the warm-up and whether it is within noise."""
    trend = rss_trend([(m.minute, m.rss_mb) for m in minutes], warm_up)
    if trend is None:
        return (f"RSS slope: too few minutes after the {warm_up}-minute warm-up (needs two; "
                f"three to judge the noise)")
    line = (f"RSS slope after the {warm_up}-minute warm-up ({trend.points} minutes): "
            f"{trend.slope:+.3f} MB/min")
    verdict = trend.within_noise
    if verdict is None:
        return line + "; noise unknown (needs three minutes after the warm-up)"
    line += (f" ± {trend.stderr:.3f} (standard error): "
             + ("within noise of zero" if verdict else "NOT within noise of zero (more than 2 standard errors)"))
    by_part = {kind: rss_trend([(m.minute, m.parts[kind]) for m in minutes if kind in m.parts], warm_up)
               for kind in RSS_PARTS}
    shown = [f"{kind} {part.slope:+.3f} ± {part.stderr:.3f}" for kind, part in by_part.items()
             if part is not None and not math.isnan(part.stderr)]
    by_account = {column: rss_trend([(m.minute, m.accounts[column]) for m in minutes if column in m.accounts], warm_up)
                  for column in ACCOUNTS}
    told = [f"{column} {part.slope:+.3f} ± {part.stderr:.3f}" for column, part in by_account.items()
            if part is not None and not math.isnan(part.stderr)]
    return (line + ("\nby kind of mapping, MB/min: " + ", ".join(shown) if shown else "")
            + ("\nthe worker's own account, MB/min: " + ", ".join(told) if told else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=30, help="length of the soak (default 30)")
    parser.add_argument("--rate", type=int, default=1000, help="signals offered per second (default 1000)")
    parser.add_argument("--portfolios", type=int, default=100, help="portfolios the signals go round (default 100)")
    parser.add_argument("--warm-up", type=int, default=None,
                        help="minutes left out of the RSS slope (default 5, a third of a soak under 15 minutes)")
    parser.add_argument("--guarantee", choices=("exactly_once", "at_least_once"), default="exactly_once")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.rate < 1 or args.portfolios < 1:
        parser.error("--minutes, --rate and --portfolios must be >= 1")
    warm_up = default_warm_up(args.minutes) if args.warm_up is None else args.warm_up
    client = load_settings().for_role("bench")
    workdir = Path(tempfile.mkdtemp(prefix="sizer-soak-"))
    contender = Contender(client, WORKER, {"SIZER_PROCESSING_GUARANTEE": args.guarantee}, workdir)
    print(f"broker {client.bootstrap}; the worker, {args.guarantee}, {args.rate} signals/s round "
          f"{args.portfolios} portfolios with fills, {args.minutes} min; log in {contender.workdir}\n", flush=True)
    try:
        minutes = asyncio.run(soak(contender, args))
        peak = contender.peak_rss_mb()
    finally:
        contender.close()
    print(f"\npeak RSS {peak:.1f} MB")
    print(report(minutes, warm_up))
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
