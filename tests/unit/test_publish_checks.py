"""`sizer publish` judges every record by the worker's own admission code before
anything is sent, and `--in-order` sends a journal in runs of one topic."""

from __future__ import annotations

import json

from streams.ops.console import in_file_order, journal_records
from tests.builders import T0, canceled, control, instrument, journal_text, signal

NOW = T0 + 3_600_000


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
