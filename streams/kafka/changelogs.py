"""The worker group's portfolio tables as their changelog topics hold them: the one
reader behind `sizer control status` and `sizer status`.

The `exposure`, `streak` and `controls` tables are keyed by portfolio id and hold
canonical JSON (`worker.tables`); each is backed by a compacted changelog,
`<app_id>-<table>-changelog`, with as many partitions as the input topics. The
last record of a key is its value now (committed records only: the workers
write them in their transactions). The dedupe windows (`windows`) are not read:
nothing an operator reads about a portfolio is in them.
"""

from __future__ import annotations

from typing import Any, Iterable

from streams.errors import TopicMismatch
from streams.kafka.io import read_topic, together
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import TopicSet, require_topics
from streams.wire import decimals

PORTFOLIO_TABLES = ("exposure", "streak", "controls")
# every table of the worker (`worker.app.declare_tables`): the changelogs `topics apply` checks
WORKER_TABLES = ("exposure", "streak", "controls", "windows", "input-positions")


def changelog(app_id: str, table: str) -> str:
    """The changelog topic of a worker table (faust's naming)."""
    return f"{app_id}-{table}-changelog"


async def read_tables(kafka: ConnectionSettings, topics: TopicSet, role: str,
                      tables: Iterable[str] = PORTFOLIO_TABLES) -> dict[str, dict[str, Any]]:
    """portfolio id -> table -> its value now (decoded JSON), for every portfolio any
    of `tables` holds. `role` names the client (`control`, `status`).

    Raises TopicMismatch (exit 3) naming a changelog that does not exist (no worker
    of the group has run yet), KafkaUnavailable (exit 4) naming the principal, the
    changelog and the permission when the ACLs refuse it."""
    tables = tuple(tables)
    names = [changelog(kafka.app_id, table) for table in tables]
    client = kafka.for_role(role)
    try:
        await require_topics(client, names, "Read")
    except TopicMismatch as exc:
        raise TopicMismatch(f"{exc}: no worker of group {kafka.app_id} has run yet (start `sizer worker`)") from None
    width = topics["signals"].partitions
    read = await together(*(read_topic(client, name, width) for name in names))
    latest: dict[str, dict[str, Any]] = {}
    for table, records in zip(tables, read):
        for record in records:  # in partition then offset order: the last value of a key wins
            if record.key is None:
                continue
            if record.value is None:
                latest.get(record.key.decode(), {}).pop(table, None)
                continue
            latest.setdefault(record.key.decode(), {})[table] = decimals.loads(record.value)
    return {portfolio: values for portfolio, values in sorted(latest.items()) if values}
