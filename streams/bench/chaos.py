"""`make chaos`: exactly-once workers on the local three-broker cluster under a steady
stream with fills, through the faults a platform team meets every week.

The cluster is `deploy/broker/cluster.sh` (replication 3, min.insync.replicas 2,
transaction log 3/2). The run's topics and the workers' changelogs are replicated
3 with min.insync.replicas 2 (SIZER_REPLICATION_FACTOR, SIZER_MIN_INSYNC_REPLICAS). `--workers` exactly-once workers (static members, one standby
replica) share the group; a publisher sends signals (with about one fill event
for two signals) for `--portfolios` portfolios at `--rate` a second throughout,
and a reader notes when each decision becomes readable (read_committed). Then,
in turn, each followed by recovery and `--settle` seconds of steady stream:

1. SIGKILL of the broker leading most `signals` partitions, restarted after 10 s;
2. SIGKILL of the broker that coordinates most of the workers' transactions
   (`__transaction_state`), restarted after 10 s;
3. SIGKILL of one worker, restarted after 3 s (as a supervisor would);
4. a rolling restart of the three brokers (SIGTERM, start, wait for in-sync);
5. a rolling restart of the workers (SIGTERM, start, wait until ready).

Per fault it prints the longest time with no decision at all, the worst
partition's stall (the longest gap between two decisions of one partition) and
the longest wait of a signal sent during the fault for its decision. Then the
counts (signals, decisions, duplicates, missing, orders, dead letters), every
worker exit that was not a fault's, and `sizer audit`'s verdict.

    python -m streams.bench.chaos [--workers 2] [--rate 100] [--portfolios 1000] [--settle 20]
        [--standby 1] [--faults "worker kill,worker rolling restart"]

Runs on the cluster of `deploy/broker/cluster.sh` (its KAFKA_CLUSTER_* settings:
.kafka-cluster on 127.0.0.1:19101-19103 by default), started if it is not running
and left running (`make cluster-stop`). Figures are printed, never asserted on;
`tests/integration/test_chaos.py` runs a short form and asserts the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.bench.cluster import Cluster
from streams.ports import free_port
from streams.bench.generate import session
from streams.kafka.io import encode, read_topic
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import Replication, TopicSet, apply, load_topics

ROOT = Path(__file__).resolve().parents[2]
SIZER = str(Path(sys.executable).with_name("sizer"))
FAULTS = ("broker leader", "transaction coordinator", "worker kill", "broker rolling restart",
          "worker rolling restart")


def java_hash(text: str) -> int:
    """Java's String.hashCode, as Kafka places a transactional id on a partition of
    `__transaction_state` (abs(hashCode) % partitions, abs as `& 0x7fffffff`)."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value & 0x7FFFFFFF


# --------------------------------------------------------------------------- the workers

class Worker:
    """One `sizer worker` process: a static member under its own instance id."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        self.env = {**env, "SIZER_GROUP_INSTANCE_ID": name, "SIZER_DATA_DIR": str(self.workdir / "data"),
                    "SIZER_WEB_PORT": str(self.web_port)}
        self.process: subprocess.Popen[bytes] | None = None
        self.expected_exit = False
        self.exits: list[str] = []  # exits no fault asked for

    def start(self) -> None:
        self.expected_exit = False
        log = open(self.workdir / "worker.log", "ab")
        self.process = subprocess.Popen([SIZER, "worker", "--preset", "conviction"], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.workdir)

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        started = time.monotonic()
        while not self.ready():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s")
            self.check()
            time.sleep(0.1)
        return time.monotonic() - started

    def signal(self, sig: int, timeout_s: float = 60.0) -> float:
        """Send `sig` and wait for the exit; seconds it took."""
        assert self.process is not None
        self.expected_exit = True
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started

    def check(self) -> None:
        """Note an exit no fault asked for."""
        if self.process is not None and not self.expected_exit and self.process.poll() is not None:
            tail = (self.workdir / "worker.log").read_text(errors="replace")[-2000:]
            self.exits.append(f"{self.name} exited {self.process.returncode}: ...{tail}")
            self.expected_exit = True

    def revocations(self) -> int:
        """Rebalances that took partitions from this worker: its log's "rebalance: N
        partitions revoked" lines with N > 0 (a process that starts logs one with 0)."""
        import re

        try:
            text = (self.workdir / "worker.log").read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for count in re.findall(r"rebalance: (\d+) partitions revoked", text) if int(count) > 0)


# --------------------------------------------------------------------------- the stream and what came out

@dataclass
class Timeline:
    """When each signal was sent and when each decision became readable (monotonic s)."""

    sent: dict[str, float] = field(default_factory=dict)
    decided: list[tuple[float, int, str]] = field(default_factory=list)  # (seen, partition, signal id)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gaps(self, start: float, end: float) -> tuple[float, float, float]:
        """(longest time with no decision, worst partition's stall, longest signal-to-
        decision wait of a signal sent in [start, end]), in seconds."""
        with self.lock:
            decided = sorted(self.decided)
            sent = dict(self.sent)
        seen_at = {signal_id: seen for seen, _, signal_id in decided}
        window = [(seen, partition) for seen, partition, _ in decided if start <= seen <= end]

        def longest(times: list[float]) -> float:
            points = [start, *times, end]
            return max(b - a for a, b in zip(points, points[1:]))

        overall = longest([seen for seen, _ in window])
        partitions = {partition for _, partition in window} | {p for _, p, _ in decided}
        worst = max((longest([seen for seen, p in window if p == partition]) for partition in partitions),
                    default=overall)
        waits = [seen_at.get(signal_id, end) - at for signal_id, at in sent.items() if start <= at <= end]
        return overall, worst, max(waits, default=0.0)


class Stream:
    """The publisher and the decision reader, each on its own thread and loop."""

    def __init__(self, client: Any, topics: TopicSet, entries: list[tuple[str, Any]], rate: float,
                 timeline: Timeline) -> None:
        self.client, self.topics, self.entries, self.rate, self.timeline = client, topics, entries, rate, timeline
        self.stop_reading = threading.Event()
        self.stop_publishing = threading.Event()  # set: the entries not yet sent are left out
        self.published = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(self._publish,), daemon=True),
                        threading.Thread(target=self._run, args=(self._read,), daemon=True)]
        for thread in self.threads:
            thread.start()

    def _run(self, job: Callable[[], Any]) -> None:
        try:
            asyncio.run(job())
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.errors.append(exc)

    async def _publish(self) -> None:
        producer = AIOKafkaProducer(**self.client.options(acks="all", enable_idempotence=True, linger_ms=5,
                                                          request_timeout_ms=60_000))
        await producer.start()
        try:
            began = time.monotonic()
            signals = 0
            pending = []
            for role, value in self.entries:
                if self.stop_publishing.is_set():
                    break
                key, payload = encode(role, value)
                if role == "signals":
                    signals += 1
                    delay = began + signals / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    with self.timeline.lock:
                        self.timeline.sent[value["signal_id"]] = time.monotonic()
                pending.append(await producer.send(self.topics.name(role), payload, key=key))
                if len(pending) >= 200:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
            self.published.set()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(self.topics.name("decisions"), **self.client.options(
            group_id=None, isolation_level="read_committed", auto_offset_reset="earliest", fetch_max_wait_ms=20))
        await consumer.start()
        try:
            while not self.stop_reading.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                with self.timeline.lock:
                    for tp, records in batches.items():
                        for record in records:
                            self.timeline.decided.append((now, tp.partition,
                                                          json.loads(record.value)["signal_id"]))
        finally:
            await consumer.stop()


# --------------------------------------------------------------------------- the run

@dataclass
class FaultFigures:
    name: str
    no_decision_s: float
    worst_partition_s: float
    longest_wait_s: float
    notes: str = ""


@dataclass
class Result:
    faults: list[FaultFigures]
    signals: int
    decisions: int
    duplicates: int
    missing: int
    orders: int
    duplicate_orders: int
    dead_letters: int
    audit_code: int
    audit: dict[str, Any]
    exits: list[str]
    rebalances_in_worker_restarts: int


async def leaders(client: Any, topic: str) -> dict[int, int]:
    """partition -> the node id leading it."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client.options())
    await admin.start()
    try:
        described, = await admin.describe_topics([topic])
        return {entry["partition"]: entry["leader"] for entry in described["partitions"]}
    finally:
        await admin.close()


async def in_sync(client: Any, topics: list[str]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client.options(request_timeout_ms=5000))
    await admin.start()
    try:
        for described in await admin.describe_topics(topics):
            for entry in described.get("partitions") or ():
                if len(entry.get("isr") or ()) < len(entry.get("replicas") or ()):
                    return False
        return True
    finally:
        await admin.close()


def wait_in_sync(client: Any, topics: list[str], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if asyncio.run(in_sync(client, topics)):
                return
        except Exception:  # noqa: BLE001 - a broker still coming back: ask again
            pass
        time.sleep(1.0)


def most_common(values: Iterable[int]) -> int:
    return Counter(values).most_common(1)[0][0]


def run_chaos(cluster: Cluster, workdir: Path, workers: int = 2, rate: float = 100.0, portfolios: int = 1000,
              settle_s: float = 20.0, faults: tuple[str, ...] = FAULTS, standby: int = 1,
              say: Callable[[str], None] = print) -> Result:
    """Run the scenario (see the module) and return its figures and counts."""
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"chaos{tag}-", f"chaos-{tag}"
    # replication 3, min.insync.replicas 2: every topic and the workers' changelogs
    topics = load_topics(ROOT / "topics" / "topics.toml", prefix, replication=Replication(3, 2))
    client = ConnectionSettings(bootstrap=cluster.bootstrap).for_role("chaos")
    asyncio.run(apply(client, topics))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap, "SIZER_TOPIC_PREFIX": prefix,
           "SIZER_APP_ID": app_id, "SIZER_REPLICATION_FACTOR": "3", "SIZER_MIN_INSYNC_REPLICAS": "2",
           "SIZER_STANDBY_REPLICAS": str(standby), "SIZER_PROCESSING_GUARANTEE": "exactly_once"}
    pool = [Worker(f"{app_id}-{n}", workdir, env) for n in range(workers)]
    for worker in pool:
        worker.start()
    for worker in pool:
        worker.wait_ready()
    say(f"chaos: {workers} exactly-once workers ({standby} standby replicas) ready on {cluster.bootstrap}")

    # enough signals for the whole run at `rate`: each fault takes about a minute
    seconds = 40 + len(faults) * (settle_s + 45)
    entries = list(session(int(rate * seconds), portfolios=portfolios, seed=26))
    timeline = Timeline()
    stream = Stream(client, topics, entries, rate, timeline)
    internal = [topics.name(role) for role in ("signals", "fills", "decisions", "orders")] + [
        "__transaction_state", "__consumer_offsets"]
    figures: list[FaultFigures] = []
    rebalances = 0

    def watch(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for worker in pool:
                worker.check()
            time.sleep(0.5)

    def node_leading_signals() -> int:
        return most_common(asyncio.run(leaders(client, topics.name("signals"))).values())

    def transaction_coordinator() -> int:
        owners = asyncio.run(leaders(client, "__transaction_state"))
        width = topics["signals"].partitions
        tids = [f"{app_id}-{group}-{p}" for group in (0, 1) for p in range(width)]
        return most_common(owners[java_hash(tid) % len(owners)] for tid in tids)

    watch(15.0)  # a steady stream first
    for fault in faults:
        started = time.monotonic()
        notes = ""
        if fault in ("broker leader", "transaction coordinator"):
            node = node_leading_signals() if fault == "broker leader" else transaction_coordinator()
            cluster.kill(node)
            watch(10.0)
            cluster.start(node)
            wait_in_sync(client, internal)
            notes = f"node {node}"
        elif fault == "worker kill":
            victim = pool[0]
            victim.signal(signal.SIGKILL)
            watch(3.0)
            victim.start()
            victim.wait_ready()
            notes = victim.name
        elif fault == "broker rolling restart":
            for node in (1, 2, 3):
                cluster.stop(node)
                cluster.start(node)
                wait_in_sync(client, internal)
        elif fault == "worker rolling restart":
            stops = []
            before = sum(worker.revocations() for worker in pool)
            for worker in pool:
                stops.append(worker.signal(signal.SIGTERM))
                worker.start()
                stops.append(-worker.wait_ready())
            rebalances = sum(worker.revocations() for worker in pool) - before
            notes = (f"stops {', '.join(f'{s:.1f}' for s in stops[::2])} s, back ready in "
                     f"{', '.join(f'{-s:.1f}' for s in stops[1::2])} s; {rebalances} revocations")
        watch(settle_s)
        ended = time.monotonic()
        overall, worst, wait = timeline.gaps(started, ended)
        figures.append(FaultFigures(fault, overall, worst, wait, notes))
        say(f"  {fault:<24} no decision {overall:6.1f} s   worst partition {worst:6.1f} s   "
            f"longest wait {wait:6.1f} s   {notes}")

    # the faults are over: what is not yet sent is not needed (the stream was sized
    # for the slowest run), and every signal sent is waited for
    stream.stop_publishing.set()
    stream.published.wait()
    with timeline.lock:
        sent_ids = set(timeline.sent)
    signal_count = len(sent_ids)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with timeline.lock:
            if len({s for _, _, s in timeline.decided}) >= signal_count:
                break
        watch(1.0)
    stream.stop_reading.set()
    for thread in stream.threads:
        thread.join(30)
    if stream.errors:
        raise RuntimeError(f"the stream stopped: {stream.errors[0]!r}")

    decisions = asyncio.run(read_topic(client, topics.name("decisions"), topics["decisions"].partitions))
    by_signal = Counter(record.json()["signal_id"] for record in decisions)
    orders = asyncio.run(read_topic(client, topics.name("orders"), topics["orders"].partitions))
    order_ids = Counter(record.json()["order_id"] for record in orders)
    dead = asyncio.run(read_topic(client, topics.name("dlq"), topics["dlq"].partitions))
    audit = subprocess.run([SIZER, "audit", "--json"], env=env, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(audit.stdout)
    except ValueError:
        report = {"error": (audit.stderr or audit.stdout)[-2000:]}
    for worker in pool:
        worker.check()
        if worker.process is not None and worker.process.poll() is None:
            worker.signal(signal.SIGTERM)
    return Result(
        faults=figures, signals=signal_count, decisions=len(decisions),
        duplicates=sum(n - 1 for n in by_signal.values() if n > 1),
        missing=len(sent_ids - set(by_signal)), orders=len(orders),
        duplicate_orders=sum(n - 1 for n in order_ids.values() if n > 1), dead_letters=len(dead),
        audit_code=audit.returncode, audit=report, exits=[e for w in pool for e in w.exits],
        rebalances_in_worker_restarts=rebalances)


def report(result: Result) -> str:
    lines = ["", f"{'fault':<26}{'no decision':>13}{'worst partition':>17}{'longest wait':>14}"]
    for f in result.faults:
        lines.append(f"{f.name:<26}{f.no_decision_s:>11.1f} s{f.worst_partition_s:>15.1f} s"
                     f"{f.longest_wait_s:>12.1f} s   {f.notes}")
    audit = result.audit
    verdict = "OK" if result.audit_code == 0 else f"FAILED (exit {result.audit_code})"
    lines += ["",
              f"signals {result.signals}, decisions {result.decisions}, duplicates {result.duplicates}, "
              f"missing {result.missing}, orders {result.orders} (duplicate ids {result.duplicate_orders}), "
              f"dead letters {result.dead_letters}",
              f"sizer audit: {verdict}, verified {audit.get('verified')}, mismatches {len(audit.get('mismatches') or [])}",
              f"worker exits no fault asked for: {len(result.exits)}"]
    lines += [f"  {exit_}" for exit_ in result.exits]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0, help="signals per second")
    parser.add_argument("--portfolios", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of steady stream after each fault")
    parser.add_argument("--standby", type=int, default=1, help="standby replicas (SIZER_STANDBY_REPLICAS)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, in order, from: {', '.join(FAULTS)}")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the workers' logs in this directory (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    faults = tuple(name.strip() for name in args.faults.split(",") if name.strip())
    unknown = [name for name in faults if name not in FAULTS]
    if unknown:
        parser.error(f"--faults: unknown {', '.join(unknown)} (known: {', '.join(FAULTS)})")
    import tempfile

    from streams.bench import run_bench

    def run() -> int:
        cluster = Cluster.at()
        cluster.start()
        with tempfile.TemporaryDirectory(prefix="sizer-chaos-") as workdir:
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
            result = run_chaos(cluster, args.logs or Path(workdir), args.workers, args.rate, args.portfolios,
                               args.settle, faults, args.standby)
        print(report(result))
        return 0 if (result.audit_code, result.duplicates, result.missing, result.exits) == (0, 0, 0, []) else 1

    return run_bench(run)


if __name__ == "__main__":
    sys.exit(main())
