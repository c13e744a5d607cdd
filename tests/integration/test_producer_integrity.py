"""No producer can route around a limit (issue 34), on the real broker: a producer
partitioning with CRC32 (librdkafka's default) for a halted and a capped portfolio
gets nothing sized; a record stamped a year ahead, record timestamp included,
poisons a portfolio clock only until `topics apply` bounds record timestamps at
the broker, and `sizer control reset-clock` repairs it; the audit re-derives all
of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import zlib

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.wire.admission import home_partition
from tests.builders import instrument, leg
from tests.integration.harness import SIZER, Deployment

YEAR_MS = 365 * 24 * 3600 * 1000
WIDTH = 6  # the input topics' partitions (topics/topics.toml)


def murmur2_partition(key: bytes) -> int:
    """Kafka's default partitioner (the product's `home_partition`, checked against the
    Java client's own hashes in tests/unit/test_partition_integrity.py)."""
    return home_partition(key, WIDTH)


def crc32_partition(key: bytes) -> int:
    """librdkafka's default partitioner (`consistent_random`) for a keyed record."""
    return zlib.crc32(key) % WIDTH


def misrouted(prefix: str) -> str:
    """A portfolio id that CRC32 puts on another partition than murmur2 does."""
    return next(f"{prefix}{n}" for n in range(100)
                if crc32_partition(f"{prefix}{n}".encode()) != murmur2_partition(f"{prefix}{n}".encode()))


def sizer(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIZER, *args], env=deployment.env(), capture_output=True, text=True, timeout=180)


def signal(portfolio_id: str, signal_id: str, ts: int, score: str = "1") -> dict:
    return {"signal_id": signal_id, "portfolio_id": portfolio_id, "symbol": "X", "side": "buy", "score": score,
            "price": "10", "ts": ts}


async def _send(deployment: Deployment, records: list[tuple[dict, int | None]], partitioner=None) -> None:
    """Each signal keyed by its portfolio, with the record timestamp given (None: now),
    by a producer with `partitioner` (aiokafka's signature; None: its murmur2 default)."""
    options = {"partitioner": partitioner} if partitioner is not None else {}
    producer = AIOKafkaProducer(**deployment.client.options(acks="all", **options))
    await producer.start()
    try:
        for value, timestamp in records:
            await producer.send_and_wait(deployment.topics.name("signals"), json.dumps(value).encode(),
                                         key=value["portfolio_id"].encode(), timestamp_ms=timestamp)
    finally:
        await producer.stop()


def decisions_of(deployment: Deployment, count: int) -> dict[str, dict]:
    return {d["signal_id"]: d for d in (r.json() for r in deployment.wait_for("decisions", count, timeout_s=90))}


def test_a_crc32_producer_gets_nothing_sized_for_a_halted_or_a_capped_portfolio(deployment, workers):
    halted, capped = misrouted("halted-"), misrouted("capped-")
    now = int(time.time() * 1000)
    deployment.publish([("instruments", instrument("X", leg("XUSDT", qty_step="0.01"))["value"])])
    workers("--preset", "conviction", SIZING_PAIR_CAP_USD="1000", SIZING_PORTFOLIO_CAP="1000")
    # on its key's partition: 1,000 USD of the 1,000 USD cap taken
    asyncio.run(_send(deployment, [(signal(capped, "first", now), None)]))
    decisions_of(deployment, 1)
    done = sizer(deployment, "control", "halt", "--portfolio", halted, "--reason", "venue outage", "--timeout", "90")
    assert done.returncode == 0, done.stderr

    crc32 = lambda key, all_partitions, available: all_partitions[crc32_partition(key)]  # noqa: E731
    asyncio.run(_send(deployment, [(signal(p, f"{p}-{n}", now + n), None) for p in (halted, capped)
                                   for n in range(3)], partitioner=crc32))
    deadline = time.monotonic() + 90
    while len(dead := deployment.read("dlq")) < 6:
        assert time.monotonic() < deadline, f"{len(dead)} dead letters"
        time.sleep(0.3)

    headers = [{name: value.decode() for name, value in record.headers} for record in dead]
    assert [h["sizer.reason"] for h in headers] == ["WRONG_PARTITION"] * 6
    for h, record in zip(headers, dead):
        home = murmur2_partition(record.key)
        assert h["sizer.source.partition"] == str(crc32_partition(record.key)) != str(home)
        assert f"its key's partition is {home} of {WIDTH}" in h["sizer.detail"]
    # nothing sized for either: the only decision is the first, on the right partition
    decisions = [r.json() for r in deployment.read("decisions")]
    assert [d["signal_id"] for d in decisions] == ["first"]
    assert len(deployment.read("orders")) == 1
    # one copy of each portfolio's state, on its key's partition: none was made where CRC32 sent them
    for table, portfolio in (("exposure", capped), ("controls", halted)):
        copies = [r for r in asyncio.run(read_changelog(deployment, table)) if r.key == portfolio.encode()]
        assert copies and {r.partition for r in copies} == {murmur2_partition(portfolio.encode())}, table

    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["wrong_partition_admitted"]) == (0, True, []), report
    assert sorted(r["offset"] for r in report["wrong_partition_refused"]) == sorted(
        int(h["sizer.source.offset"]) for h in headers)


def test_a_clock_poisoned_a_year_ahead_is_bounded_by_the_broker_and_repaired_by_reset_clock(deployment, workers):
    now = int(time.time() * 1000)
    deployment.publish([("instruments", instrument("X", leg("XUSDT", qty_step="0.01"))["value"])])
    worker = workers("--preset", "conviction", SIZING_PAIR_CAP_USD="5000", SIZING_PORTFOLIO_CAP="5000")
    assert "input topics do not bound record timestamps to max_future_skew_s (60000 ms)" in worker.log()
    # before the bound: a year ahead, record timestamp too, is admitted and poisons the clock
    asyncio.run(_send(deployment, [(signal("p1", "future", now + YEAR_MS), now + YEAR_MS),
                                   (signal("p1", "stale", now), None)]))
    decided = decisions_of(deployment, 2)
    assert (decided["future"]["outcome"], decided["stale"]["reason"]) == ("accepted", "STALE_SIGNAL")

    bounded = sizer(deployment, "topics", "apply", "--preset", "conviction")
    assert bounded.returncode == 0, bounded.stderr
    for role in ("signals", "fills", "controls"):
        assert (f"bounded {deployment.topics.name(role)}: message.timestamp.after.max.ms=60000 (was "
                in bounded.stdout), bounded.stdout
    assert sizer(deployment, "topics", "apply", "--check", "--preset", "conviction").returncode == 0
    # a skew the topics are not bounded by is named
    other = subprocess.run([SIZER, "topics", "apply", "--check", "--preset", "conviction"],
                           env=deployment.env(SIZING_MAX_FUTURE_SKEW_S="30", SIZING_MAX_SIGNAL_AGE_S="30"),
                           capture_output=True, text=True, timeout=180)
    assert other.returncode == 3 and "message.timestamp.after.max.ms=60000 on the broker, 30000 in the spec" \
        in other.stderr, other.stderr

    # after it: the broker refuses the record itself
    with pytest.raises(KafkaError) as refused:
        asyncio.run(_send(deployment, [(signal("p1", "future-2", now + YEAR_MS), now + YEAR_MS)]))
    assert "Timestamp" in type(refused.value).__name__, repr(refused.value)

    repaired = sizer(deployment, "control", "reset-clock", "--portfolio", "p1", "--reason", "record from next year",
                     "--operator", "alice", "--timeout", "90")
    assert repaired.returncode == 0, repaired.stderr
    after = int(time.time() * 1000)
    asyncio.run(_send(deployment, [(signal("p1", "on-time", after, score="0.5"), None)]))
    decided = decisions_of(deployment, 3)
    assert decided["on-time"]["outcome"] == "accepted", decided["on-time"]
    assert "future-2" not in decided

    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, 3), report


def test_with_registration_on_a_flood_of_invented_portfolios_creates_no_state(deployment, workers):
    now = int(time.time() * 1000)
    deployment.publish([("instruments", instrument("X", leg("XUSDT", qty_step="0.01"))["value"])])
    done = sizer(deployment, "portfolios", "register", "desk-1", "--reason", "go-live")
    assert done.returncode == 0, done.stderr
    workers("--preset", "conviction", SIZER_REQUIRE_REGISTRATION="true")
    invented = [signal(f"invented-{n}", f"i-{n}", now + n, score="0.5") for n in range(200)]
    deployment.publish([("signals", value) for value in invented[:100]]
                       + [("signals", signal("desk-1", "d-1", now, score="0.5"))]
                       + [("signals", value) for value in invented[100:]])
    deployment.wait_for("decisions", 1, timeout_s=90)
    deadline = time.monotonic() + 60
    while len(dead := deployment.read("dlq")) < 200:
        assert time.monotonic() < deadline, f"{len(dead)} dead letters"
        time.sleep(0.3)
    assert {dict(r.headers)["sizer.reason"] for r in dead} == {b"UNKNOWN_PORTFOLIO"}
    # registered while the worker runs: admitted from its next input on
    assert sizer(deployment, "portfolios", "register", "desk-2", "--reason", "late").returncode == 0
    deployment.publish([("signals", signal("desk-2", "d-2", now, score="0.5"))])
    decisions = [r.json() for r in deployment.wait_for("decisions", 2, timeout_s=90)]
    assert sorted(d["signal_id"] for d in decisions) == ["d-1", "d-2"]
    assert len(deployment.read("dlq")) == 200
    # no state for any invented id: the exposure changelog holds the registered portfolios only
    changelog = asyncio.run(read_changelog(deployment, "exposure"))
    assert {record.key for record in changelog} == {b"desk-1", b"desk-2"}
    listed = json.loads(sizer(deployment, "portfolios", "list").stdout)
    assert [entry["portfolio_id"] for entry in listed] == ["desk-1", "desk-2"]
    # a command for a portfolio that is not registered is refused like its signals, and says so
    halted = sizer(deployment, "control", "halt", "--portfolio", "desk-3", "--reason", "typo", "--timeout", "90")
    assert halted.returncode == 1 and halted.stdout == "", (halted.returncode, halted.stdout)
    assert halted.stderr.count("\n") == 1 and "Traceback" not in halted.stderr, halted.stderr
    assert "(halt of 'desk-3') at controls[" in halted.stderr and "was not applied: the workers dead-lettered it" \
        in halted.stderr, halted.stderr
    assert dict(deployment.read("dlq")[-1].headers)["sizer.reason"] == b"UNKNOWN_PORTFOLIO"


async def read_changelog(deployment: Deployment, table: str):
    from streams.kafka.io import read_topic

    return await read_topic(deployment.client, f"{deployment.app_id}-{table}-changelog", WIDTH)


def test_a_record_without_a_timestamp_cannot_carry_a_clock_past_the_brokers_bound(deployment, workers):
    # Kafka's bound (message.timestamp.after.max.ms) skips a record whose timestamp is -1
    # ("no timestamp", which aiokafka and any hand-built batch can send): the worker must
    # not take such a record's ts on trust either
    now = int(time.time() * 1000)
    deployment.publish([("instruments", instrument("X", leg("XUSDT", qty_step="0.01"))["value"])])
    assert sizer(deployment, "topics", "apply", "--preset", "conviction").returncode == 0
    workers("--preset", "conviction", SIZING_PAIR_CAP_USD="5000", SIZING_PORTFOLIO_CAP="5000")
    asyncio.run(_send(deployment, [(signal("p1", "future", now + YEAR_MS), -1)]))
    stored = [r for r in deployment.read("signals") if r.json()["signal_id"] == "future"]
    assert [r.timestamp for r in stored] == [-1]  # the broker took it, bound or not

    dead = deployment.wait_for("dlq", 1, timeout_s=90)
    assert [dict(r.headers)["sizer.reason"] for r in dead] == [b"FUTURE_TIMESTAMP"]
    assert b"no timestamp" in dict(dead[0].headers)["sizer.detail"]
    asyncio.run(_send(deployment, [(signal("p1", "on-time", int(time.time() * 1000), score="0.5"), None)]))
    decided = decisions_of(deployment, 1)
    assert list(decided) == ["on-time"] and decided["on-time"]["outcome"] == "accepted", decided

    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, 1), report
