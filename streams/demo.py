"""`make demo`: the whole product on a real Kafka broker, end to end.

Starts the project's local broker (or uses KAFKA_BOOTSTRAP_SERVERS), applies the
topics under a fresh prefix, starts a worker, publishes the demo session phase
by phase, prints every decision as it arrives, then shuts everything down.
`--offline` replays the same session through the engine without Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.wire import decimals
from streams.wire.framing import payload

from streams.wire import journal

from streams.history import decision_table as table
from streams.config import load_config
from streams.demo_session import PRESET, phases, session
from streams.kafka.io import publish, wait_consumed
from streams.kafka.settings import ClientConfig, PROJECT_ROOT
from streams.worker.settings import load_settings
from streams.wire.models import to_json
from streams.history.replay import replay
from streams.kafka.topics import TopicSet, apply, load_topics
from streams.text import counted

BROKER = PROJECT_ROOT / "deploy" / "broker" / "broker.sh"


def run_offline() -> int:
    config = load_config(PRESET)
    lines = [journal.line(topic, value) for topic, value in session()]
    print(f"preset {PRESET}, config {config.config_hash}: {counted(len(lines), 'input')} replayed offline\n")
    print(table.header())
    replay(lines, config, lambda d, o: print(table.row(decimals.loads(to_json(d)))),
           lambda n, r: print(f"line {n}: {r}", file=sys.stderr))
    return 0


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


async def _live_session(client: ClientConfig, topics: TopicSet, group: str) -> Counter:
    """Publish phase by phase; print decisions as they arrive. Returns outcome counts."""
    spec = topics["decisions"]
    consumer = AIOKafkaConsumer(**client.options(group_id=None, enable_auto_commit=False,
                                                 isolation_level="read_committed", auto_offset_reset="earliest"))
    await consumer.start()
    consumer.assign([TopicPartition(spec.name, p) for p in range(spec.partitions)])
    seen: Counter = Counter()
    printed = 0
    notional = Decimal(0)
    try:
        expected = 0
        for title, entries in phases():
            _say(title)
            signals = sum(1 for role, _ in entries if role == "signals")
            if signals:
                print(table.header())
            else:
                print(f"   {len(entries)} {entries[0][0]} published")
            await publish(client, topics, entries)
            expected += signals
            deadline = time.monotonic() + 60
            while printed < expected:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {printed} of {counted(expected, 'decision')} arrived")
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for record in records:
                        decision = decimals.loads(payload(record.value))  # framed or not
                        print(table.row(decision), flush=True)
                        seen[decision["reason"] or "accepted"] += 1
                        notional += Decimal(decision["notional"] or 0)
                        printed += 1
            for role in ("signals", "fills"):
                await wait_consumed(client, group, topics[role].name, topics[role].partitions)
    finally:
        await consumer.stop()
    seen["_notional"] = notional  # type: ignore[assignment]
    return seen


def _local_broker() -> str | None:
    """Start the local broker (`KAFKA_VERSION` picks its release); its bootstrap
    address, or None (what it said printed) when it did not start."""
    _say("starting the local Apache Kafka broker (KRaft, first run resolves its jars with Maven)")
    done = subprocess.run(["bash", str(BROKER), "start"], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        return None
    return done.stdout.strip().splitlines()[-1]


def run_live() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    started_broker = not bootstrap
    if started_broker and (bootstrap := _local_broker()) is None:
        return 1
    print(f"   bootstrap {bootstrap}")
    run = time.strftime("%Y%m%d%H%M%S")
    prefix, app_id = f"demo{run}-", f"sizer-demo-{run}"
    data_dir = PROJECT_ROOT / ".sizer-data" / f"demo-{run}"
    kafka = load_settings(bootstrap=bootstrap, topic_prefix=prefix, app_id=app_id)
    topics = load_topics(kafka.topics_file, prefix, load_config(preset=PRESET).max_future_skew_ms,
                         replication=kafka.replication)
    _say(f"applying topics (prefix {prefix})")
    client = kafka.for_role("demo")
    for line in asyncio.run(apply(client, topics)):
        print(f"   {line}")

    _say(f"starting a worker: preset {PRESET}, exactly_once, app {app_id}")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "worker.log"
    web_port = os.environ.get("SIZER_WEB_PORT", "6066")
    env = {**os.environ, "SIZER_TOPIC_PREFIX": prefix, "SIZER_APP_ID": app_id, "SIZER_DATA_DIR": str(data_dir),
           "SIZER_WEB_PORT": web_port, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--preset", PRESET],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    code = 1
    try:
        deadline = time.monotonic() + 120
        # ready as operators read it (docs: /health/ready), not by a log line's wording
        while not _ready(web_port):
            if worker.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise RuntimeError("the worker did not become ready")
            time.sleep(0.3)
        print(f"   ready (log: {log_path})")
        counts = asyncio.run(_live_session(client, topics, app_id))
        total = counts.pop("_notional")
        _say("summary")
        for outcome, count in sorted(counts.items()):
            print(f"   {outcome:<22} {count}")
        print(f"   accepted notional      {total}")
        print(f"\n   topics {prefix}* stay on the broker for inspection; the offline replay of the same\n"
              f"   session: .venv/bin/python -m streams.demo --offline")
        code = 0
    finally:
        _say("shutting down")
        worker.send_signal(signal.SIGTERM)
        try:
            print(f"   worker stopped (exit {worker.wait(timeout=60)})")
        except subprocess.TimeoutExpired:
            worker.kill()
            print("   worker did not stop within 60 s; killed")
        if started_broker:
            subprocess.run(["bash", str(BROKER), "stop"], check=False)
            print("   broker stopped")
    return code


def _ready(web_port: str) -> bool:
    """Whether the worker's /health/ready answers 200: tables recovered, partitions
    assigned, instruments caught up."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/health/ready", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    decimals.use_engine_context()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--offline", action="store_true", help="replay the session through the engine, no Kafka")
    args = parser.parse_args()
    return run_offline() if args.offline else run_live()


if __name__ == "__main__":
    sys.exit(main())
