"""Kafka's own bound on record timestamps, named when a broker refuses one: for any
client (`errors.kafka_error`) and, with the journal line, for `sizer publish`.
(On both Kafka releases: tests/integration/test_kafka_rules.py.)"""

from __future__ import annotations

import datetime
import json
import time

from aiokafka.errors import InvalidTimestampError

from streams.errors import RECORD_TIMESTAMP_RULE, exit_code, kafka_error
from streams.ops.console import journal_records, timestamp_refused

HOUR_MS = 3_600_000


def signal(signal_id: str, timestamp: int | None = None) -> str:
    line = {"topic": "signals", "value": {"signal_id": signal_id, "portfolio_id": "p1"}}
    return json.dumps({**line, "timestamp": timestamp} if timestamp is not None else line)


def test_a_refused_timestamp_is_one_line_naming_kafkas_rule_and_exit_4():
    error = kafka_error(InvalidTimestampError(), "127.0.0.1:9092")
    # a worker or `sizer control` stamps what it sends by its own clock: the line says so, with that clock
    now = datetime.datetime.now(datetime.timezone.utc)
    prefix = ("the broker at 127.0.0.1:9092 refused a record's timestamp (a record sent without one is stamped by "
              "this machine's clock, now ")
    assert str(error).startswith(prefix), str(error)
    shown = datetime.datetime.fromisoformat(str(error)[len(prefix):].split("Z:")[0] + "+00:00")
    assert abs((shown - now).total_seconds()) < 5
    assert str(error).endswith(f"Z: is it ahead of the broker's?): {RECORD_TIMESTAMP_RULE}")
    assert "\n" not in str(error) and exit_code(error) == 4
    assert "message.timestamp.after.max.ms" in RECORD_TIMESTAMP_RULE and "1 hour" in RECORD_TIMESTAMP_RULE


def test_publish_names_the_journal_line_stamped_furthest_from_the_clock():
    now = int(time.time() * 1000)
    instrument = json.dumps({"topic": "instruments", "value": {"symbol": "ETH-USD", "legs": []}})
    records, unsendable = journal_records([signal("a", now), "not json", signal("b", now + 2 * HOUR_MS), signal("c"),
                                           instrument], 60_000, now, "j.jsonl")
    assert unsendable and len(records) == 4
    assert [r.line for r in records] == [5, 1, 3, 4]  # the instrument goes first, with its own line number
    message = str(timestamp_refused(records, "j.jsonl"))
    assert message.startswith(f"j.jsonl:3: the broker refused its record timestamp, {now + 2 * HOUR_MS} (2.0 h ahead "
                              f"of this machine's clock): ")
    assert message.endswith(RECORD_TIMESTAMP_RULE)
    behind, _ = journal_records([signal("d", now - 3 * HOUR_MS)], 60_000, now, "old.jsonl")
    assert "(3.0 h behind this machine's clock)" in str(timestamp_refused(behind, "old.jsonl"))


def test_a_batch_abandoned_for_a_refused_record_timestamp_says_so_in_one_line_with_the_clock():
    # Kafka 4.x refuses what a worker whose clock jumped more than an hour ahead sends; the worker
    # exits 70 without committing (a restart redoes the batch): its CRITICAL line names the cause
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c",
                           "import logging; logging.basicConfig(format='%(levelname)s %(message)s')\n"
                           "from aiokafka.errors import InvalidTimestampError\n"
                           "from streams.worker.batch import abandon\n"
                           "abandon(InvalidTimestampError())"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 70
    line, = done.stderr.splitlines()
    assert line.startswith("CRITICAL batch failed half way, exiting without committing: the broker refused a "
                           "record's timestamp (a record sent without one is stamped by this machine's clock, now ")
    assert line.endswith(RECORD_TIMESTAMP_RULE)


def test_a_batch_abandoned_for_anything_else_keeps_its_traceback():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c",
                           "import logging; logging.basicConfig(format='%(levelname)s %(message)s')\n"
                           "from streams.worker.batch import abandon\n"
                           "abandon(ValueError('a bug'))"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 70
    # the exception itself logged after the line (exc_info): what a bug report needs
    assert done.stderr.splitlines() == ["CRITICAL batch failed half way, exiting without committing: ValueError('a bug')",
                                        "ValueError: a bug"], done.stderr
