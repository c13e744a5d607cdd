"""The checkpoint of the local tables on the broker: a clean restart under exactly-once
keeps the tables and reads each changelog only from where its store left off; a
restart after SIGKILL has no checkpoint and reads every changelog from the start.

Where recovery starts is read from the worker's own log (faust's "Reading Starts At"
table: the offset of the last changelog record a store holds, -1 for none) and
compared with the changelog itself, read here under read_committed."""

from __future__ import annotations

import asyncio
import re

from streams.bench.generate import session
from streams.kafka.io import read_topic
from tests.integration.harness import decisions_by_signal

ROW = re.compile(r"^\W*(\S+?-changelog|〃)\s*\W\s*(\d+)\s*\W\s*(-?\d+)\s*\W*$")


def reading_starts(log: str, changelog: str) -> dict[int, int]:
    """partition -> the offset faust's last active recovery in `log` starts reading
    `changelog` at (the last "Reading Starts At - Active" table)."""
    tables = log.split("Reading Starts At - Active")
    assert len(tables) > 1, f"no active recovery in the log:\n{log[-3000:]}"
    starts: dict[int, int] = {}
    topic = None
    for line in tables[-1].splitlines()[1:]:
        row = ROW.match(line.strip())
        if row is None:
            if starts or topic is not None:
                if "│" not in line and "|" not in line:
                    break
            continue
        name, partition, offset = row.groups()
        topic = topic if name == "〃" else name
        if topic.endswith(changelog):
            starts[int(partition)] = int(offset)
    return starts


def last_records(client, topic: str, partitions: int) -> dict[int, int]:
    """partition -> the offset of its last committed record (-1: none)."""
    last = {partition: -1 for partition in range(partitions)}
    for record in asyncio.run(read_topic(client, topic, partitions)):
        last[record.partition] = max(last[record.partition], record.offset)
    return last


def test_a_clean_restart_reads_the_changelogs_from_the_checkpoint_and_a_sigkill_from_the_start(
        deployment, workers):
    inputs = list(session(400, portfolios=30, seed=26))
    signals = [value for role, value in inputs if role == "signals"]
    worker = workers("--preset", "conviction")
    deployment.publish(inputs)
    deployment.wait_for("decisions", len(signals))
    assert worker.stop() == 0
    assert "checkpoint of the local tables written" in worker.log()

    changelog = f"{deployment.app_id}-exposure-changelog"
    width = deployment.topics["signals"].partitions
    held = last_records(deployment.client, changelog, width)
    assert sum(offset >= 0 for offset in held.values()) >= 3, held  # state on most partitions

    worker = workers("--preset", "conviction")
    assert "local tables kept from the checkpoint" in worker.log()
    assert reading_starts(worker.log(), "exposure-changelog") == held
    # the kept state is the state: a signal sent again is recognised as seen
    deployment.publish([("signals", signals[0])])
    decided = decisions_by_signal(deployment.wait_for("decisions", len(signals) + 1))
    assert [d["reason"] for d in decided[signals[0]["signal_id"]]][-1] == "DUPLICATE_SIGNAL"

    worker.kill()
    worker = workers("--preset", "conviction")
    assert "local tables rebuilt from the changelogs (no clean checkpoint)" in worker.log()
    assert reading_starts(worker.log(), "exposure-changelog") == {p: -1 for p in range(width)}
