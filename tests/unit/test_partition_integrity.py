"""Partition integrity (DESIGN.md, "Production Kafka"): an input is admitted only on
the partition Kafka's default murmur2 partitioner gives its key."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from streams.errors import InvalidMessage
from streams.kafka.topics import TIMESTAMP_BOUND, load_topics
from streams.wire.admission import admit_record, home_partition

ROOT = Path(__file__).resolve().parents[2]

# Kafka's Java client, org.apache.kafka.common.utils.Utils.murmur2, on these keys (as
# signed 32-bit ints; generated with the Java client for kafkajs' defaultJava partitioner)
JAVA_MURMUR2 = {"0": 971027396, "1": -1993445489, "128": -326012175, "2187": -1508407203,
                "16384": -325739742, "78125": -1654490814, "279936": 1462227128, "823543": -2014198330}


@pytest.mark.parametrize("key, java_hash", sorted(JAVA_MURMUR2.items()))
@pytest.mark.parametrize("partitions", [1, 6, 7, 1000])
def test_the_home_partition_is_the_java_clients(key, java_hash, partitions):
    # DefaultPartitioner.partition: Utils.toPositive(murmur2(key)) % numPartitions
    assert home_partition(key.encode(), partitions) == (java_hash & 0x7FFFFFFF) % partitions


def signal_bytes(portfolio_id: str) -> bytes:
    return json.dumps({"signal_id": "s-1", "portfolio_id": portfolio_id, "symbol": "X", "side": "buy",
                       "score": "0.9", "price": "10", "ts": 1_767_225_600_000}).encode()


@pytest.mark.parametrize("role", ["signals", "fills", "controls"])
def test_a_record_off_its_keys_partition_is_wrong_partition_naming_both(role):
    value = {
        "signals": signal_bytes("p1"),
        "fills": json.dumps({"event_id": "f", "portfolio_id": "p1", "ts": 0, "type": "order_canceled",
                             "order_id": "o"}).encode(),
        "controls": json.dumps({"command_id": "c", "portfolio_id": "p1", "ts": 0, "type": "halt",
                                "operator": "alice", "reason": "r"}).encode(),
    }[role]
    home = home_partition(b"p1", 6)  # the Java client's, as the test above checks
    other = (home + 1) % 6

    assert admit_record(role, b"p1", value, None, 60_000, home, 6).portfolio_id == "p1"
    with pytest.raises(InvalidMessage) as raised:
        admit_record(role, b"p1", value, None, 60_000, other, 6)
    assert raised.value.code == "WRONG_PARTITION"
    assert f"on partition {other}, its key's partition is {home} of 6" in raised.value.detail


def test_crc32_partitioning_sends_most_portfolios_elsewhere():
    # librdkafka's default (consistent_random: CRC32 of the key) against murmur2, 100 ids over 6 partitions
    ids = [f"portfolio-{n}".encode() for n in range(100)]
    elsewhere = sum(zlib.crc32(key) % 6 != home_partition(key, 6) for key in ids)
    assert elsewhere > 50  # the issue measured 83 of 100; any such producer is refused WRONG_PARTITION


def test_the_input_topics_carry_the_record_timestamp_bound_and_only_they():
    topics = load_topics(ROOT / "topics" / "topics.toml", "p-", 60_000)
    bounded = {spec.role for spec in topics if TIMESTAMP_BOUND in spec.configs}
    assert bounded == {"signals", "fills", "controls"}
    assert topics["signals"].configs[TIMESTAMP_BOUND] == "60000"
    # without a sizing configuration (audit, tail, control) the bound is neither set nor checked
    assert all(TIMESTAMP_BOUND not in spec.configs for spec in load_topics(ROOT / "topics" / "topics.toml"))


def test_reset_clock_restamps_only_what_is_after_it():
    from decimal import Decimal

    from streams.engine.state import Book, Exposure, Mark, reservation, reset_clock

    future, now = 1_800_000_000_000, 1_767_225_600_000
    exposure = Exposure(
        reservations=Book({"old": reservation("X", Decimal("1"), Decimal("10"), now - 5),
                           "poisoned": reservation("X", Decimal("2"), Decimal("10"), future)}),
        marks={"X": Mark(Decimal("10"), future), "Y": Mark(Decimal("3"), now - 5)}, latest_ts=future)

    repaired = reset_clock(exposure, now)

    assert repaired.latest_ts == now
    assert {oid: r.ts for oid, r in repaired.reservations.items()} == {"old": now - 5, "poisoned": now}
    assert {s: m.ts for s, m in repaired.marks.items()} == {"X": now, "Y": now - 5}
    assert [r.notional for r in repaired.reservations.values()] == [Decimal("10"), Decimal("20")]


def test_the_workers_state_directory_is_its_owners_only(tmp_path):
    import os
    import stat

    from streams.worker.run import private_state

    shared = tmp_path / "data"
    shared.mkdir(mode=0o755)
    before = os.umask(0o022)
    try:
        private_state(shared)
        made = shared / "tables"
        made.mkdir()
        (made / "store").write_bytes(b"positions")
    finally:
        os.umask(before)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE((made / "store").stat().st_mode) == 0o600


@pytest.mark.parametrize("role", ["signals", "fills", "controls"])
def test_a_record_without_a_timestamp_is_refused_whatever_its_ts(role):
    # -1 is Kafka's "no timestamp": the broker's message.timestamp.after.max.ms skips such
    # a record, so a ts a year ahead would otherwise move the portfolio clock unchecked
    year_ahead = 1_767_225_600_000 + 365 * 24 * 3600 * 1000
    value = {
        "signals": json.loads(signal_bytes("p1")) | {"ts": year_ahead},
        "fills": {"event_id": "f", "portfolio_id": "p1", "ts": year_ahead, "type": "order_canceled", "order_id": "o"},
        "controls": {"command_id": "c", "portfolio_id": "p1", "ts": year_ahead, "type": "halt", "operator": "alice",
                     "reason": "r"},
    }[role]
    home = home_partition(b"p1", 6)
    for ts in (year_ahead, 0):
        with pytest.raises(InvalidMessage) as raised:
            admit_record(role, b"p1", json.dumps(value | {"ts": ts}).encode(), -1, 60_000, home, 6)
        assert raised.value.code == "FUTURE_TIMESTAMP" and "no timestamp (-1)" in raised.value.detail
    # a journal line without a "timestamp" is not such a record: nothing to check against
    assert admit_record(role, b"p1", json.dumps(value).encode(), None, 60_000, home, 6).portfolio_id == "p1"


def test_an_input_topic_the_broker_stamps_itself_is_bounded():
    from streams.kafka.topics import unbounded

    assert unbounded("s", {TIMESTAMP_BOUND: "60000", "message.timestamp.type": "CreateTime"}, 60_000) is None
    assert unbounded("s", {TIMESTAMP_BOUND: "60001"}, 60_000) == f"s: {TIMESTAMP_BOUND}=60001"
    assert unbounded("s", {}, 60_000) == f"s: {TIMESTAMP_BOUND}=None"
    # LogAppendTime: the record timestamp is the broker's clock, whatever the producer sends
    assert unbounded("s", {TIMESTAMP_BOUND: "9223372036854775807", "message.timestamp.type": "LogAppendTime"},
                     60_000) is None
