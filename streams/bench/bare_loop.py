"""Benchmark contender (0): the limit Kafka and the client set, a bare consume-and-produce loop.

Each signal's bytes are copied unchanged to the decisions topic (same key, same
partition): no decode, no engine, no encode, no state. The mode follows
`SIZER_PROCESSING_GUARANTEE` (default exactly-once, as for the worker); the
bench runs both.

At-least-once: offsets auto-committed, as in the plain loop (1), whose work this
leaves out; the gap between the two is what the product's work costs.

Exactly-once: the limit on the worker's exactly-once latency, read_committed, in
one of two forms (`BENCH_TRANSACTIONS`):
- `per_partition` (the default): the copies and the offsets go in transactions
  made as the worker's are, one transactional producer per input partition
  (faust's scheme, which the worker keeps: aiokafka 0.14 sends a transaction's
  offsets without the consumer's group metadata, TxnOffsetCommit v0, so only a
  transactional id per partition fences a previous owner; one producer per
  worker needs KIP-447), in the quickest form found: each input partition is
  drained, copied and committed on its own (one consumer fetches for all), so a
  record waits for its own partition's transaction only, never for the slowest
  of a batch;
- `per_batch`: one transactional producer and one transaction per batch, which
  covers every input partition the batch holds: what one producer per worker
  (KIP-447) would cost. Its offsets still go as aiokafka sends them, in a
  TxnOffsetCommit v0 carrying the group id only. v3 would add the member's
  generation, member id and instance id, which let the group coordinator refuse a
  commit from a member the group has since moved on from: the fencing that one
  producer per worker loses. The loop is its group's only member, whose
  assignment never changes, so there is nothing to fence, and v3 costs the same
  requests as v0 (the same request, more fields): for this measurement v0 with
  the group id is enough. Not a form the worker may use as it stands.
Its producers retry after `BENCH_MARKER_WAIT_MS` (default 2) instead of 100
(`retry_backoff_ms`), and a transaction that Kafka refuses to start while the
previous one's markers are still being written (CONCURRENT_TRANSACTIONS, every
time a producer commits and starts again at once) after as long instead of
aiokafka's 20 ms (the Java client's value, KAFKA-5477; KIP-890 removes the
refusal from Kafka 4.0). Harsh on a broker in trouble: for the bench only. On
SIGTERM it prints how many transactions it committed, how many records they
held, how many of its AddPartitionsToTxn Kafka refused with
CONCURRENT_TRANSACTIONS and how many produce batches it sent again
(`loop_counts` reads that line back).
It handles no rebalance (the partitions it serves are those of its first
assignment): any rebalance can stall it or copy records twice. For the bench
only, where it is its group's one member.

    python -m streams.bench.bare_loop   (SIZER_* settings as for the worker)
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

import aiokafka.producer.sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ConcurrentTransactions

from streams.bench.plain_loop import consume_and_produce, loop_consumer
from streams.worker.settings import WorkerSettings, load_settings
from streams.kafka.topics import TopicSet, load_topics

TransactionForm = Literal["per_partition", "per_batch"]
TRANSACTION_FORMS: tuple[TransactionForm, ...] = ("per_partition", "per_batch")
DEFAULT_MARKER_WAIT_MS = 2
COUNTS_LINE = ("bare loop counts: {transactions} transactions, {records} records, {marker_waits} marker waits, "
               "{produce_retries} produce retries")
COUNTS_PATTERN = re.compile(r"^bare loop counts: (\d+) transactions, (\d+) records, (\d+) marker waits, "
                            r"(\d+) produce retries$", re.M)


@dataclass(frozen=True)
class LoopOptions:
    """How the exactly-once loop runs: its transaction form, the wait before retrying a
    refused request (seconds, > 0), and the pause in every transaction before its
    commit (seconds, >= 0; for the broker test that kills the loop with transactions
    open)."""

    form: TransactionForm = "per_partition"
    marker_wait_s: float = DEFAULT_MARKER_WAIT_MS / 1000
    pause_s: float = 0.0


def loop_options(environ: Mapping[str, str]) -> LoopOptions:
    """The loop's options from `BENCH_TRANSACTIONS` (per_partition or per_batch),
    `BENCH_MARKER_WAIT_MS` (an integer >= 1) and `BENCH_PAUSE_IN_TRANSACTION_S`
    (>= 0); ValueError naming the variable and the rule when one is wrong."""
    form = environ.get("BENCH_TRANSACTIONS", "per_partition")
    if form not in TRANSACTION_FORMS:
        raise ValueError(f"BENCH_TRANSACTIONS: one of {', '.join(TRANSACTION_FORMS)}, not {form!r}")
    wait = environ.get("BENCH_MARKER_WAIT_MS", str(DEFAULT_MARKER_WAIT_MS))
    if not wait.isdigit() or int(wait) < 1:
        raise ValueError(f"BENCH_MARKER_WAIT_MS: an integer number of milliseconds >= 1, not {wait!r}")
    pause = environ.get("BENCH_PAUSE_IN_TRANSACTION_S", "0")
    try:
        pause_s = float(pause)
    except ValueError:
        pause_s = -1.0
    if not pause_s >= 0:
        raise ValueError(f"BENCH_PAUSE_IN_TRANSACTION_S: seconds >= 0, not {pause!r}")
    return LoopOptions(form, int(wait) / 1000, pause_s)  # type: ignore[arg-type]


def batch_offsets(batches: Mapping[TopicPartition, list[Any]]) -> dict[TopicPartition, int]:
    """The offsets a batch's transaction commits: for every partition with records, the
    one after its last record (the next to read)."""
    return {tp: records[-1].offset + 1 for tp, records in batches.items() if records}


def refused_as_concurrent(errors: Iterable[tuple[str, Iterable[tuple[int, int]]]]) -> bool:
    """Whether an AddPartitionsToTxn response (its `errors`: (topic, [(partition,
    error code)])) refused a partition with CONCURRENT_TRANSACTIONS: the previous
    transaction's markers were still being written, and the producer waits and asks
    again."""
    return any(code == ConcurrentTransactions.errno for _, partitions in errors for _, code in partitions)


def loop_counts(log: str) -> tuple[int, int, int, int] | None:
    """(transactions, records, marker waits, produce retries) from the last counts line
    of a loop's output; None when it printed none (it did not stop on SIGTERM)."""
    found = COUNTS_PATTERN.findall(log)
    return tuple(int(n) for n in found[-1]) if found else None  # type: ignore[return-value]


@dataclass
class Counts:
    transactions: int = 0
    records: int = 0
    marker_waits: int = 0
    produce_retries: int = 0


def count_retries(counts: Counts) -> None:
    """Count, in `counts`, every AddPartitionsToTxn refused with CONCURRENT_TRANSACTIONS
    (aiokafka asks again after BACKOFF_OVERRIDE, the marker wait) and every produce
    batch sent again (after `retry_backoff_ms`). Kafka 3.9 answers NOT_ENOUGH_REPLICAS
    to a transactional produce whose partition it could not verify with the
    transaction coordinator (`transaction.partition.verification.enable`; the
    coordinator's CONCURRENT_TRANSACTIONS, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or
    COORDINATOR_LOAD_IN_PROGRESS, which clients older than KIP-890's would not know)."""
    sender = aiokafka.producer.sender
    add_partitions = sender.AddPartitionsToTxnHandler.handle_response
    produce = sender.SendProduceReqHandler.handle_response

    def counted_add(self: Any, resp: Any) -> Any:
        if refused_as_concurrent(resp.errors):
            counts.marker_waits += 1
        return add_partitions(self, resp)

    def counted_produce(self: Any, resp: Any) -> Any:
        before = len(self._to_reenqueue)
        try:
            return produce(self, resp)
        finally:
            counts.produce_retries += len(self._to_reenqueue) - before

    sender.AddPartitionsToTxnHandler.handle_response = counted_add  # type: ignore[method-assign]
    sender.SendProduceReqHandler.handle_response = counted_produce  # type: ignore[method-assign]


async def seek_committed(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> None:
    """Each partition at the offset committed with the last transaction, now that no
    other is pending (the consumer fetched one at assignment, which may predate the
    fence of the previous producer)."""
    for tp in tps:
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


async def exactly_once(kafka: WorkerSettings, topics: TopicSet) -> None:
    """The copy loop, read_committed, until SIGTERM: one transaction per input partition,
    each partition fetched, copied and committed on its own, or one transaction per
    batch (`BENCH_TRANSACTIONS`)."""
    options = loop_options(os.environ)
    aiokafka.producer.sender.BACKOFF_OVERRIDE = options.marker_wait_s
    counts = Counts()
    count_retries(counts)
    client = kafka.for_role(f"bench-{kafka.app_id}")
    decisions = topics.name("decisions")
    consumer = loop_consumer(kafka, [topics.name("signals")], enable_auto_commit=False,
                             isolation_level="read_committed")
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    def producer(transactional_id: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(**client.options(
            acks="all", linger_ms=0, retry_backoff_ms=round(options.marker_wait_s * 1000),
            transactional_id=transactional_id))

    async def commit(txn: AIOKafkaProducer, batches: dict[TopicPartition, list[Any]]) -> None:
        async with txn.transaction():
            sent = [await txn.send(decisions, record.value, key=record.key, partition=tp.partition)
                    for tp, records in batches.items() for record in records]
            # v0, the group id only (aiokafka 0.14): see the module's docstring
            await txn.send_offsets_to_transaction(batch_offsets(batches), kafka.app_id)
            # aiokafka commits a transaction whatever its produce batches' results
            # (`Sender._do_txn_commit`): a failed copy must abort it
            await asyncio.gather(*sent)
            if options.pause_s > 0:
                await asyncio.sleep(options.pause_s)
        counts.transactions += 1
        counts.records += len(sent)

    async def partition_loop(tp: TopicPartition) -> None:
        txn = producer(f"{kafka.app_id}-{tp.partition}")
        await txn.start()  # fences the partition's previous producer: its transaction is ended
        await seek_committed(consumer, [tp])
        try:
            while not stop.is_set():
                records = (await consumer.getmany(tp, timeout_ms=100)).get(tp)
                if records:
                    await commit(txn, {tp: records})
        finally:
            await txn.stop()

    async def batch_loop(tps: list[TopicPartition]) -> None:
        txn = producer(f"{kafka.app_id}-worker")
        await txn.start()  # fences the previous producer of the same id: its transaction is ended
        await seek_committed(consumer, tps)
        try:
            while not stop.is_set():
                batches = {tp: records for tp, records in (await consumer.getmany(timeout_ms=100)).items()
                           if records}
                if batches:
                    await commit(txn, batches)
        finally:
            await txn.stop()

    while not consumer.assignment() and not stop.is_set():
        await asyncio.sleep(0.05)
    print(f"bare loop ready ({options.form}, marker wait {options.marker_wait_s * 1000:g} ms)", flush=True)
    try:
        assigned = sorted(consumer.assignment())
        if options.form == "per_batch":
            await batch_loop(assigned)
        else:
            await asyncio.gather(*(partition_loop(tp) for tp in assigned))
    finally:
        await consumer.stop()
        print(COUNTS_LINE.format(transactions=counts.transactions, records=counts.records,
                                 marker_waits=counts.marker_waits, produce_retries=counts.produce_retries),
              flush=True)


async def run() -> None:
    kafka = load_settings()
    topics = load_topics(kafka.topics_file, kafka.topic_prefix, replication=kafka.replication)
    if kafka.processing_guarantee == "exactly_once":
        await exactly_once(kafka, topics)
        return
    decisions = topics.name("decisions")

    async def copy(producer: Any, tp: Any, record: Any) -> None:
        await producer.send(decisions, record.value, key=record.key, partition=tp.partition)

    await consume_and_produce("bare loop", kafka, topics, ["signals"], copy)


if __name__ == "__main__":
    asyncio.run(run())
