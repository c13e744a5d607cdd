"""`sizer worker`: verify the topics, prepare local state, run the Faust worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
from pathlib import Path

from streams.config import SizingConfig
from streams.kafka.io import publish_config
from streams.worker.settings import WorkerSettings
from streams.logs import logging_config
from streams.kafka.topics import TopicSet, apply, declare_changelogs

log = logging.getLogger("streams.worker")


def prepare_local_state(tabledir: Path, processing_guarantee: str) -> bool:
    """Under exactly-once, start every run from the committed changelog.

    faust writes table values to the local store as they happen and only marks
    changelog offsets as persisted on commit; a crash, or a rebalance that fences
    an open transaction, can leave values of an aborted transaction in RocksDB
    that recovery from the persisted offset never overwrites. Rebuilding from the
    compacted changelog (read_committed) is cheap: per portfolio one record of each
    table, and one for every 64 ids of its dedupe windows (`tables`).
    Returns True when local state was removed."""
    if processing_guarantee != "exactly_once" or not tabledir.exists():
        return False
    shutil.rmtree(tabledir)
    return True


def run_worker(kafka: WorkerSettings, config: SizingConfig, topics: TopicSet, loglevel: str = "info",
               origin: str | None = None) -> int:
    """Run a worker until it is stopped; its exit code. `origin` says where `config`
    came from (`preset NAME`, `file PATH`), for the start-up log line."""
    import faust

    from streams.worker.app import build_app

    # A topic that is missing or differs from its spec, or an input topic recreated
    # under the group's stored positions, stops start-up here.
    client = kafka.for_role(f"worker-{kafka.app_id}")
    # aiokafka logs each failed connection; a refused start-up is reported once, as one line, by the CLI
    aiokafka_log = logging.getLogger("aiokafka")
    level, aiokafka_log.level = aiokafka_log.level, logging.CRITICAL
    try:
        asyncio.run(apply(client, topics, create=False, app_id=kafka.app_id))
        # Before the first decision: the settings behind this worker's config hash.
        asyncio.run(publish_config(client, topics.name("config"), config))
    finally:
        aiokafka_log.setLevel(level)
    app = build_app(kafka, config, topics)
    level, aiokafka_log.level = aiokafka_log.level, logging.CRITICAL
    try:
        asyncio.run(declare_changelogs(client, {table.changelog_topic_name: table.partitions
                                                for table in app.tables.values()},
                                       app.conf.topic_replication_factor))
    finally:
        aiokafka_log.setLevel(level)
    wiped = prepare_local_state(Path(app.conf.tabledir), kafka.processing_guarantee)
    # Said once logging is set up (faust's worker sets it up as it starts): the
    # settings an operator checks first when a worker does not do what they expect.
    started = (f"sizer worker: group {kafka.app_id}, {kafka.processing_guarantee}, config {config.config_hash} "
               f"({origin or 'preset ' + config.preset}), topic prefix {kafka.topic_prefix!r}, "
               f"web port {kafka.web_port}, bootstrap {kafka.bootstrap}"
               + (", local tables rebuilt from changelog" if wiped else ""))

    class Worker(faust.Worker):
        async def on_execute(self) -> None:
            await super().on_execute()
            log.info("%s", started)

    worker = Worker(app, loglevel=loglevel, quiet=True, logging_config=logging_config(kafka.log_format, loglevel))
    # Fewer, cheaper collections: what exists at start-up is never collected again,
    # and a full collection, which walks every portfolio's dedupe window, runs less
    # often (these pauses are the worker's latency tail).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
