"""Static group membership (`group.instance.id`, SIZER_GROUP_INSTANCE_ID) as the
broker means it: a worker whose instance id another worker has taken stops, in
one line, instead of hanging or taking the id back.

When a member joins under an instance id the group already has, the broker gives
it the previous holder's place and assignment, without a rebalance (KIP-345),
and answers the previous holder FENCED_INSTANCE_ID (82) from then on. Two
workers given the same id by mistake met three defects on the way:

- faust-streaming 0.15.3's assignor asserts that the assignment it receives
  names its own web URL (`PartitionAssignor.on_assignment`). The newcomer
  receives the assignment made for the previous holder, with that holder's URL:
  the assertion failed inside aiokafka's coordinator task, which died, and the
  newcomer never became ready and never exited. `TakeoverAssignor` takes such an
  assignment as its own (the URL only feeds faust's table router, which the
  worker does not serve).
- aiokafka 0.14 heartbeats with Heartbeat v0/v1, which carry no instance id: the
  previous holder, heartbeating under its old member id, was answered
  UNKNOWN_MEMBER_ID, as if its session had expired, joined again under the same
  id and took the place back. Here the worker's heartbeats carry the instance id
  (Heartbeat v3, as the Java client sends it since KIP-345), so the broker
  answers the previous holder FENCED_INSTANCE_ID.
- aiokafka has no error class for 82: it logs it as an unexpected error and
  retries. Here any answer of the group coordinator carrying 82 (JoinGroup,
  SyncGroup, Heartbeat, OffsetCommit) ends the worker at once (`stop_fenced`):
  one line naming the group, the id and the setting, exit 2 (a configuration
  fault). Nothing of the batch under way is committed: the newcomer's producers
  fence this worker's and abort its open transactions.

Under exactly-once the newcomer's producers may fence this worker's before its
next heartbeat: its sends and commits are then refused (ProducerFenced, or
InvalidTxnState where the partition leader verifies transactions, KIP-890).
A send or commit the broker refuses first asks the coordinator, with the
instance id, whether this worker is still the member (`check_membership`), so
that the line is the same whichever comes first.
aiokafka's TxnOffsetCommit (below v3) carries no instance id, so the broker
cannot answer 82 to it. Neither does aiokafka's OffsetCommit (below v7), the
commit of an at-least-once worker: the previous holder's commit, refused as
UNKNOWN_MEMBER_ID, had it join again under the id and take the place back, and
the newcomer's next commit the same, twice a second for ever (both deciding, an
ERROR line per partition per commit). Here the worker's commits carry the
instance id (OffsetCommit v7, as the Java client's since KIP-345), so the broker
answers the previous holder FENCED_INSTANCE_ID.

A group runs one commit form. A worker started with another
SIZER_PROCESSING_GUARANTEE or SIZER_TRANSACTIONS than the running ones (a rolling
restart that changes either) would not be fenced by them, nor fence them: a
per-partition transaction is fenced by its transactional id, a per-worker one by
the group's generation, and an at-least-once commit by nothing. faust's member
metadata and assignments are JSON records (`ClientMetadata`) that keep fields
they do not know; `CommitFormAssignor` adds the form to both. The group's form
is that of the members holding partitions (the running ones), else, in a group
starting, the leader's: a worker of another form elected leader (the previous
leader left as it joined) must not stop the running group. The leader assigns
partitions only to the members of the group's form and gives each other member
an empty assignment naming the group's; a member whose form is not the one its
assignment names stops at once (`CommitFormMixed`, one line, exit 2), before it
processes anything, the leader included. An assignment without the field comes
from a leader of an earlier release, which ran the earlier default, exactly-once
per partition. A member whose metadata is no faust record (another client that
joined under faust's protocol name) is assigned nothing: faust's assignor failed
on it, and the leader, failing the same at every join, held the whole group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from typing import Any, Callable, NoReturn

from aiokafka.client import ConnectionGroup
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetCommitRequest_v2, OffsetCommitRequest_v3
from aiokafka.protocol.group import HeartbeatRequest, HeartbeatRequest_v0, HeartbeatRequest_v1
from aiokafka.protocol.types import Array, Int16, Int32, Int64, Schema, String
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from streams.errors import CommitFormMixed, GroupInstanceTaken, exit_code
from streams.faust_compat.worker import stop_now

log = logging.getLogger("streams.worker")

FENCED_INSTANCE_ID = 82  # Kafka's error code, which aiokafka 0.14 does not know
# the group coordinator's APIs whose answers can carry it: OffsetCommit, JoinGroup, Heartbeat, SyncGroup
GROUP_APIS = frozenset({8, 11, 12, 14})
PROBE_TIMEOUT_S = 5.0


class HeartbeatResponseV3(Response):
    API_KEY = 12
    API_VERSION = 3
    SCHEMA = Schema(("throttle_time_ms", Int32), ("error_code", Int16))


class HeartbeatRequestV3(RequestStruct):
    API_KEY = 12
    API_VERSION = 3
    RESPONSE_TYPE = HeartbeatResponseV3
    SCHEMA = Schema(("group", String("utf-8")), ("generation_id", Int32), ("member_id", String("utf-8")),
                    ("group_instance_id", String("utf-8")))


class StaticHeartbeatRequest(Request[HeartbeatRequest_v0 | HeartbeatRequest_v1 | HeartbeatRequestV3]):
    """A heartbeat that names the member's instance id when the broker takes v3."""

    API_KEY = 12

    def __init__(self, group: str, generation_id: int, member_id: str, group_instance_id: str) -> None:
        self.fields = (group, generation_id, member_id, group_instance_id)

    def build(self, request_struct_class: Any) -> Any:
        if request_struct_class.API_VERSION < 3:
            return request_struct_class(*self.fields[:3])
        return request_struct_class(*self.fields)


class OffsetCommitResponseV7(Response):
    API_KEY = 8
    API_VERSION = 7
    SCHEMA = Schema(("throttle_time_ms", Int32),
                    ("topics", Array(("topic", String("utf-8")),
                                     ("partitions", Array(("partition", Int32), ("error_code", Int16))))))


class OffsetCommitRequestV7(RequestStruct):
    API_KEY = 8
    API_VERSION = 7
    RESPONSE_TYPE = OffsetCommitResponseV7
    SCHEMA = Schema(("group_id", String("utf-8")), ("generation_id", Int32), ("member_id", String("utf-8")),
                    ("group_instance_id", String("utf-8")),
                    ("topics", Array(("topic", String("utf-8")),
                                     ("partitions", Array(("partition", Int32), ("offset", Int64),
                                                          ("leader_epoch", Int32), ("metadata", String("utf-8")))))))


class StaticOffsetCommitRequest(Request[OffsetCommitRequest_v2 | OffsetCommitRequest_v3 | OffsetCommitRequestV7]):
    """An offset commit that names the member's instance id when the broker takes v7
    (no retention time from v5 on, a leader epoch per partition from v6, unknown: -1)."""

    API_KEY = 8

    def __init__(self, request: OffsetCommitRequest, group_instance_id: str) -> None:
        self.request = request
        self.group_instance_id = group_instance_id

    def build(self, request_struct_class: Any) -> Any:
        if request_struct_class.API_VERSION < 7:
            return self.request.build(request_struct_class)
        request = self.request
        topics = [(topic, [(partition, offset, -1, metadata) for partition, offset, metadata in partitions])
                  for topic, partitions in request._topics]
        return request_struct_class(request._consumer_group, request._consumer_group_generation_id,
                                    request._consumer_id, self.group_instance_id, topics)


def stop_fenced(group: str, instance_id: str) -> NoReturn:
    """End the worker now: another worker holds its group.instance.id. One line on
    stderr, the exit code of a configuration fault, nothing committed."""
    error = GroupInstanceTaken(group, instance_id)
    stop_now(f"sizer: {error}", exit_code(error))


def is_fenced(response: Any) -> bool:
    """Whether a group coordinator's answer says FENCED_INSTANCE_ID, for the whole
    request or (OffsetCommit) for any of its partitions."""
    if getattr(response, "error_code", None) == FENCED_INSTANCE_ID:
        return True
    if response.API_KEY != 8:
        return False
    return any(code == FENCED_INSTANCE_ID for _, partitions in response.topics for _, code in partitions)


def guard(client: Any, group: str, instance_id: str,
          on_fenced: Callable[[str, str], NoReturn] = stop_fenced) -> None:
    """Make the group requests `client` (a worker consumer's aiokafka client) sends
    those of a static member: heartbeats and offset commits carry `instance_id`, and an answer saying
    FENCED_INSTANCE_ID calls `on_fenced(group, instance_id)`, which does not return."""
    send = client.send

    async def send_as_static_member(node_id: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, HeartbeatRequest):
            request = StaticHeartbeatRequest(request._group, request._generation_id, request._member_id, instance_id)
        elif isinstance(request, OffsetCommitRequest):
            request = StaticOffsetCommitRequest(request, instance_id)
        response = await send(node_id, request, **kwargs)
        if request.API_KEY in GROUP_APIS and response is not None and is_fenced(response):
            on_fenced(group, instance_id)
        return response

    client.send = send_as_static_member


async def check_membership(app: Any) -> None:
    """Ask the group coordinator, with this worker's instance id, whether it is still
    the member (ends the worker through `guard` when another holds the id); returns
    when it is, when it is no static member, or when the coordinator cannot say."""
    instance_id = getattr(getattr(app, "inputs", None), "group_instance_id", None)
    if instance_id is None:
        return
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    if consumer is None:
        return
    log.info("a send or commit was refused: asking the group coordinator whether this worker is still the member")

    async def heartbeat() -> None:
        coordinator = consumer._coordinator
        if coordinator is None or coordinator.coordinator_id is None:
            return
        request = StaticHeartbeatRequest(coordinator.group_id, coordinator.generation, coordinator.member_id,
                                         instance_id)
        await consumer._client.send(coordinator.coordinator_id, request, group=ConnectionGroup.COORDINATION)

    try:
        await asyncio.wait_for(thread.call_thread(heartbeat), PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the coordinator cannot say: the caller's error stands
        log.warning("could not ask the group coordinator whether this worker is still the member: %r", exc)


class TakeoverAssignor(PartitionAssignor):
    """faust's assignor, taking as its own an assignment made for the member whose
    place it took (the previous holder of its group.instance.id), whose URL it names."""

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        metadata = ClientMetadata.loads(self._decompress(assignment.user_data))
        own = str(self._url)
        if metadata.url != own:
            log.info("partitions taken over from the worker at %s, as assigned to it", metadata.url)
            metadata.url = own
            assignment = ConsumerProtocolMemberAssignment(assignment.version, assignment.assignment,
                                                          self._compress(metadata.dumps()))
        super().on_assignment(assignment)


# the field of faust's ClientMetadata records (member metadata, assignments) that names
# a member's commit form (`SizerApp.commit_form`); absent: a worker of an earlier release
COMMIT_FORM = "sizer_commit_form"


def commit_form(exactly_once: bool, transactions: str) -> str:
    """How a worker commits, named by its settings: SIZER_PROCESSING_GUARANTEE and,
    under exactly-once, SIZER_TRANSACTIONS (`per_worker` or `per_partition`)."""
    if not exactly_once:
        return "SIZER_PROCESSING_GUARANTEE=at_least_once"
    return f"SIZER_PROCESSING_GUARANTEE=exactly_once SIZER_TRANSACTIONS={transactions}"


# the form of an earlier release's worker, which names none: that release's default
EARLIER_FORM = commit_form(True, "per_partition")


def with_commit_form(record: bytes, form: str) -> bytes:
    """A faust ClientMetadata record (JSON) with the commit form added."""
    return json.dumps({**json.loads(record), COMMIT_FORM: form}).encode()


# the form of a member whose metadata is no faust ClientMetadata record (another client
# joined the group with faust's protocol name): it is assigned nothing, like any other form
UNREADABLE_FORM = "no form (its group metadata is not a sizer worker's)"


def read_member(record: bytes) -> ClientMetadata | None:
    """The faust ClientMetadata record a member joined with; None when it is not one
    (not JSON, not an object, a field faust needs missing or of another type)."""
    try:
        if not isinstance(json.loads(record), dict):
            return None
        metadata = ClientMetadata.loads(record)
        assignment = metadata.assignment  # faust builds a field's record when it is read
        readable = (isinstance(metadata.url, str) and isinstance(assignment, ClientAssignment)
                    and isinstance(assignment.actives, dict) and isinstance(assignment.standbys, dict))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return metadata if readable else None


def commit_form_of(record: bytes) -> str:
    """The commit form a ClientMetadata record names (`EARLIER_FORM` when it names none,
    `UNREADABLE_FORM` when it is no such record)."""
    try:
        fields = json.loads(record)
    except ValueError:
        return UNREADABLE_FORM
    if not isinstance(fields, dict):
        return UNREADABLE_FORM
    form = fields.get(COMMIT_FORM, EARLIER_FORM)
    return form if isinstance(form, str) else repr(form)


def running_form(forms: dict[str, str], members: dict[str, ClientMetadata], own: str) -> str:
    """The group's commit form: that of the members holding partitions (they run the
    group) when they share one, else `own` (the leader's): a leader started with
    another form than its running group's must not stop the group."""
    holding = {forms[member] for member, metadata in members.items()
               if any(metadata.assignment.actives.values()) or any(metadata.assignment.standbys.values())}
    return holding.pop() if len(holding) == 1 else own


def stop_mixed(group: str, own: str, group_form: str) -> NoReturn:
    """End the worker now: its group commits in another form. One line on stderr, the exit
    code of a configuration fault; nothing was assigned to it, nothing is committed."""
    error = CommitFormMixed(group, own, group_form)
    stop_now(f"sizer: {error}", exit_code(error))


class CommitFormAssignor(TakeoverAssignor):
    """`TakeoverAssignor`, in a group that runs one commit form (`SizerApp.commit_form`):
    the leader assigns partitions to the members of its own form only, and a member
    told another form than its own stops (`stop_mixed`)."""

    def metadata(self, topics: set[str]) -> ConsumerProtocolMemberMetadata:
        member = super().metadata(topics)
        return ConsumerProtocolMemberMetadata(member.version, member.subscription,
                                              with_commit_form(member.user_data, self.app.commit_form))

    def assign(self, cluster: Any, member_metadata: Any) -> Any:
        readable = {member: read_member(metadata.user_data) for member, metadata in member_metadata.items()}
        forms = {member: commit_form_of(metadata.user_data) if readable[member] is not None else UNREADABLE_FORM
                 for member, metadata in member_metadata.items()}
        members = {member: record for member, record in readable.items() if record is not None}
        form = running_form(forms, members, self.app.commit_form)
        others = {member: other for member, other in forms.items() if other != form}
        for member, other in sorted(others.items()):
            log.error("group member %s runs %s, the group %s: it is assigned nothing", member, other, form)
        kept = {member: metadata for member, metadata in member_metadata.items() if member not in others}
        assignments = dict(super().assign(cluster, kept)) if kept else {}
        for member, assignment in assignments.items():
            record = with_commit_form(self._decompress(assignment.user_data), form)
            assignments[member] = ConsumerProtocolMemberAssignment(assignment.version, assignment.assignment,
                                                                   self._compress(record))
        for member in others:
            url = members[member].url if member in members else ""
            nothing = ClientMetadata(assignment=ClientAssignment(actives={}, standbys={}), url=url,
                                     changelog_distribution={})
            assignments[member] = ConsumerProtocolMemberAssignment(
                self.version, [], self._compress(with_commit_form(nothing.dumps(), form)))
        return assignments

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        try:
            group_form = commit_form_of(self._decompress(assignment.user_data))
        except zlib.error:  # a leader that is no faust worker
            group_form = UNREADABLE_FORM
        if group_form != self.app.commit_form:
            stop_mixed(self.app.conf.id, self.app.commit_form, group_form)
        super().on_assignment(assignment)
