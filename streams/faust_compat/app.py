"""The faust App of the worker: its transport (`transport.SizerTransport`), the
lock that keeps batches whole, what happens when partitions are revoked, and the
typed contract between the app and the transport (`Inputs`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol

import faust
from faust.types.enums import ProcessingGuarantee

from streams.faust_compat.membership import commit_form
from streams.faust_compat.transport import SizerTransport

log = logging.getLogger("streams.worker")


class InputPositionsLike(Protocol):
    """What the transport needs of the input positions (`streams.worker.positions`)."""

    def tracks(self, topic: str) -> bool: ...

    def next_offset(self, topic: str, partition: int) -> int: ...

    def uncommitted(self) -> list[tuple[str, int]]: ...

    def committed(self, partitions: Iterable[tuple[str, int]]) -> None: ...


@dataclass(frozen=True)
class Inputs:
    """The worker's side of the contract: the batch handler the fetch loop hands
    every fetched batch of the positioned inputs to, their positions (what the
    consumer commits), and each input topic's partition count in the spec."""

    handle_inputs: Callable[[list[Any]], Awaitable[None]]
    positions: InputPositionsLike
    partitions: Mapping[str, int]
    # commit a done batch at once when nothing more waits, at most once per this many
    # seconds (0: only on faust's commit interval); see `transport.DirectInputConsumer`
    eager_commit_floor_s: float
    # the most a fetch may wait at the broker for new records (`transport.ShortFetchWaitThread`)
    fetch_max_wait_ms: int
    # told the wall time in seconds of each commit that committed something
    observe_commit: Callable[[float], None]
    # Kafka's group.instance.id (static membership), None for a dynamic member
    group_instance_id: str | None = None


class MissingWiring(RuntimeError):
    """The app was started without `SizerApp.wire`: inputs would take faust's lossy path."""


class SizerApp(faust.App):
    """A faust App whose transport keeps every output inside the input's transaction
    and commits only between whole batches. `wire` must be called before start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processing_lock = asyncio.Lock()
        self._inputs: Inputs | None = None
        # what the worker keeps decoded from its tables, dropped whenever partitions
        # move (every rebalance revokes first): recovery may then rewrite the tables
        self.forget_on_rebalance: list[Callable[[], None]] = []
        # told the new assignment once partitions have moved (metrics of what moved away)
        self.on_assigned: list[Callable[[Any], None]] = []
        # why the local stores may hold writes of a transaction that did not commit
        # (None: they hold committed writes only); see `streams.worker.checkpoint`
        self.unclean: str | None = None
        self.checkpoint_written: Path | None = None  # removed by any table write after it
        # writes the checkpoint (table dir, app id, the stores) and returns its path; None:
        # no checkpoint (`streams.worker.checkpoint.write_checkpoint`, wired by the worker)
        self.write_checkpoint: Callable[[Path, str, list[Any]], Path] | None = None
        # under exactly-once: one transactional producer per input partition (faust's),
        # or one per worker (`worker_transactions`); set before the transport is made
        self.transactions = "per_partition"

    @property
    def commit_form(self) -> str:
        """How this worker commits, as its settings say it: workers of one group must
        all commit the same way (`membership.CommitFormAssignor`)."""
        return commit_form(self.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE, self.transactions)

    def wire(self, inputs: Inputs) -> None:
        self._inputs = inputs

    @property
    def inputs(self) -> Inputs:
        if self._inputs is None:
            raise MissingWiring("SizerApp.wire(Inputs(...)) was not called: the worker has no batch handler")
        return self._inputs

    async def on_start(self) -> None:
        self.inputs  # fail at start, loudly, not on the first fetch  # noqa: B018
        await super().on_start()

    async def _on_partitions_revoked(self, revoked: Any) -> None:
        # No batch may start after this, the one under way finishes first (its
        # partitions' producers are about to be stopped), and everything processed
        # is committed before faust goes on: faust keeps the open transactions of the
        # partitions this worker keeps, and its recovery, reading the changelogs
        # read_committed, would then see its own persisted offsets beyond the end of
        # the changelog and crash (ConsistencyError, seen in the failover test).
        log.info("rebalance: %d partitions revoked", len(revoked),
                 extra={"event": "partitions_revoked", "partitions": sorted(f"{tp.topic}[{tp.partition}]"
                                                                            for tp in revoked)})
        self.consumer.stop_flow()
        async with self.processing_lock:
            for forget in self.forget_on_rebalance:
                forget()
        if self.consumer.assignment():
            try:
                await self.consumer.commit()
            except Exception as exc:  # noqa: BLE001 - the positions make a missed commit safe
                log.warning("commit before rebalance failed: %r", exc)
                self.local_state_unclean("the commit before a rebalance failed")
        await super()._on_partitions_revoked(revoked)

    async def _on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        log.info("rebalance: %d partitions assigned", len(assigned),
                 extra={"event": "partitions_assigned", "partitions": sorted(f"{tp.topic}[{tp.partition}]"
                                                                             for tp in assigned)})
        for hook in self.on_assigned:
            hook(assigned)
        await super()._on_partitions_assigned(assigned, generation_id)

    async def on_stop(self) -> None:
        """Under exactly-once, the last commit and the checkpoint of the local tables
        before faust stops: faust-streaming 0.15.3 stops its tables (closing their
        stores) before its consumer makes its own last commit. With the flow stopped
        no batch starts (`BatchHandler` drops a fetched batch when the flow is not
        active); the commit waits for the one under way."""
        consumer = self._consumer
        if self.in_transaction and consumer is not None and self._inputs is not None:
            try:
                if consumer.assignment():
                    consumer.stop_flow()
                    await consumer.commit(start_new_transaction=False)
            except Exception as exc:  # noqa: BLE001 - a stop goes on; the next start rebuilds
                log.warning("last commit before stopping failed: %r", exc)
                self.local_state_unclean("the last commit failed")
        await super().on_stop()

    def local_state_unclean(self, why: str) -> None:
        """The local stores may now hold writes that never committed: no checkpoint."""
        self.unclean = self.unclean or why

    def checkpoint_if_clean(self) -> None:
        """Write the checkpoint of the local stores (`streams.worker.checkpoint`) when
        every table write of the run is committed; called under the processing lock
        by the last commit. Under exactly-once only."""
        from streams.faust_compat.checkpoint import committed_stores

        if self.checkpoint_written is not None or self.write_checkpoint is None:
            return
        if self.unclean is None and self.inputs.positions.uncommitted():
            self.unclean = "the last commit did not commit every input position"
        if self.unclean is not None:
            log.info("no checkpoint of the local tables: %s; the next start rebuilds them", self.unclean)
            return
        try:
            path = self.write_checkpoint(Path(self.conf.tabledir), self.conf.id, committed_stores(self))
        except Exception as exc:  # noqa: BLE001 - without it the next start rebuilds; never fail a stop
            log.warning("no checkpoint of the local tables (%r); the next start rebuilds them", exc)
            return
        self.checkpoint_written = path
        log.info("checkpoint of the local tables written to %s", path)

    def table_written(self) -> None:
        """A table write: a checkpoint written before it no longer holds."""
        if self.checkpoint_written is not None:
            self.checkpoint_written.unlink(missing_ok=True)
            self.checkpoint_written = None
            self.local_state_unclean("a table was written after the checkpoint")

    def _new_transport(self) -> Any:
        if self.transactions == "per_worker":
            from streams.faust_compat.worker_transactions import WorkerTransport

            return WorkerTransport(self.conf.broker_consumer, self)
        return SizerTransport(self.conf.broker_consumer, self)
