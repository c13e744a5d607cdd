"""KIP-447 for aiokafka 0.14: a transaction's offsets committed with the consumer
group's metadata (`TxnOffsetCommit` v3), so one transactional producer can serve
every partition a worker holds.

aiokafka 0.14 sends `TxnOffsetCommit` only at v0: the group id and the offsets.
The group coordinator then cannot tell a commit from the member that owns the
partitions from one by a member the group has since moved on from (a worker
paused past its session timeout, its partitions given to another), so the only
fence is the transactional id, and faust keeps one transactional producer per
input partition (`transport.ConcurrentCommitProducer`): six transactions per
batch, each about five requests in sequence. v3 adds the member's generation id,
member id and group instance id (the Java client's
`sendOffsetsToTransaction(offsets, consumer.groupMetadata())`, Kafka Streams'
exactly-once v2, confluent-kafka's `consumer_group_metadata()`): the coordinator
refuses a commit from an old generation (ILLEGAL_GENERATION 22), an unknown
member (UNKNOWN_MEMBER_ID 25) or a replaced static member (FENCED_INSTANCE_ID
82), and one producer per worker is safe.

What this module adds, all of it, self-contained (aiokafka's protocol types, its
sender's handler and its producer):
- `TxnOffsetCommitRequest_v3` / `TxnOffsetCommitResponse_v3` (flexible version:
  compact strings and arrays, tagged fields), and `GroupTxnOffsetCommitRequest`,
  which negotiates v3 and refuses to go lower;
- `GroupMetadata`, the member's (generation id, member id, group instance id) as
  the group assigned it: aiokafka resets its coordinator's generation to -1 and
  member id to "" when a heartbeat fails, and a 3.9 broker *accepts* a v3 commit
  carrying those for a group that is not empty (the check is skipped for -1 and
  ""), silently removing the fence. The caller takes the metadata when partitions
  are assigned and sends that; `GroupTxnOffsetCommitHandler` refuses a
  generation below 0 or an empty member id before anything is sent;
- `GroupTxnOffsetCommitHandler`: the generation errors (22, 25, 82, and
  REBALANCE_IN_PROGRESS 27) end the transaction in aiokafka's abortable error
  state, raised to the caller as `GroupMovedOn`, instead of aiokafka's fatal
  error for an error code it does not know (which kills the producer's sender);
  the caller aborts and rejoins the group;
- `MarkerWaitHandler`: a transaction Kafka refuses to start while the previous
  one's markers are being written (CONCURRENT_TRANSACTIONS, on the first
  AddPartitionsToTxn after nearly every commit of a busy worker; KIP-890 ends
  the refusal in Kafka 4.0) is asked again after 2 ms, then 4, 8, 16 and 20 ms
  (`MARKER_WAITS_S`), instead of aiokafka's 20 ms every time: one transaction
  per worker commits back to back, and that wait was on every batch's latency;
- `GroupMetadataProducer`: `AIOKafkaProducer` with
  `send_offsets_to_transaction(offsets, group_id, metadata)`.

Written against aiokafka 0.14.0 (`streams.faust_compat.SUPPORTED`; the private
names it uses are in `PRIVATE_NAMES`). To be proposed upstream, and removed once
aiokafka sends the group metadata itself.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiokafka.errors as Errors
from aiokafka import AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.errors import GroupAuthorizationFailedError, IllegalOperation
import aiokafka.producer.sender
from aiokafka.producer.sender import AddPartitionsToTxnHandler, Sender, TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactString, Int16, Int32, Int64, Schema, TaggedFields
from aiokafka.util import commit_structure_validate

# the coordinator's answers that mean the group has moved on from this member
GENERATION_ERRORS = (Errors.IllegalGenerationError, Errors.UnknownMemberIdError, Errors.RebalanceInProgressError)
FENCED_INSTANCE_ID = 82
# the waits before asking again to add partitions to a transaction that Kafka refused
# with CONCURRENT_TRANSACTIONS (the previous transaction's markers are being written),
# one after another, the last repeated: aiokafka's fixed wait (20 ms, KAFKA-5477) is the
# longest
MARKER_WAITS_S = (0.002, 0.004, 0.008, 0.016, 0.02)


class GroupMovedOn(Errors.KafkaError):
    """The group coordinator refused the transaction's offsets: the member's
    generation is over (or it never had one). The transaction must be aborted and
    the group rejoined; nothing of it may be committed."""

    retriable = False


@dataclass(frozen=True)
class GroupMetadata:
    """A consumer group member as the group assigned it partitions."""

    generation_id: int
    member_id: str
    group_instance_id: str | None = None

    def refusal(self) -> str | None:
        """Why these cannot fence a commit (None: they can)."""
        if self.generation_id < 0:
            return f"generation {self.generation_id}: the member has no generation (its heartbeat failed, or it " \
                   f"never joined)"
        if not self.member_id:
            return "no member id: the member has left the group or never joined"
        return None


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("error_code", Int16),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


GroupTxnOffsetCommitStruct: TypeAlias = TxnOffsetCommitRequest_v3


class GroupTxnOffsetCommitRequest(Request[GroupTxnOffsetCommitStruct]):
    """`TxnOffsetCommit` v3 with the group metadata; a broker without v3 (before
    Kafka 2.5) is refused by `prepare` (IncompatibleBrokerVersion)."""

    API_KEY = 28

    def __init__(self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int,
                 metadata: GroupMetadata, topics: list[tuple[str, list[tuple[int, int, str]]]]) -> None:
        self._fields = (transactional_id, group_id, producer_id, producer_epoch)
        self._metadata = metadata
        self._topics = topics

    def build(self, request_struct_class: type[GroupTxnOffsetCommitStruct]) -> GroupTxnOffsetCommitStruct:
        metadata = self._metadata
        # -1: no leader epoch (the consumer's is not tracked here), as the Java client sends without one
        topics = [(topic, [(partition, offset, -1, text, {}) for partition, offset, text in partitions], {})
                  for topic, partitions in self._topics]
        return request_struct_class(*self._fields, metadata.generation_id, metadata.member_id,
                                    metadata.group_instance_id, topics, {})


class GroupTxnOffsetCommitHandler(TxnOffsetCommitHandler):
    """aiokafka's handler of the transaction's offset commit, sending v3 with
    `metadata`; refuses metadata without a generation before sending, and turns the
    coordinator's generation errors into an abortable `GroupMovedOn`."""

    def __init__(self, sender: Any, offsets: Any, group_id: str, metadata: GroupMetadata | None) -> None:
        super().__init__(sender, offsets, group_id)
        self._metadata = metadata

    async def do(self, node_id: int) -> bool:
        refusal = "no group metadata was given" if self._metadata is None else self._metadata.refusal()
        if refusal is not None:
            # abortable, not fatal: the caller aborts and rejoins; nothing is sent
            self._abortable(GroupMovedOn(f"offsets not sent: {refusal}"))
            return True
        return await super().do(node_id)  # type: ignore[no-any-return]

    def _abortable(self, exc: GroupMovedOn) -> None:
        """The transaction in aiokafka's abortable error state, still knowing what it
        holds: aiokafka's `error_transaction` forgets the partitions and the group
        added to it, and its abort then takes the transaction for empty and sends no
        EndTxn: the records stay in an open transaction, holding every read_committed
        reader of their partitions back until the broker aborts it past its timeout."""
        txn_manager = self._sender._txn_manager
        partitions = set(txn_manager.txn_partitions)
        txn_manager.error_transaction(exc)
        # retrieved here: the caller gets `exc` from its own future, and the abort replaces
        # this waiter unread, which asyncio would log as a traceback when it is collected
        txn_manager._transaction_waiter.exception()
        txn_manager.txn_partitions.update(partitions)
        txn_manager.consumer_group_added(self._group_id)  # added before its offsets are sent

    def create_request(self) -> GroupTxnOffsetCommitRequest:
        txn_manager = self._sender._txn_manager
        offset_data = collections.defaultdict(list)
        for tp, offset in sorted(self._offsets.items()):
            offset_data[tp.topic].append((tp.partition, offset.offset, offset.metadata))
        assert self._metadata is not None
        return GroupTxnOffsetCommitRequest(txn_manager.transactional_id, self._group_id, txn_manager.producer_id,
                                           txn_manager.producer_epoch, self._metadata, list(offset_data.items()))

    def handle_response(self, resp: Any) -> float | None:
        if resp.API_VERSION < 3:  # pragma: no cover - the request is built at v3 only
            return super().handle_response(resp)  # type: ignore[no-any-return]
        for topic, partitions, _ in resp.topics:
            for partition, error_code, _ in partitions:
                error_type = Errors.for_code(error_code)
                if error_code == FENCED_INSTANCE_ID or error_type in GENERATION_ERRORS:
                    name = "FENCED_INSTANCE_ID" if error_code == FENCED_INSTANCE_ID else error_type.__name__
                    self._abortable(GroupMovedOn(
                        f"group {self._group_id} refused the offsets of {topic}[{partition}]: {name} "
                        f"(generation {self._metadata.generation_id if self._metadata else None})"))
                    return None
        # every other answer as aiokafka handles it, the response in v0's shape
        return super().handle_response(_V0Shape(resp))  # type: ignore[no-any-return]


class _V0Shape:
    """A v3 response read as aiokafka's v0 handler reads one: `errors` as
    [(topic, [(partition, error_code)])]."""

    def __init__(self, resp: Any) -> None:
        self.errors = [(topic, [(partition, code) for partition, code, _ in partitions])
                       for topic, partitions, _ in resp.topics]


class MarkerWaitHandler(AddPartitionsToTxnHandler):
    """aiokafka's AddPartitionsToTxn handler with a wait that grows, refusal after
    refusal, for a transaction Kafka refuses to start while the previous one's markers
    are being written (`MARKER_WAITS_S`), instead of 20 ms every time."""

    def handle_response(self, resp: Any) -> float | None:
        backoff = super().handle_response(resp)
        sender = self._sender
        if backoff is None:
            sender.marker_refusals = 0
            return None
        concurrent = any(code == Errors.ConcurrentTransactions.errno for _, partitions in resp.errors
                         for _, code in partitions)
        if not concurrent or backoff != aiokafka.producer.sender.BACKOFF_OVERRIDE:
            return backoff  # aiokafka's wait for the other refusals
        refusals = sender.marker_refusals
        sender.marker_refusals = refusals + 1
        return MARKER_WAITS_S[min(refusals, len(MARKER_WAITS_S) - 1)]


class GroupMetadataSender(Sender):
    """aiokafka's sender, committing a transaction's offsets with the group metadata
    its producer holds for them (`GroupMetadataProducer`)."""

    group_metadata: GroupMetadata | None = None
    marker_refusals = 0  # the refusals in a row of the transaction being started (`MarkerWaitHandler`)

    async def _do_add_partitions_to_txn(self, tps: Any) -> bool:
        node_id = await self._find_coordinator(CoordinationType.TRANSACTION, self._txn_manager.transactional_id)
        return await MarkerWaitHandler(self, tps).do(node_id)  # type: ignore[no-any-return]

    async def _do_txn_offset_commit(self, offsets: Any, group_id: str) -> None:
        if not offsets:
            return
        try:
            node_id = await self._find_coordinator(CoordinationType.GROUP, group_id)
        except GroupAuthorizationFailedError as exc:
            self._txn_manager.error_transaction(exc)
            return
        await GroupTxnOffsetCommitHandler(self, offsets, group_id, self.group_metadata).do(node_id)


class GroupMetadataProducer(AIOKafkaProducer):
    """`AIOKafkaProducer` whose transactions commit their offsets with the consumer
    group's metadata (`TxnOffsetCommit` v3; see the module)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._sender.__class__ = GroupMetadataSender  # the same sender, its offset commit in v3
        self._offsets_lock = asyncio.Lock()

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str,  # type: ignore[override]
                                          metadata: GroupMetadata | None = None) -> None:
        """Add `offsets` to the transaction as `group_id`'s member `metadata`, as it was
        when the group assigned the partitions. Raises GroupMovedOn (the transaction
        can then only be aborted) when the metadata has no generation or the
        coordinator refuses it."""
        self._ensure_transactional()
        if not self._txn_manager.is_in_transaction():
            raise IllegalOperation("Not in the middle of a transaction")
        if not group_id or not isinstance(group_id, str):
            raise ValueError(group_id)
        formatted = commit_structure_validate(offsets)
        async with self._offsets_lock:  # one set of offsets, one metadata, at a time
            self._sender.group_metadata = metadata
            added = self._txn_manager.add_offsets_to_txn(formatted, group_id)
            try:
                await asyncio.shield(added)
            finally:
                self._sender.group_metadata = None
                if added.done() and not added.cancelled():
                    added.exception()  # retrieved: raised above, not logged again by asyncio
