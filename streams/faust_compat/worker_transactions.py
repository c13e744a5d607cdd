"""One transactional producer per worker (`SIZER_TRANSACTIONS=per_worker`): one
transaction per commit covering every partition the worker holds, fenced by the
consumer group's generation (`group_commit`, KIP-447) instead of by one
transactional id per input partition.

faust-streaming 0.15.3 keeps one transactional producer per input partition and
commits their transactions one by one (`transport.ConcurrentCommitProducer`
commits them concurrently): with six partitions about 30 requests and 24
transaction-log appends per commit, and the slowest of six marker waits. Here:

- `WorkerTransactionProducer` (faust's producer type) holds one
  `group_commit.GroupMetadataProducer` whose transactional id is the worker's own
  (`worker_transactional_id`: its static group instance id, else an id kept in the
  worker's data directory), stable across restarts, so that a restarted worker's
  first request fences and aborts what its previous run left open. Its
  transaction timeout is the group's session timeout: a worker paused mid
  transaction has its transaction aborted by the broker about when the group gives
  its partitions away;
- `WorkerTransactionManager` (faust's transaction manager) commits the offsets of
  a commit in that one transaction, with the group metadata taken when the
  partitions were assigned (`transport.ShortFetchWaitThread.group_metadata`), never
  aiokafka's live values, which a failed heartbeat resets to -1 and "" (a commit
  carrying those would be accepted unfenced). A commit the coordinator refuses
  (`group_commit.GroupMovedOn`: the group has moved on from this worker) is
  aborted, so none of its outputs is ever read; the worker then exits: its local
  stores hold the aborted writes, and only a start without a checkpoint rebuilds
  them from the committed changelogs (`worker.checkpoint`);
- after every rebalance, before recovery reads them, it waits until the changelog
  partitions that became active here have no open transaction (`open_transactions`:
  the read_committed end short of the log end). With a producer per partition, the
  new owner's producer took the previous owner's transactional id and aborted its
  transaction; with one per worker nothing does, and recovery would restore up to
  a transaction the previous owner may still commit, then process its inputs a
  second time. The wait is recovery's (`recovery.SafeSeekRecovery` calls
  `wait_settled` before it reads the changelogs' ends), not the rebalance
  callback's: aiokafka sends no heartbeat until that callback returns, and the
  previous owner's transaction can take its timeout (the session timeout) and the
  broker's next check for timed-out transactions (10 s) to end, so a wait there
  outlived this member's own session: the group dropped it, and its next commit
  was refused (UNKNOWN_MEMBER_ID).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.protocol.offset import OffsetRequest
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import Producer

from streams.faust_compat import membership
from streams.faust_compat.group_commit import GroupMetadata, GroupMetadataProducer, GroupMovedOn
from streams.faust_compat.transport import SizerTransport

log = logging.getLogger("streams.worker")

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
# how long recovery waits for the previous owner's transaction to end, at most: the
# broker aborts it past its timeout (the session timeout), checking every 10 s; below
# faust's timeout of each recovery step (broker_request_timeout, 90 s), which ends the
# recovery silently
SETTLE_WAIT_S = 75.0
RETRY_BACKOFF_MS = 20
# For the broker tests of a paused worker (tests/integration/test_zombie.py): `produced:N`
# stops the process (SIGSTOP) at its Nth commit of a signal's offset (so its transaction
# holds decisions) before the offsets are sent, `offsets:N` once they are accepted,
# before the transaction is committed. Not a setting.
STOP_AT = "STREAMS_TEST_STOP_AT"


def stop_point(environ: Any = os.environ) -> tuple[str, int] | None:
    """(`produced` or `offsets`, the commit's number) from STOP_AT; None unset."""
    value = environ.get(STOP_AT, "")
    if not value:
        return None
    point, _, count = value.partition(":")
    if point not in ("produced", "offsets") or not count.isdigit():
        raise ValueError(f"{STOP_AT}: produced:N or offsets:N, not {value!r}")
    return point, int(count)


def worker_transactional_id(app_id: str, group_instance_id: str | None, appdir: Path) -> str:
    """The worker's transactional id: `<app>-worker-<instance id>` for a static
    member, else `<app>-worker-<id kept in appdir>` (made at the first start)."""
    if group_instance_id:
        return f"{app_id}-worker-{group_instance_id}"
    path = appdir / "transactional-id"
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if not kept:
        kept = uuid.uuid4().hex[:12]
        appdir.mkdir(parents=True, exist_ok=True)
        path.write_text(kept + "\n")
    return f"{app_id}-worker-{kept}"


async def end_offsets(client: Any, tps: Iterable[TopicPartition], isolation_level: int) -> dict[TopicPartition, int]:
    """Each partition's end offset at the isolation level (READ_COMMITTED: the last
    stable offset), asked of its leader with `client` (an AIOKafkaClient)."""
    by_node: dict[int, dict[str, list[tuple[int, int]]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for tp in tps:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            await client._wait_on_metadata(tp.topic)
            leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            raise RuntimeError(f"{tp.topic}[{tp.partition}] has no leader")
        by_node[leader][tp.topic].append((tp.partition, -1))
    found: dict[TopicPartition, int] = {}
    for node, topics in by_node.items():
        response = await client.send(node, OffsetRequest(-1, isolation_level, list(topics.items())))
        for topic, partitions in response.topics:
            for partition, error_code, _timestamp, offset, *_ in partitions:
                if error_code:
                    raise RuntimeError(f"{topic}[{partition}]: ListOffsets error {error_code}")
                found[TopicPartition(topic, partition)] = offset
    return found


async def open_transactions(client: Any, tps: Iterable[TopicPartition]) -> list[TopicPartition]:
    """The partitions whose last stable offset is short of their log end: a
    transaction is open on them (or its markers are being written)."""
    tps = sorted(tps)
    if not tps:
        return []
    stable = await end_offsets(client, tps, READ_COMMITTED)
    ends = await end_offsets(client, tps, READ_UNCOMMITTED)
    return [tp for tp in tps if stable[tp] < ends[tp]]


class WorkerTransactionProducer(Producer):
    """faust's producer with the worker's one transactional producer (`worker`)."""

    worker: GroupMetadataProducer | None = None

    @property
    def _producer_type(self) -> type:
        return GroupMetadataProducer

    def _settings_extra(self) -> Any:
        settings = dict(super()._settings_extra())
        # no longer than the session timeout: see the module
        settings["transaction_timeout_ms"] = int(self.app.conf.broker_session_timeout * 1000)
        # faust gives none: aiokafka's 100 ms would be waited by every EndTxn refused while
        # the previous transaction's markers are written, and every produce batch Kafka
        # 3.9's partition verification answers NOT_ENOUGH_REPLICAS; the wait for the
        # markers (AddPartitionsToTxn) grows from 2 to 20 ms (`group_commit.MARKER_WAITS_S`)
        settings["retry_backoff_ms"] = RETRY_BACKOFF_MS
        return settings

    def transactional_id(self) -> str:
        return worker_transactional_id(self.app.conf.id, self.app.inputs.group_instance_id, Path(self.app.conf.appdir))

    async def start_worker(self) -> GroupMetadataProducer:
        """The worker's producer, started (once) with its producer id: getting it fences
        this worker's previous run and aborts what it left open."""
        if self.worker is None:
            producer = self._new_producer(transactional_id=self.transactional_id())
            await producer.start()
            self.worker = producer
        await self.worker._txn_manager.wait_for_pid()
        return self.worker

    def for_input(self, tp: Any) -> GroupMetadataProducer:
        """The producer of an input's outputs: the worker's, whatever the partition."""
        if self.worker is None:
            raise RuntimeError("the worker's transactional producer is not started")
        return self.worker

    async def flush(self) -> None:
        await super().flush()
        if self.worker is not None:
            await self.worker.flush()

    async def on_stop(self) -> None:
        worker, self.worker = self.worker, None
        await super().on_stop()
        if worker is not None:
            await worker.stop()


class WorkerTransactionManager(TransactionManager):
    """faust's transaction manager for `WorkerTransactionProducer`: one transaction
    for every partition, its offsets fenced by the group metadata (see the module)."""

    producer: WorkerTransactionProducer
    _commits = 0  # of a signal's offset (`STOP_AT`)
    _stopped_at: tuple[str, int] | None = None
    _active: set[TopicPartition] = set()  # the changelog partitions active here (replaced, never mutated)
    _unsettled: set[TopicPartition] = set()  # those of them recovery has not yet waited for (the same)

    def _maybe_stop(self, point: str) -> None:
        wanted = stop_point()
        if wanted == (point, self._commits) and self._stopped_at != wanted:
            self._stopped_at = wanted
            log.warning("stopping the process (SIGSTOP) at commit %d, %s (%s)", self._commits, point, STOP_AT)
            os.kill(os.getpid(), signal.SIGSTOP)

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        producer = await self.producer.start_worker()
        if not producer._txn_manager.is_in_transaction():
            await producer.begin_transaction()
        self.note_active(assigned)

    def note_active(self, assigned: Any) -> None:
        """Note the changelog partitions that became active here at this rebalance (newly
        assigned, or a standby promoted), for `wait_settled`; a wait a rebalance
        interrupted is owed still for those kept."""
        changelogs = {table.changelog_topic_name for table in self.app.tables.values()}
        assignor = self.app.assignor
        active = {TopicPartition(tp.topic, tp.partition) for tp in assigned
                  if tp.topic in changelogs and not assignor.is_standby(tp)}
        self._unsettled = (self._unsettled | (active - self._active)) & active
        self._active = active

    async def wait_settled(self) -> None:
        """Until no changelog partition noted by `note_active` has an open transaction
        (the previous owner's): recovery reads them next. Called by recovery, never in
        the rebalance callback (see the module)."""
        tps = self._unsettled
        if not tps:
            return
        client = self.producer.for_input(None).client
        started = time.monotonic()
        waiting = await open_transactions(client, tps)
        while waiting:
            if time.monotonic() - started > SETTLE_WAIT_S:
                raise RuntimeError(f"changelog partitions still hold an open transaction after {SETTLE_WAIT_S:g} s: "
                                   f"{', '.join(f'{tp.topic}[{tp.partition}]' for tp in waiting)}")
            await asyncio.sleep(0.2)
            waiting = await open_transactions(client, waiting)
        self._unsettled = self._unsettled - tps
        log.info("changelogs settled: %d partitions with no open transaction after %.2f s", len(tps),
                 time.monotonic() - started, extra={"event": "changelogs_settled"})

    async def send(self, topic: str, key: Any, value: Any, partition: Any, timestamp: Any, headers: Any, *,
                   transactional_id: str | None = None) -> Any:
        p = self.consumer.key_partition(topic, key, partition)
        return await self.producer.for_input(None).send(
            topic, value, key=key, partition=p, headers=list(headers.items()) if isinstance(headers, dict) else headers,
            timestamp_ms=int(timestamp * 1000) if timestamp else None)

    async def commit(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        """Commit the one transaction with `offsets`, as the member the group assigned
        the partitions to; begin the next unless told not to."""
        if not offsets:
            return False
        producer = self.producer.for_input(None)
        metadata: GroupMetadata | None = getattr(self.consumer._thread, "group_metadata", None)
        self._commits += any(tp.topic.endswith("signals") for tp in offsets)
        try:
            self._maybe_stop("produced")
            await producer.send_offsets_to_transaction(
                {TopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()},
                self.app.conf.id, metadata)
            self._maybe_stop("offsets")
            await producer.commit_transaction()
        except (GroupMovedOn, ProducerFenced) as refused:
            await self._abort_and_exit(producer, refused)
        if start_new_transaction:
            await producer.begin_transaction()
        return True

    async def _abort_and_exit(self, producer: GroupMetadataProducer, refused: GroupMovedOn) -> None:
        """Abort the refused transaction (its outputs are never read), then exit: the
        local stores hold its writes (see the module). A fenced producer's transaction
        was aborted by the broker (it timed out, or a newer producer took the id)."""
        outcome = "aborted by the broker (the producer was fenced)"
        if not producer._txn_manager.is_fatal_error():
            try:
                await producer.abort_transaction()
                outcome = "aborted"
            except Exception:  # noqa: BLE001 - fenced meanwhile: the broker aborts it
                pass
        # another worker given this one's group.instance.id: one line, exit 2 (a configuration fault)
        await membership.check_membership(self.app)
        why = "the group moved on from this worker" if isinstance(refused, GroupMovedOn) else "the producer was fenced"
        log.error("%s: %r; the transaction is %s; exiting so that a restart rebuilds the local tables and rejoins "
                  "the group", why, refused, outcome, extra={"event": "transaction_refused"})
        logging.shutdown()
        os._exit(75)


class WorkerTransport(SizerTransport):
    """`transport.SizerTransport` with one transactional producer per worker."""

    TransactionManager = WorkerTransactionManager
    Producer = WorkerTransactionProducer
