"""The transport: fenced producers, whole-batch commits of the input positions,
and the direct input path (docs/pages/exactly-once.md, "Exactly-once, and the faust-streaming
defects it works around").

A commit only ever sees whole batches. faust commits on a timer, in its own
task. A commit that runs while a batch is half done (some outputs sent, state or
positions still being written) commits the outputs without the state: after a
crash the input is decided twice, or its state change is lost (seen here under
SIGKILL; faust-streaming issue #517 reports the duplicates). Here the worker
handles each batch under `app.processing_lock` and the consumer takes the same
lock to commit.

The contract with the app is `app.inputs` (`streams.faust_compat.app.Inputs`):
the batch handler and the input positions, required, set by `SizerApp.wire`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from faust.transport.consumer import CONSUMER_FETCHING, TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Producer, Transport

from streams.faust_compat import membership
from streams.faust_compat.group_commit import GroupMetadata
from streams.faust_compat.recovery import RecoveryEnd

log = logging.getLogger("streams.worker")


class FencingTransactionManager(TransactionManager):
    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        """Start the producers of the assigned partitions and wait until each has its
        producer id: getting it fences the previous owner's producer and aborts its
        open transaction, so the changelogs' read_committed end is where recovery can
        trust it. Otherwise recovery can read the end of a changelog while a dead
        worker's transaction still holds it back, find a standby's persisted offset
        beyond it, and crash (faust ConsistencyError, seen in the failover test)."""
        await super().on_rebalance(assigned, revoked, newly_assigned)
        producers = self.producer._transaction_producers
        for transactional_id in sorted(self._tps_to_transactional_ids(assigned)):
            producer = producers.get(transactional_id)
            if producer is not None:
                await producer._txn_manager.wait_for_pid()

    async def _start_transactions(self, tids: Any) -> None:
        """Start the assigned partitions' transactional producers all at once.

        faust-streaming 0.15.3 starts them one after another, each a new client:
        bootstrap, metadata, the transaction coordinator, a producer id; a worker
        taking every partition starts seven (the six input partitions' group and
        the instruments'), 0.14 s one after another on the local broker
        (`streams.bench.restart`), before recovery can begin. Each
        producer is its own, under its own transactional id, and faust's
        `begin_transaction` keeps each one's failures to itself (logged)."""
        await asyncio.gather(*(self.producer.maybe_begin_transaction(tid) for tid in tids))


class ConcurrentCommitProducer(Producer):
    """Commits the open transactions of a commit all at once, not one after another.

    Under exactly-once faust keeps one transactional producer per input partition
    and, on each commit, ends their transactions in turn (`commit_transactions`):
    sending the offsets, committing and beginning again, three round trips each.
    With six input partitions a commit took 25-80 ms on the build machine, and an
    order is readable only once its transaction commits. The transactions are
    independent (each carries its own partition's outputs and offsets), so here
    they are committed concurrently, each still under faust's per-producer lock."""

    async def commit_transactions(self, tid_to_offset_map: Any, group_id: str,
                                  start_new_transaction: bool = True) -> None:
        async def commit_one(transactional_id: str, offsets: Any) -> None:
            # as faust does: a transaction with no lock is an error (KeyError), one whose
            # producer is gone is skipped with a warning
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is None:
                    log.warning("commit invoked for unknown transaction %s", transactional_id)
                    return
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
                if start_new_transaction:
                    await producer.begin_transaction()

        names = list(tid_to_offset_map)
        results = await asyncio.gather(*(commit_one(name, tid_to_offset_map[name]) for name in names),
                                       return_exceptions=True)
        failures = [(name, result) for name, result in zip(names, results) if isinstance(result, BaseException)]
        for name, failure in failures:
            log.warning("commit of transaction %s failed: %r", name, failure)
        if failures:
            self.app.local_state_unclean("a transaction commit failed")
            if any(isinstance(failure, KafkaError) for _, failure in failures):
                # was this worker fenced by another under its group.instance.id? (it then stops here)
                await membership.check_membership(self.app)
            # a fence first, whatever else failed: faust's TransactionManager.commit
            # crashes the app on ProducerFenced, and only on it
            fenced = [failure for _, failure in failures if isinstance(failure, ProducerFenced)]
            raise fenced[0] if fenced else failures[0][1]

    async def maybe_begin_transaction(self, transactional_id: str) -> None:
        """Begin the partition's transaction unless it is open already.

        At every rebalance faust-streaming 0.15.3 begins a transaction for every
        partition assigned (`TransactionManager._start_transactions`), those it kept
        included, whose transactions are open (the worker commits before a rebalance
        and begins the next one at once); aiokafka refuses the transition and faust
        logs it as a WARNING, "Exception in begin_transaction ... Invalid state
        transition IN_TRANSACTION -> IN_TRANSACTION", and carries on with the open
        transaction: the right one. Nothing was wrong but the line."""
        producer = self._transaction_producers.get(transactional_id)
        if producer is not None and producer._txn_manager is not None and producer._txn_manager.is_in_transaction():
            return
        await super().maybe_begin_transaction(transactional_id)

    def for_input(self, tp: Any) -> Any:
        """The transactional producer of an input partition's outputs: its own (faust's
        transactional id of its partition group, `TransactionManager._tps_to_transactional_ids`)."""
        return self._transaction_producers[f"{self.app.conf.id}-{self.app.assignor.group_for_topic(tp.topic)}-"
                                           f"{tp.partition}"]


class ShortFetchWaitThread(AIOKafkaConsumerThread):
    """The worker's consumer with `Inputs.fetch_max_wait_ms` instead of faust's fixed
    1,500 ms, and `Inputs.group_instance_id` as its static group membership, which
    faust-streaming 0.15.3 `_create_worker_consumer` cannot set (aiokafka 0.14 takes
    it as `group_instance_id`). A static member that stops sends no LeaveGroup and
    one that starts again under the same id inside the session timeout takes its
    partitions back without a rebalance. Its group requests are those of a static
    member (`membership.guard`): a worker whose id another worker has taken stops.

    aiokafka sends one fetch at a time to a broker. Once a partition's fetched
    records have waited unconsumed for its prefetch backoff (100 ms: a long batch,
    a commit), the next fetch to that broker goes out without that partition, and
    the broker holds it for up to the fetch's maximum wait when nothing new arrived
    on the others (fills and controls are quiet). Until it returns, no signal of
    any partition on that broker is fetched: with faust's 1,500 ms that stalled the
    worker for a second and a half, then it fetched a backlog big enough to stall
    again (seen in `make bench`: exactly-once p50 between 0.3 s and 2.4 s, p99 up to
    4.6 s). The Java consumer avoids it by not fetching from a broker while
    records of it are still buffered.

    It also keeps the member's group metadata as the group assigned it partitions
    (`group_metadata`), which the worker's one transaction commits its offsets with
    (`worker_transactions`): aiokafka's own are reset to -1 and "" when a heartbeat
    fails, and a commit carrying those is not fenced."""

    group_metadata: GroupMetadata | None = None

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        coordinator = self._ensure_consumer()._coordinator
        self.group_metadata = GroupMetadata(coordinator.generation, coordinator.member_id,
                                            coordinator._group_instance_id)
        await super().on_partitions_assigned(assigned, generation_id)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.inputs.fetch_max_wait_ms
        instance_id = self.app.inputs.group_instance_id
        consumer._group_instance_id = instance_id  # read when the consumer starts
        if instance_id is not None:
            membership.guard(consumer._client, self.app.conf.id, instance_id)
        return consumer


class PausingConsumer(Consumer):
    """Pauses partitions in aiokafka too, not only in faust's bookkeeping.

    faust-streaming 0.15.3 pauses a partition by no longer asking for its records;
    aiokafka keeps fetching it. A fetched record nobody asks for then holds back
    every further fetch from that broker for aiokafka's prefetch backoff (100 ms).
    faust reads its changelogs only in recovery and standby, and the worker writes
    them all the time: after each start or rebalance, the first record fetched
    from each changelog partition stalled the inputs for 100 ms (seen in `make
    bench` as 100-150 ms latencies over the first 0.3 s). Here every pause and
    resume is mirrored to aiokafka, in the consumer's thread.

    faust's stall check (`verify_event_path`) then expects fetches of partitions
    it paused itself and, five minutes after start, logs an ERROR for every
    paused changelog partition every few seconds; it is skipped for those.

    And a fetch loop that finds every partition paused (recovery under way, at
    each start and rebalance) sleeps a whole second in faust-streaming 0.15.3
    (`Consumer._wait_next_records`) however soon recovery resumes them: every
    start decided its first input a second after the worker was ready. Here it
    waits for the next resume instead, at most that second."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paused_here: set[Any] = set()  # faust's TPs paused in aiokafka too
        self._resumed = asyncio.Event()  # set by every resume: the fetch loop may go on

    async def _wait_next_records(self, timeout: float) -> Any:
        if self.flow_active and not self.app.client_only and not self._get_active_partitions():
            self._resumed.clear()
            await self.wait(self._resumed, timeout=1.0)
            if not self._get_active_partitions():
                self.not_waiting_next_records.set()
                return {}, set()
        return await super()._wait_next_records(timeout)

    def pause_partitions(self, tps: Any) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._paused_here.update(tps)
        self._mirror("pause", tps)

    def resume_partitions(self, tps: Any) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._paused_here.difference_update(tps)
        self._mirror("resume", tps)
        self._resumed.set()

    def verify_event_path(self, now: float, tp: Any) -> None:
        if tp in self._paused_here:
            return None  # paused on purpose: no fetch is due
        return super().verify_event_path(now, tp)

    def _mirror(self, action: str, tps: list[Any]) -> None:
        thread = self._thread
        consumer = thread._consumer
        if consumer is None or not tps:
            return
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]

        def apply() -> None:
            assigned = consumer.assignment()
            getattr(consumer, action)(*[tp for tp in partitions if tp in assigned])

        try:
            thread.thread_loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the consumer's loop is closed: it is stopping
            pass


class WholeBatchConsumer(PausingConsumer):
    """Commits only between batches, never in the middle of one; and for the inputs
    with positions (`streams.worker.positions`) commits those positions, not the
    offsets faust derives from its acks, which can skip records or stop advancing
    for good after a restart (faust-streaming issues #596, #606)."""

    async def highwaters(self, *partitions: Any) -> Any:
        """The changelogs' ends as recovery must see them. Under exactly-once faust
        0.15.3 answers from the last fetch response's stable offset, which is None for
        a partition not fetched yet: recovery then takes a standby's changelog, just
        made active, to end at -1 and crashes on its persisted offset (ConsistencyError,
        seen in the failover test). A read_committed consumer's end offsets are the
        last stable offsets, from the broker."""
        if not self.in_transaction:
            return await super().highwaters(*partitions)
        thread = self._thread
        return await thread.call_thread(thread._ensure_consumer().end_offsets, list(partitions))

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        if not self.in_transaction:
            # At-least-once commits the positions, which move only when a batch is
            # complete, after flushing every send: no need to hold batches back.
            return await super().commit(topics, start_new_transaction=start_new_transaction)
        async with self.app.processing_lock:
            did_commit = await super().commit(topics, start_new_transaction=start_new_transaction)
            if not start_new_transaction:
                # the last commit, as the worker stops: a checkpoint of the local state
                # when all of it is committed (`streams.worker.checkpoint`)
                self.app.checkpoint_if_clean()
            return did_commit

    def _filter_committable_offsets(self, tps: Any) -> dict:
        offsets = super()._filter_committable_offsets(tps)
        positions = self.app.inputs.positions
        for tp in [tp for tp in offsets if positions.tracks(tp.topic)]:
            del offsets[tp]
        # Every input whose position moved since its last commit, whether or not
        # faust counted acks for it: faust ignores acks below the group's committed
        # offset, and a transaction is committed only together with offsets.
        # A partition revoked meanwhile is not ours to commit: its open transaction is
        # aborted when the new owner's producer fences it, and the work is redone there.
        assigned = self.assignment()
        for topic, partition in positions.uncommitted():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                offsets[tp] = positions.next_offset(topic, partition)
            else:
                positions.committed([(topic, partition)])
        return offsets

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        started = time.perf_counter()
        did_commit = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        if did_commit:
            self.app.inputs.observe_commit(time.perf_counter() - started)
            self.app.inputs.positions.committed((tp.topic, tp.partition) for tp in offsets)
        return did_commit


class DirectInputConsumer(WholeBatchConsumer):
    """Hands the records of the inputs with positions to the worker in whole fetched
    batches, straight from the fetch loop, instead of one by one through faust's
    conductor, channels, streams and agents (about 0.1 ms a record on the build
    machine, more than the engine's own work). Every other record (changelogs in
    recovery and standby, instruments) takes faust's own path.

    The loop is faust-streaming 0.15.3's `Consumer._drain_messages`. Differences
    from upstream, all of them:
    - a record of an input with positions (`app.inputs.positions.tracks`) is
      collected instead of passing through faust's read-offset bookkeeping, gap
      tracking and `callback`; the collected batch goes to
      `app.inputs.handle_inputs` once the fetched records are all seen;
    - under exactly-once, once a batch is handled and the fetch returned fewer
      records than a full batch (nothing more was waiting), its transaction is
      committed at once, at most once per `Inputs.eager_commit_floor_s` (a batch
      the floor held back is committed when it has passed, the fetch's wait cut
      short to that moment), instead of waiting for faust's commit timer: an order
      is readable downstream only when its transaction commits, so the timer's
      interval was the order's latency;
    - faust's stall check (`verify_event_path`) skips those inputs: it reads the
      inbound times of faust's streams, which they never pass through;
    - under exactly-once, after each fetched batch, active recovery ends as soon as
      every active changelog partition has been read to its end
      (`recovery.RecoveryEnd`), not after faust's two empty 5 s polls;
    - nothing else: faust's yield every 100 records, its `commit_every` commit,
      its dropped-message log and its exception log are kept for the records it
      still delivers."""

    def _new_consumer_thread(self) -> Any:
        return ShortFetchWaitThread(self, loop=self.loop, beacon=self.beacon)

    async def _positions(self, tps: list[Any]) -> dict[Any, int]:
        """The consumer's position in each of `tps` ({} when one is no longer assigned:
        a rebalance is under way)."""
        thread = self._thread
        consumer = thread._ensure_consumer()

        async def read() -> dict[Any, int]:
            # a position being reset is waited for, at most a second: the fetch loop waits on this
            return {tp: await asyncio.wait_for(consumer.position(TopicPartition(tp.topic, tp.partition)), 1.0)
                    for tp in tps}

        try:
            return await thread.call_thread(read)  # type: ignore[no-any-return]
        except (Exception, asyncio.TimeoutError):  # noqa: BLE001 - mid-rebalance: look again next time
            return {}

    def verify_event_path(self, now: float, tp: Any) -> None:
        # the positioned inputs never pass through faust's streams, whose inbound times
        # this check reads; `worker.positions.StallWatch` watches them instead
        if self.app.inputs.positions.tracks(tp.topic):
            return None
        return super().verify_event_path(now, tp)

    async def _drain_messages(self, fetcher: Any) -> None:
        try:
            await self._drain_fetched(fetcher)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _drain_fetched(self, fetcher: Any) -> None:
        """The fetch loop of `_drain_messages` (its error handling apart)."""
        inputs_contract = self.app.inputs  # required: `SizerApp.wire`
        handle_inputs = inputs_contract.handle_inputs
        tracks = inputs_contract.positions.tracks
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        floor = inputs_contract.eager_commit_floor_s if self.in_transaction else 0.0
        full_batch = self.app.conf.broker_max_poll_records
        clock = asyncio.get_running_loop().time
        recovery_end = RecoveryEnd(self.app, self._paused_here) if self.in_transaction else None
        last_eager = 0.0
        uncommitted = False  # a batch was handled since the last eager commit
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(CONSUMER_FETCHING)
            inputs: list[Any] = []
            await self.sleep(0)
            # a handled batch whose commit the floor held back is committed when the
            # floor has passed, whether or not more input arrives by then
            timeout = max(0.0, min(1.0, last_eager + floor - clock())) if uncommitted else 1.0
            if not self.should_stop:
                async for tp, message in self.getmany(timeout=timeout):
                    if tracks(tp.topic):
                        inputs.append(message)
                        continue
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                if recovery_end is not None:
                    await recovery_end.after_fetch(self._positions)
                if inputs:
                    await handle_inputs(inputs)
                    uncommitted = bool(floor)
                if uncommitted and len(inputs) < full_batch:  # nothing more was waiting
                    now = clock()
                    if now - last_eager >= floor:
                        last_eager, uncommitted = now, False
                        await self.commit()
            self.diag.unset_flag(CONSUMER_FETCHING)


class SizerTransport(Transport):
    """The aiokafka transport with fenced producers, whole-batch commits of the input
    positions, concurrent transaction commits, the direct input path and a short
    fetch wait."""

    TransactionManager = FencingTransactionManager
    Consumer = DirectInputConsumer
    Producer = ConcurrentCommitProducer
