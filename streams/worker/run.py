"""`sizer worker`: verify the topics, prepare local state, run the Faust worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Iterator, Mapping, Sequence

from streams.config import SizingConfig
from streams.kafka.io import partition_ends, publish_config, together
from streams.kafka.schema_registry import product_framing
from streams.kafka.settings import ClientConfig
from streams.worker.checkpoint import keep_local_state, write_checkpoint
from streams.worker.settings import WorkerSettings
from streams.logs import logging_config
from streams.kafka.topics import (TopicSet, admin_client, apply, declare_changelogs, internal_replication,
                                  internal_replication_warnings, topic_ids, unbounded_inputs)

log = logging.getLogger("streams.worker")


async def prepare_local_state(client: ClientConfig, tabledir: Path, app_id: str, processing_guarantee: str,
                              changelogs: list[str], ids: Mapping[str, str] | None = None) -> str:
    """Under exactly-once, keep the local tables a clean stop's checkpoint vouches for
    and rebuild the rest from the committed changelogs (`checkpoint`); at-least-once
    keeps them as they are (its recovery rewrites from the store's offset on, and an
    input it decides twice is one it may decide twice). `ids`: the changelogs' topic
    ids (`topics.topic_ids`). Returns what was done."""
    if processing_guarantee != "exactly_once":
        return "local tables kept (at-least-once)"

    async def ends(wanted: Mapping[str, list[int]]) -> dict[tuple[str, int], int]:
        return await partition_ends(client, wanted)

    return await keep_local_state(tabledir, app_id, changelogs, ends, ids)


def private_state(data_dir: Path) -> None:
    """The worker's local state (its tables: every portfolio's positions, reservations
    and equity) readable by its own user only: the data directory is made or set
    owner-only (0700), and everything the worker creates from now on is too (umask 077)."""
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)


def bounded_shutdown(worker_class: type, timeout_s: float) -> type:
    """`worker_class` (faust.Worker) whose stop on SIGTERM or SIGINT ends the process
    after `timeout_s` at the latest (exit 1), whatever is still under way: the pod's
    termination grace is longer, so a stop is the worker's, never the kubelet's kill.
    A stop cut short writes no checkpoint: the next start rebuilds its tables."""
    import os
    import threading

    class Bounded(worker_class):  # type: ignore[misc, valid-type]
        def _schedule_shutdown(self, signal: Any) -> None:
            def expire() -> None:
                log.error("worker did not stop within %s s (SIZER_SHUTDOWN_TIMEOUT_S); exiting", timeout_s)
                logging.shutdown()
                os._exit(1)

            timer = threading.Timer(timeout_s, expire)
            timer.daemon = True
            timer.start()
            super()._schedule_shutdown(signal)

    return Bounded


def announcing(worker_class: type, line: str, warnings: Sequence[str] = ()) -> type:
    """`worker_class` (faust.Worker) that logs `line`, then each of `warnings`, once its
    logging is set up (faust's worker sets it up as it starts: a line logged before
    would be lost, or written without the configured format): the settings an operator
    checks first when a worker does not do what they expect, and what start-up found
    wrong with the cluster."""

    class Announcing(worker_class):  # type: ignore[misc, valid-type]
        async def on_execute(self) -> None:
            await super().on_execute()
            log.info("%s", line)
            for warning in warnings:
                log.warning("%s", warning)

    return Announcing


@contextlib.contextmanager
def _aiokafka_quiet() -> Iterator[None]:
    """aiokafka's own logging held back (it logs each failed connection): a refused
    start-up is reported once, as one line, by the CLI."""
    aiokafka_log = logging.getLogger("aiokafka")
    level, aiokafka_log.level = aiokafka_log.level, logging.CRITICAL
    try:
        yield
    finally:
        aiokafka_log.setLevel(level)


async def start_up(client: ClientConfig, kafka: WorkerSettings, config: SizingConfig, topics: TopicSet,
                   app: Any) -> tuple[list[str], str]:
    """What a worker checks and prepares before faust starts, on one admin client,
    the steps that do not wait on each other at once: (warnings to log, what was done
    with the local tables). A topic that is missing or differs from its spec, or an
    input topic recreated under the group's stored positions, stops start-up here
    (`apply`), before the worker publishes anything or touches its local state."""
    changelogs = {table.changelog_topic_name: table.partitions for table in app.tables.values()}
    async with admin_client(client) as admin:
        _, unbounded, internal = await together(
            apply(client, topics, create=False, app_id=kafka.app_id, admin=admin),
            unbounded_inputs(client, topics, config.max_future_skew_ms, admin=admin),
            internal_replication(client, admin=admin))
        # Before the first decision: the settings behind this worker's config hash.
        await together(publish_config(client, topics.name("config"), config),
                       declare_changelogs(client, changelogs, kafka.replication, admin=admin))
    private_state(kafka.data_dir)
    # the checkpoint names the changelogs it was written against by topic id: one
    # deleted and recreated since is another topic, whatever its offsets
    ids = await topic_ids(client, list(changelogs))
    app.write_checkpoint = functools.partial(write_checkpoint, topic_ids=ids)
    # last: it consumes the checkpoint, which a start that stops before this keeps
    local_state = await prepare_local_state(client, Path(app.conf.tabledir), kafka.app_id,
                                            kafka.processing_guarantee, list(changelogs), ids)
    warnings = [] if not unbounded else [
        f"input topics do not bound record timestamps to max_future_skew_s ({config.max_future_skew_ms} ms): "
        f"{'; '.join(unbounded)}; a producer can stamp a record far ahead and poison a portfolio clock: run "
        "`sizer topics apply --config ...` with this configuration"]
    # once, at start-up: the broker's settings are not the worker's to change
    warnings += [f"replication: {warning}"
                 for warning in internal_replication_warnings(internal, kafka.replication)]
    return warnings, local_state


def claim_data_dir(appdir: Path, data_dir: Path) -> int:
    """Hold `appdir` (the worker's directory under `data_dir`: its local stores, their
    checkpoint, its transactional id) for this process, by an exclusive lock on
    `appdir/worker.lock` that ends with the process, however it ends; the open
    descriptor. Two workers on one data directory would write each other's stores and,
    under per-worker transactions, share a transactional id, each fencing the other in
    turn. Raises ConfigError naming SIZER_DATA_DIR and the holder's pid."""
    import fcntl

    from streams.errors import ConfigError

    appdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(appdir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"SIZER_DATA_DIR: {data_dir} is in use by another worker (pid {holder}): "
                          "each worker needs its own data directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def run_worker(kafka: WorkerSettings, config: SizingConfig, topics: TopicSet, loglevel: str = "info",
               origin: str | None = None) -> int:
    """Run a worker until it is stopped; its exit code. `origin` says where `config`
    came from (`preset NAME`, `file PATH`), for the start-up log line."""
    from streams.faust_compat.worker import PromptExitWorker
    from streams.worker.app import build_app
    from streams.worker.memory import fix_mmap_threshold

    fix_mmap_threshold()  # before the tables open (see the module)
    with _aiokafka_quiet():
        # A Schema Registry that cannot be reached or refuses the product's schemas stops
        # start-up here (RegistryUnavailable, one line, exit 4)
        framing = asyncio.run(product_framing(kafka, topics))
    app = build_app(kafka, config, topics, framing=framing)
    claim_data_dir(Path(app.conf.appdir), kafka.data_dir)  # held until the process ends
    with _aiokafka_quiet():
        start_warnings, local_state = asyncio.run(start_up(kafka.for_role(f"worker-{kafka.app_id}"), kafka, config,
                                                           topics, app))
    started = (f"sizer worker: group {kafka.app_id}, {kafka.processing_guarantee}, config {config.config_hash} "
               f"({origin or 'preset ' + config.preset}), topic prefix {kafka.topic_prefix!r}, "
               f"web port {kafka.web_port}, bootstrap {kafka.bootstrap}; {local_state}")
    worker = bounded_shutdown(announcing(PromptExitWorker, started, start_warnings), kafka.shutdown_timeout_s)(
        app, loglevel=loglevel, quiet=True, logging_config=logging_config(kafka.log_format, loglevel))
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
