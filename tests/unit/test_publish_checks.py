"""`sizer publish` judges every record by the worker's own admission code before
anything is sent, and `--in-order` sends a journal in runs of one topic."""

from __future__ import annotations

import json
from pathlib import Path

from streams.kafka.topics import TimestampBounds, load_topics
from streams.ops.console import in_file_order, journal_records, out_of_bounds
from tests.builders import T0, canceled, control, instrument, journal_text, signal

NOW = T0 + 3_600_000
HOUR_MS = 3_600_000
LONG_MAX = str(2**63 - 1)


def lines(entries: list[dict]) -> list[str]:
    return journal_text(entries).splitlines()


def test_what_the_worker_would_dead_letter_is_named_by_line_code_and_field():
    good = signal("p1", "ETH-USD", "0.9", "100", ts=T0, signal_id="ok")
    value = good["value"]
    bad = [{"topic": "signals", "value": {**value, "score": 3}},
           {"topic": "signals", "value": {**value, "price": "3,000"}},
           {"topic": "signals", "value": {**value, "side": "BUY"}},
           {"topic": "signals", "value": {**value, "ts": "2026-01-01T25:00:00Z"}},
           {"topic": "signals", "value": {**value, "ts": NOW + 61_000}},  # ahead of its record timestamp (now)
           {"topic": "fills", "value": {"event_id": "f", "portfolio_id": 7, "ts": T0, "type": "order_canceled",
                                        "order_id": "o"}}]
    records, unsendable = journal_records(lines([good, *bad]) + ['{"topic": "nope", "value": {}}', "{"],
                                          60_000, NOW, "j.jsonl")
    assert [line.split(":")[:2] for line in unsendable] == [["j.jsonl", "8"], ["j.jsonl", "9"]]
    judged = {record.line: record.refused for record in records}
    assert judged[1] is None
    assert [(judged[n].code, judged[n].detail.split(":")[0]) for n in range(2, 8)] == [
        ("INVALID_FIELD", "score"), ("INVALID_FIELD", "price"), ("INVALID_FIELD", "side"), ("INVALID_FIELD", "ts"),
        ("FUTURE_TIMESTAMP", "ts"), ("INVALID_FIELD", "order_canceled.portfolio_id")]


def test_a_line_with_its_own_record_timestamp_is_judged_at_it():
    ahead = {**signal("p1", "ETH-USD", "0.9", "100", ts=NOW + 120_000), "timestamp": NOW + 100_000}
    (record,), _ = journal_records([json.dumps(ahead)], 60_000, NOW)
    assert record.refused is None and record.timestamp == NOW + 100_000


def test_in_order_runs_keep_file_order_with_the_instruments_first():
    entries = [signal("p1", "X", "1", "10", signal_id="s1"), signal("p1", "X", "1", "10", signal_id="s2"),
               canceled("p1", "o-1"), control("p1", "halt"), signal("p1", "X", "1", "10", signal_id="s3"),
               instrument("X")]
    records, _ = journal_records(lines(entries), 60_000, NOW)
    assert [[(r.role, r.line) for r in run] for run in in_file_order(records)] == [
        [("instruments", 6)], [("signals", 1), ("signals", 2)], [("fills", 3)], [("controls", 4)], [("signals", 5)]]


def test_a_record_timestamp_out_of_its_topics_bound_is_named_before_anything_is_sent():
    topics = load_topics(Path(__file__).resolve().parents[2] / "topics" / "topics.toml", "t-")
    stamped = [{**signal("p1", "ETH-USD", "0.9", "100", ts=T0, signal_id="now")},
               {**signal("p2", "ETH-USD", "0.9", "100", ts=T0, signal_id="ahead"), "timestamp": NOW + 2 * HOUR_MS},
               {**canceled("p3", "o-1"), "timestamp": NOW - 100 * 24 * HOUR_MS}]
    records, _ = journal_records(lines(stamped), 60_000, NOW)
    # the brokers' defaults, as DescribeConfigs reports them for a topic that sets none
    kafka4 = TimestampBounds.of({"message.timestamp.after.max.ms": str(HOUR_MS),
                                 "message.timestamp.before.max.ms": LONG_MAX, "message.timestamp.type": "CreateTime"})
    kafka39 = TimestampBounds.of({"message.timestamp.after.max.ms": LONG_MAX,
                                  "message.timestamp.before.max.ms": LONG_MAX})
    behind_a_day = TimestampBounds.of({"message.timestamp.after.max.ms": "60000",
                                       "message.timestamp.before.max.ms": str(24 * HOUR_MS)})
    stamped_by_broker = TimestampBounds.of({"message.timestamp.after.max.ms": "60000",
                                            "message.timestamp.type": "LogAppendTime"})

    assert out_of_bounds(records, topics, {"t-signals": kafka4, "t-fills": kafka4}, "j", NOW) == [
        f"j:2: its record timestamp {NOW + 2 * HOUR_MS} is 2.0 h ahead of this machine's clock; t-signals refuses a record "
        "stamped more than 3600000 ms ahead of the broker's clock (message.timestamp.after.max.ms)"]
    assert out_of_bounds(records, topics, {"t-signals": kafka39, "t-fills": kafka39}, "j", NOW) == []
    assert out_of_bounds(records, topics, {"t-fills": behind_a_day}, "j", NOW) == [
        f"j:3: its record timestamp {NOW - 100 * 24 * HOUR_MS} is 100 days behind this machine's clock; t-fills refuses a record "
        "stamped more than 86400000 ms behind the broker's clock (message.timestamp.before.max.ms)"]
    assert out_of_bounds(records, topics, {"t-signals": stamped_by_broker, "t-fills": stamped_by_broker}, "j",
                         NOW) == []
    assert out_of_bounds(records, topics, {}, "j", NOW) == []  # bounds unknown (no DescribeConfigs): the broker judges
    # a fill stamped 100 days ago on a topic keeping 90: taken, then deleted at the next retention check
    kept_90_days = TimestampBounds.of({"cleanup.policy": "delete", "retention.ms": str(90 * 24 * HOUR_MS),
                                       "message.timestamp.before.max.ms": LONG_MAX})
    assert out_of_bounds(records, topics, {"t-fills": kept_90_days}, "j", NOW) == [
        f"j:3: its record timestamp {NOW - 100 * 24 * HOUR_MS} is 100 days behind this machine's clock; t-fills "
        f"deletes a record stamped more than {90 * 24 * HOUR_MS} ms ago (retention.ms) at its next retention check, "
        f"before an audit could read it"]
    compacted = TimestampBounds.of({"cleanup.policy": "compact", "retention.ms": str(HOUR_MS)})
    kept_forever = TimestampBounds.of({"cleanup.policy": "delete", "retention.ms": "-1"})
    assert out_of_bounds(records, topics, {"t-fills": compacted}, "j", NOW) == []
    assert out_of_bounds(records, topics, {"t-fills": kept_forever}, "j", NOW) == []
