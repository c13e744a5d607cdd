"""The worker's departures from faust-streaming's defaults that need no broker to
check: the consumer's fetch wait, concurrent commits of a commit's transactions,
and the size of the tables' local stores.
(Their effect on latency is measured by `make bench`; the exactly-once guarantees
they must keep are held by the broker tests.)"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import ProducerFenced
from prometheus_client import CollectorRegistry

from streams.config import load_config
from streams.faust_compat.app import SizerApp
from streams.faust_compat.transport import ConcurrentCommitProducer
from streams.worker.settings import WorkerSettings
from streams.kafka.topics import load_topics
from streams.worker.app import build_app


def test_the_worker_consumer_waits_at_the_broker_at_most_fetch_max_wait_ms(tmp_path):
    kafka = WorkerSettings(bootstrap="127.0.0.1:1", fetch_max_wait_ms=7, data_dir=tmp_path)
    app = build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), CollectorRegistry())

    async def consumer_options() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # what faust starts
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(consumer_options()) == 7  # faust 0.15.3 fixes 1,500


def test_the_default_fetch_wait_is_short():
    assert WorkerSettings(bootstrap="127.0.0.1:1").fetch_max_wait_ms == 20


class FakeTransactionProducer:
    """Records the transaction calls; each commit waits until `release` is set."""

    def __init__(self, name: str, journal: list[tuple[str, str]], release: asyncio.Event, fail: bool = False):
        self.name, self.journal, self.release, self.fail = name, journal, release, fail

    async def send_offsets_to_transaction(self, offsets, group_id):
        self.journal.append(("offsets", self.name, dict(offsets), group_id))

    async def commit_transaction(self):
        self.journal.append(("commit started", self.name))
        await self.release.wait()
        if self.fail:
            raise RuntimeError(f"{self.name} refused")
        self.journal.append(("committed", self.name))

    async def begin_transaction(self):
        self.journal.append(("begun", self.name))


class AppStandIn:
    """What the producer tells its app: a failed commit leaves local state unclean."""

    unclean = None
    local_state_unclean = SizerApp.local_state_unclean


def producer_with(transaction_producers: dict) -> ConcurrentCommitProducer:
    producer = object.__new__(ConcurrentCommitProducer)  # only the transaction bookkeeping is used
    producer._transaction_producers = transaction_producers
    producer._trn_locks = {name: asyncio.Lock() for name in transaction_producers}
    producer.app = AppStandIn()
    return producer


def test_the_transactions_of_one_commit_are_committed_concurrently():
    async def scenario():
        journal: list = []
        release = asyncio.Event()
        names = [f"sizer-1-{p}" for p in range(3)]
        producer = producer_with({n: FakeTransactionProducer(n, journal, release) for n in names})
        commit = asyncio.create_task(producer.commit_transactions(
            {n: {("signals", p): 10 + p} for p, n in enumerate(names)}, "sizer"))
        for _ in range(20):
            await asyncio.sleep(0)
        started_before_any_ended = sorted(e[1] for e in journal if e[0] == "commit started")
        release.set()
        await commit
        return journal, started_before_any_ended, names

    journal, started, names = asyncio.run(scenario())
    assert started == names  # every commit was under way before the first one ended
    for name in names:
        mine = [e[0] for e in journal if e[1] == name]
        assert mine == ["offsets", "commit started", "committed", "begun"]  # in order, per transaction
    assert sorted(e[3] for e in journal if e[0] == "offsets") == ["sizer"] * 3


def test_a_failed_transaction_is_raised_after_the_others_are_committed(caplog):
    async def scenario():
        journal: list = []
        release = asyncio.Event()
        release.set()
        producer = producer_with({"a": FakeTransactionProducer("a", journal, release, fail=True),
                                  "b": FakeTransactionProducer("b", journal, release)})
        producer._trn_locks["gone"] = asyncio.Lock()  # its producer was stopped
        with pytest.raises(RuntimeError, match="a refused"):
            await producer.commit_transactions({"a": {}, "b": {}, "gone": {}}, "sizer")
        return journal, producer.app

    with caplog.at_level(logging.WARNING, logger="streams.worker"):
        journal, app = asyncio.run(scenario())
    # the local stores may hold the refused transaction's writes: no checkpoint at stop
    assert app.unclean == "a transaction commit failed"
    assert ("committed", "b") in journal and ("begun", "b") in journal
    assert ("committed", "a") not in journal and ("begun", "a") not in journal
    assert "unknown transaction gone" in caplog.text
    assert "commit of transaction a failed" in caplog.text


def test_a_fence_is_raised_whatever_failed_before_it(caplog):
    """faust crashes the app on ProducerFenced only: a fence behind another failure
    must not be lost."""

    class Fenced(FakeTransactionProducer):
        async def commit_transaction(self):
            raise ProducerFenced()

    async def scenario():
        journal: list = []
        release = asyncio.Event()
        release.set()
        producer = producer_with({"a": FakeTransactionProducer("a", journal, release, fail=True),
                                  "b": Fenced("b", journal, release)})
        with pytest.raises(ProducerFenced):
            await producer.commit_transactions({"a": {}, "b": {}}, "sizer")

    with caplog.at_level(logging.WARNING, logger="streams.worker"):
        asyncio.run(scenario())
    assert "commit of transaction a failed" in caplog.text and "commit of transaction b failed" in caplog.text


def test_a_transaction_faust_never_began_is_an_error_not_a_commit():
    async def scenario():
        producer = producer_with({})
        with pytest.raises(KeyError):
            await producer.commit_transactions({"never-begun": {"x": 1}}, "sizer")

    asyncio.run(scenario())


def test_start_new_transaction_false_begins_none():
    async def scenario():
        journal: list = []
        release = asyncio.Event()
        release.set()
        producer = producer_with({"a": FakeTransactionProducer("a", journal, release)})
        await producer.commit_transactions({"a": {}}, "sizer", start_new_transaction=False)
        return journal

    assert [e[0] for e in asyncio.run(scenario())] == ["offsets", "commit started", "committed"]


def test_every_table_store_is_sized_for_the_worker_not_faust_defaults(tmp_path):
    """faust's RocksDB defaults (64 MB write buffers x 3, a 2 GB cache, per partition)
    let the worker's memory grow by what it wrote (`make soak`); the dedupe windows,
    written slowly, get small buffers that fill within minutes."""
    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path)
    app = build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), CollectorRegistry())
    sizes = {name: (table.data.rocksdb_options.write_buffer_size, table.data.rocksdb_options.max_write_buffer_number,
                    table.data.rocksdb_options.block_cache_size) for name, table in app.tables.items()}
    assert set(sizes) == {"exposure", "streak", "controls", "windows", "input-positions"}
    assert sizes == {"exposure": (4 * 2**20, 2, 8 * 2**20), "streak": (4 * 2**20, 2, 8 * 2**20),
                     "controls": (4 * 2**20, 2, 8 * 2**20), "windows": (1 * 2**20, 2, 8 * 2**20),
                     "input-positions": (4 * 2**20, 2, 8 * 2**20)}


def test_a_transaction_already_open_is_not_begun_again(caplog):
    """faust begins a transaction for every partition assigned at each rebalance, kept
    ones too, whose transactions are open: aiokafka refused and faust logged a WARNING
    (Invalid state transition IN_TRANSACTION -> IN_TRANSACTION)."""

    class OpenTransaction:
        def is_in_transaction(self):
            return True

    async def scenario():
        journal: list = []
        kept = FakeTransactionProducer("sizer-0-1", journal, asyncio.Event())
        kept._txn_manager = OpenTransaction()
        producer = producer_with({"sizer-0-1": kept})
        await producer.maybe_begin_transaction("sizer-0-1")
        return journal

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == []
    assert "Invalid state transition" not in caplog.text and "begin_transaction" not in caplog.text


def test_the_assigned_partitions_transactional_producers_start_at_once():
    """Each start is a new client (bootstrap, coordinator, producer id): one after
    another, a worker's start and every rebalance waited for them in turn."""
    from streams.faust_compat.transport import FencingTransactionManager

    class Starting:
        def __init__(self) -> None:
            self.under_way: set[str] = set()
            self.most = 0
            self.begun: list[str] = []
            self.all_started = asyncio.Event()

        async def maybe_begin_transaction(self, tid: str) -> None:
            self.under_way.add(tid)
            self.most = max(self.most, len(self.under_way))
            if len(self.under_way) == 3:
                self.all_started.set()
            # one after another, the first start would wait here for the others forever
            await asyncio.wait_for(self.all_started.wait(), timeout=1.0)
            self.begun.append(tid)

    async def scenario() -> Starting:
        manager = object.__new__(FencingTransactionManager)  # only its producer is used
        starting = Starting()
        manager.producer = starting
        await manager._start_transactions(["sizer-0-0", "sizer-0-1", "sizer-1-0"])
        return starting

    starting = asyncio.run(scenario())
    assert starting.most == 3
    assert sorted(starting.begun) == ["sizer-0-0", "sizer-0-1", "sizer-1-0"]


def test_a_fetch_loop_that_finds_every_partition_paused_goes_on_at_the_next_resume():
    """faust sleeps a whole second there (recovery pauses every partition at each start
    and rebalance): the worker's first decision came a second after it was ready."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.faust_compat.transport import PausingConsumer

    signals = TP("sizer-signals", 0)

    async def scenario() -> list:
        journal: list = []
        consumer = object.__new__(PausingConsumer)  # what the fetch loop's wait touches
        consumer._loop = asyncio.get_running_loop()
        consumer._stopped, consumer._crashed = asyncio.Event(), asyncio.Event()
        consumer.not_waiting_next_records = asyncio.Event()
        consumer.app = SimpleNamespace(client_only=False)
        consumer._thread = SimpleNamespace(_consumer=None)
        consumer._paused_here, consumer._resumed = {signals}, asyncio.Event()
        consumer._paused_partitions, consumer._active_partitions = {signals}, set()

        async def sleep(seconds):
            journal.append(("slept", seconds))

        async def getmany(active_partitions, timeout):
            journal.append(("fetched", sorted(active_partitions)))
            return {}

        consumer.sleep, consumer._getmany = sleep, getmany

        async def recovery_done():
            for _ in range(5):
                await asyncio.sleep(0)
            journal.append(("resumed",))
            consumer.resume_partitions([signals])

        resume = asyncio.create_task(recovery_done())
        await asyncio.wait_for(consumer._wait_next_records(0.5), timeout=0.5)
        await resume
        return journal

    assert asyncio.run(scenario()) == [("resumed",), ("fetched", [signals])]
