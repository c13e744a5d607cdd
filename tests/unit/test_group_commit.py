"""KIP-447's `TxnOffsetCommit` v3 (`streams.faust_compat.group_commit`): the bytes
on the wire as Kafka's message spec lays them out, and the handler's refusals."""

from __future__ import annotations

import asyncio
import struct

import pytest
from aiokafka import TopicPartition
from aiokafka.producer.transaction_manager import TransactionManager, TransactionState
from aiokafka.structs import OffsetAndMetadata

from streams.faust_compat.group_commit import (GroupMetadata, GroupMovedOn, GroupTxnOffsetCommitHandler,
                                               GroupTxnOffsetCommitRequest, TxnOffsetCommitRequest_v3,
                                               TxnOffsetCommitResponse_v3)
from streams.faust_compat.worker_transactions import worker_transactional_id


def compact(text: str | None) -> bytes:
    """A COMPACT_(NULLABLE_)STRING: unsigned varint length + 1 (0: null), then UTF-8 (lengths < 128 here)."""
    if text is None:
        return b"\x00"
    return bytes([len(text.encode()) + 1]) + text.encode()


def test_the_v3_request_is_laid_out_as_kafkas_spec_says():
    request = GroupTxnOffsetCommitRequest("app-worker-1", "app", 4000, 3, GroupMetadata(7, "m-1", "pod-0"),
                                          [("signals", [(2, 150, "")])])
    built = request.prepare({28: (0, 4)})
    assert type(built) is TxnOffsetCommitRequest_v3 and built.FLEXIBLE_VERSION
    expected = (compact("app-worker-1") + compact("app") + struct.pack(">qh", 4000, 3) + struct.pack(">i", 7)
                + compact("m-1") + compact("pod-0")
                + b"\x02" + compact("signals")  # one topic (compact array: n + 1)
                + b"\x02" + struct.pack(">iqi", 2, 150, -1) + compact("") + b"\x00"  # partition, its tags
                + b"\x00"  # topic's tags
                + b"\x00")  # request's tags
    assert built.encode() == expected
    # a static member's instance id is null for a dynamic member
    dynamic = GroupTxnOffsetCommitRequest("t", "g", 1, 0, GroupMetadata(1, "m"), []).prepare({28: (0, 3)})
    assert dynamic.encode().endswith(compact("m") + compact(None) + b"\x01" + b"\x00")


def test_a_broker_without_v3_is_refused():
    with pytest.raises(NotImplementedError):
        GroupTxnOffsetCommitRequest("t", "g", 1, 0, GroupMetadata(1, "m"), []).prepare({28: (0, 2)})


def test_the_v3_response_is_read():
    body = (struct.pack(">i", 0) + b"\x02" + compact("signals") + b"\x02" + struct.pack(">ih", 2, 22) + b"\x00"
            + b"\x00" + b"\x00")
    response = TxnOffsetCommitResponse_v3.decode(body)
    assert response.topics == [("signals", [(2, 22, {})], {})]


class FakeClient:
    def __init__(self, answer=None) -> None:
        self.sent = []
        self.answer = answer

    async def send(self, node_id, request, group=None):
        self.sent.append(request)
        return self.answer


class FakeSender:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self._retry_backoff = 0.01
        self._txn_manager = TransactionManager("app-worker-1", 10_000)
        self._txn_manager.set_pid_and_epoch(4000, 3)
        self._txn_manager.begin_transaction()
        self._txn_manager.maybe_add_partition_to_txn(TopicPartition("decisions", 2))
        self._txn_manager.partition_added(TopicPartition("decisions", 2))
        self._txn_manager.consumer_group_added("app")

    def _coordinator_dead(self, coordinator_type):
        pass


def pending(sender: FakeSender) -> tuple[dict, asyncio.Future]:
    offsets = {TopicPartition("signals", 2): OffsetAndMetadata(150, "")}
    return offsets, sender._txn_manager.add_offsets_to_txn(offsets, "app")


@pytest.mark.parametrize("metadata", [GroupMetadata(-1, ""), GroupMetadata(-1, "m-1"), GroupMetadata(7, ""), None],
                         ids=["reset by a failed heartbeat", "no generation", "no member id", "none"])
def test_the_handler_refuses_metadata_without_a_generation_and_sends_nothing(metadata):
    async def run() -> None:
        client = FakeClient()
        sender = FakeSender(client)
        offsets, future = pending(sender)
        done = await GroupTxnOffsetCommitHandler(sender, offsets, "app", metadata).do(0)
        assert done is True and client.sent == []
        assert_abortable(sender, future)

    asyncio.run(run())


def assert_abortable(sender, future) -> None:
    """Abortable, not fatal: the caller aborts the transaction and rejoins; the commit's
    future fails with GroupMovedOn, and the abort ends the transaction at the broker
    (EndTxn), not taking it for empty."""
    assert sender._txn_manager.state is TransactionState.ABORTABLE_ERROR
    with pytest.raises(GroupMovedOn):
        future.result()
    # the abort replaces aiokafka's failed transaction waiter: nothing left for asyncio to
    # log as "Future exception was never retrieved" (a traceback in the worker's log)
    waiter = sender._txn_manager._transaction_waiter
    sender._txn_manager.aborting_transaction()
    assert not sender._txn_manager.is_empty_transaction()
    assert waiter is not sender._txn_manager._transaction_waiter and waiter._log_traceback is False


@pytest.mark.parametrize("code", [22, 25, 27, 82])
def test_the_coordinators_generation_errors_are_abortable(code):
    async def run() -> None:
        answer = TxnOffsetCommitResponse_v3(0, [("signals", [(2, code, {})], {})], {})
        client = FakeClient(answer)
        sender = FakeSender(client)
        offsets, future = pending(sender)
        done = await GroupTxnOffsetCommitHandler(sender, offsets, "app", GroupMetadata(7, "m-1")).do(0)
        assert done is True and len(client.sent) == 1
        sent = client.sent[0].prepare({28: (0, 3)})
        assert (sent.generation_id, sent.member_id) == (7, "m-1")
        assert_abortable(sender, future)

    asyncio.run(run())


def test_accepted_offsets_are_committed_to_the_transaction():
    async def run() -> None:
        client = FakeClient(TxnOffsetCommitResponse_v3(0, [("signals", [(2, 0, {})], {})], {}))
        sender = FakeSender(client)
        offsets, future = pending(sender)
        assert await GroupTxnOffsetCommitHandler(sender, offsets, "app", GroupMetadata(7, "m-1")).do(0) is True
        assert future.result() is None
        assert sender._txn_manager.state is TransactionState.IN_TRANSACTION

    asyncio.run(run())


def test_the_worker_transactional_id_is_the_workers_and_stable(tmp_path):
    assert worker_transactional_id("app", "pod-0", tmp_path) == "app-worker-pod-0"
    first = worker_transactional_id("app", None, tmp_path / "a")
    assert first.startswith("app-worker-") and first == worker_transactional_id("app", None, tmp_path / "a")
    assert worker_transactional_id("app", None, tmp_path / "b") != first


def test_the_transactions_setting_is_checked_at_start_up(monkeypatch):
    from streams.errors import ConfigError
    from streams.worker.settings import load_settings

    monkeypatch.delenv("SIZER_TRANSACTIONS", raising=False)
    assert load_settings().transactions == "per_worker"
    monkeypatch.setenv("SIZER_TRANSACTIONS", "per_partition")
    assert load_settings().transactions == "per_partition"
    monkeypatch.setenv("SIZER_TRANSACTIONS", "per_batch")
    with pytest.raises(ConfigError, match=r"transactions: Input should be 'per_worker' or 'per_partition'"):
        load_settings()


def test_a_partition_whose_stable_offset_is_short_of_its_end_has_an_open_transaction():
    from types import SimpleNamespace

    from streams.faust_compat.worker_transactions import open_transactions

    # (last stable offset, log end) of each partition, as its leader would answer
    ends = {0: (10, 10), 1: (7, 12), 2: (0, 0)}

    class Client:
        cluster = SimpleNamespace(leader_for_partition=lambda tp: 1)

        async def send(self, node, request):
            built = request.prepare({2: (0, 5)})
            column = 0 if built.isolation_level == 1 else 1
            return SimpleNamespace(topics=[(topic, [(p, 0, -1, ends[p][column], -1) for p, _ in partitions])
                                           for topic, partitions in built.topics])

    tps = [TopicPartition("changelog", p) for p in ends]
    assert asyncio.run(open_transactions(Client(), tps)) == [TopicPartition("changelog", 1)]
    assert asyncio.run(open_transactions(Client(), [])) == []


class ChangelogEnds:
    """An AIOKafkaClient's answers to ListOffsets: partition 1 of the changelog holds an
    open transaction (stable offset 7, log end 12) until `end_transaction`."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.cluster = SimpleNamespace(leader_for_partition=lambda tp: 1)
        self.ends = {0: (10, 10), 1: (7, 12), 2: (0, 0)}
        self.asked = 0

    def end_transaction(self) -> None:
        self.ends[1] = (13, 13)  # the broker aborted it: its marker written

    async def send(self, node, request):
        from types import SimpleNamespace

        self.asked += 1
        built = request.prepare({2: (0, 5)})
        column = 0 if built.isolation_level == 1 else 1
        return SimpleNamespace(topics=[(topic, [(p, 0, -1, self.ends[p][column], -1) for p, _ in partitions])
                                       for topic, partitions in built.topics])


def worker_transactions(client: ChangelogEnds):
    from types import SimpleNamespace

    from streams.faust_compat.worker_transactions import WorkerTransactionManager

    class Producer:
        _txn_manager = SimpleNamespace(is_in_transaction=lambda: True)

        async def start_worker(self):
            return self

        def for_input(self, tp):
            return SimpleNamespace(client=client)

    manager = WorkerTransactionManager.__new__(WorkerTransactionManager)
    manager.app = SimpleNamespace(tables={"t": SimpleNamespace(changelog_topic_name="changelog")},
                                  assignor=SimpleNamespace(is_standby=lambda tp: False))
    manager.producer = Producer()
    return manager


def test_a_rebalance_notes_the_new_changelogs_and_recovery_waits_for_their_open_transactions():
    """The previous owner's open transaction can take the session timeout and the
    broker's 10 s check to end: waited for in the rebalance callback, during which
    aiokafka sends no heartbeat, the new owner outlived its own session and the
    group dropped it (UNKNOWN_MEMBER_ID at its next commit, seen on the broker)."""

    async def run() -> None:
        client = ChangelogEnds()
        manager = worker_transactions(client)
        assigned = {TopicPartition("changelog", p) for p in client.ends} | {TopicPartition("signals", 0)}
        await asyncio.wait_for(manager.on_rebalance(assigned, set(), assigned), timeout=1)
        assert client.asked == 0  # the callback returns at once, asking the broker nothing
        waiting = asyncio.ensure_future(manager.wait_settled())
        await asyncio.sleep(0.5)
        assert not waiting.done() and client.asked >= 2  # recovery waits while the transaction is open
        client.end_transaction()
        await asyncio.wait_for(waiting, timeout=1)
        # settled: the next rebalance that keeps them waits for none of them; a new one is waited for
        asked = client.asked
        await manager.on_rebalance(assigned, set(), set())
        await manager.wait_settled()
        assert client.asked == asked
        manager.note_active(assigned - {TopicPartition("changelog", 0)})
        manager.note_active(assigned)
        assert manager._unsettled == {TopicPartition("changelog", 0)}

    asyncio.run(run())


@pytest.mark.parametrize("title, waits", [("active", True), ("standby", False)])
def test_recovery_reads_the_active_changelogs_ends_after_the_wait(monkeypatch, title, waits):
    from types import SimpleNamespace

    from faust.tables.recovery import Recovery

    from streams.faust_compat.recovery import SafeSeekRecovery

    calls = []

    async def build_highwaters(self, consumer, tps, destination, title):
        calls.append("highwaters")

    async def wait_settled():
        calls.append("settled")

    monkeypatch.setattr(Recovery, "_build_highwaters", build_highwaters)
    recovery = SafeSeekRecovery.__new__(SafeSeekRecovery)
    recovery.app = SimpleNamespace(consumer=SimpleNamespace(transactions=SimpleNamespace(wait_settled=wait_settled)))
    asyncio.run(recovery._build_highwaters(None, set(), {}, title))
    assert calls == (["settled", "highwaters"] if waits else ["highwaters"])
    # faust's own transaction manager (per_partition) has no wait
    recovery.app = SimpleNamespace(consumer=SimpleNamespace(transactions=SimpleNamespace()))
    calls.clear()
    asyncio.run(recovery._build_highwaters(None, set(), {}, title))
    assert calls == ["highwaters"]


class Answer:
    """An AddPartitionsToTxn response as aiokafka's handler reads it."""

    def __init__(self, code: int) -> None:
        self.errors = [("decisions", [(5, code)])]


def test_a_transaction_refused_while_the_last_ones_markers_are_written_is_asked_again_sooner_then_later():
    from streams.faust_compat.group_commit import MARKER_WAITS_S, MarkerWaitHandler

    concurrent, none, coordinator_loading = 51, 0, 14
    tp = TopicPartition("decisions", 5)

    def started(sender: FakeSender) -> TransactionManager:
        """A new transaction on `sender`, `tp` waiting to be added."""
        manager = TransactionManager("app-worker-1", 10_000)
        manager.set_pid_and_epoch(4000, 3)
        manager.begin_transaction()
        manager.maybe_add_partition_to_txn(tp)
        sender._txn_manager = manager
        return manager

    async def run() -> None:
        sender = FakeSender(FakeClient())
        sender.marker_refusals = 0
        manager = started(sender)
        waits = [MarkerWaitHandler(sender, [tp]).handle_response(Answer(concurrent)) for _ in range(7)]
        assert waits == [0.002, 0.004, 0.008, 0.016, 0.02, 0.02, 0.02] == [*MARKER_WAITS_S, 0.02, 0.02]
        assert MarkerWaitHandler(sender, [tp]).handle_response(Answer(none)) is None
        assert tp in manager.txn_partitions
        # the next transaction's first refusal waits the shortest again
        started(sender)
        assert MarkerWaitHandler(sender, [tp]).handle_response(Answer(concurrent)) == 0.002
        # any other refusal waits as aiokafka makes it (its retry backoff)
        assert MarkerWaitHandler(sender, [tp]).handle_response(Answer(coordinator_loading)) == 0.01

    asyncio.run(run())
