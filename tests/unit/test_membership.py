"""A worker whose group.instance.id another worker took (`streams.faust_compat.membership`):
the line and exit code it stops with, the group requests of a static member, and the
assignment a newcomer takes over. The broker side is held by
`tests/integration/test_static_membership.py`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import InvalidTxnState, ProducerFenced
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetCommitResponse_v3
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.group import (HeartbeatRequest, HeartbeatResponse_v1, JoinGroupRequest, SyncGroupRequest,
                                     SyncGroupResponse_v3)
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata
from prometheus_client import CollectorRegistry

from streams.config import load_config
from streams.errors import ConfigError, GroupInstanceTaken, exit_code
from streams.faust_compat import membership
from streams.faust_compat.outputs import Outputs
from streams.faust_compat.transport import ConcurrentCommitProducer
from streams.kafka.topics import load_topics
from streams.worker.app import build_app
from streams.worker.settings import WorkerSettings, load_settings

LINE = ("another worker joined group sizer-prod with group.instance.id sizer-worker-1 "
        "(SIZER_GROUP_INSTANCE_ID): each worker needs its own")


def test_a_taken_instance_id_is_a_configuration_fault_naming_the_group_the_id_and_the_setting():
    error = GroupInstanceTaken("sizer-prod", "sizer-worker-1")
    assert isinstance(error, ConfigError)
    assert (str(error), exit_code(error)) == (LINE, 2)


def test_a_fenced_worker_ends_with_one_line_on_stderr_and_exit_2():
    # mode's Worker redirects sys.stderr into logging: the line must reach the process's stderr all the same
    code = ("import io, sys; sys.stderr = io.StringIO(); from streams.faust_compat.membership import stop_fenced; "
            "stop_fenced('sizer-prod', 'sizer-worker-1')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, f"sizer: {LINE}\n")


class FakeClient:
    """Answers each request with the response `answer` makes of it; keeps what was sent."""

    def __init__(self, answer):
        self.answer = answer
        self.sent: list[object] = []

    async def send(self, node_id, request, *, group=None):
        self.sent.append(request)
        return self.answer(request)


class Fenced(Exception):
    pass


def guarded(answer) -> FakeClient:
    client = FakeClient(answer)

    def on_fenced(group, instance_id):
        raise Fenced(group, instance_id)

    membership.guard(client, "sizer-prod", "sizer-worker-1", on_fenced=on_fenced)
    return client


def heartbeat_answer(code: int):
    return lambda request: HeartbeatResponse_v1(throttle_time_ms=0, error_code=code)


def test_a_static_members_heartbeat_names_its_instance_id():
    client = guarded(heartbeat_answer(0))
    asyncio.run(client.send(1, HeartbeatRequest("sizer-prod", 4, "sizer-worker-1-abc")))
    # aiokafka 0.14 sends v0/v1, without it: the broker can then only say UNKNOWN_MEMBER_ID
    struct = client.sent[0].prepare({12: (0, 4)})
    assert (struct.API_VERSION, struct.group, struct.generation_id, struct.member_id, struct.group_instance_id) == (
        3, "sizer-prod", 4, "sizer-worker-1-abc", "sizer-worker-1")
    assert client.sent[0].prepare({12: (0, 2)}).API_VERSION == 1  # a broker before KIP-345


def test_a_static_members_offset_commit_names_its_instance_id():
    # an at-least-once worker commits with OffsetCommit: without the id the broker could only say
    # UNKNOWN_MEMBER_ID to the previous holder, which joined again and took the id back, for ever
    answer = OffsetCommitResponse_v3(throttle_time_ms=0, topics=[("signals", [(1, 0)])])
    client = guarded(lambda request: answer)
    asyncio.run(client.send(1, OffsetCommitRequest("sizer-prod", 4, "m-abc", -1, [("signals", [(1, 7, "x")])])))
    struct = client.sent[0].prepare({8: (0, 9)})
    assert (struct.API_VERSION, struct.group_id, struct.generation_id, struct.member_id, struct.group_instance_id,
            struct.topics) == (7, "sizer-prod", 4, "m-abc", "sizer-worker-1", [("signals", [(1, 7, -1, "x")])])
    # Kafka's wire layout of v7: group, generation, member, instance id, then per partition the
    # offset, the leader epoch and the metadata
    assert struct.encode() == (b"\x00\x0asizer-prod" + b"\x00\x00\x00\x04" + b"\x00\x05m-abc"
                               + b"\x00\x0esizer-worker-1" + b"\x00\x00\x00\x01" + b"\x00\x07signals"
                               + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x01" + (7).to_bytes(8, "big")
                               + b"\xff\xff\xff\xff" + b"\x00\x01x")
    old = client.sent[0].prepare({8: (0, 3)})  # a broker before KIP-345
    assert (old.API_VERSION, old.topics) == (3, [("signals", [(1, 7, "x")])])


@pytest.mark.parametrize("request_", [
    HeartbeatRequest("sizer-prod", 4, "m"),
    JoinGroupRequest("sizer-prod", 10_000, 30_000, "m", "sizer-worker-1", "consumer", []),
    SyncGroupRequest("sizer-prod", 4, "m", "sizer-worker-1", []),
], ids=["Heartbeat", "JoinGroup", "SyncGroup"])
def test_a_fenced_answer_of_the_group_coordinator_stops_the_worker(request_):
    client = guarded(lambda request: SimpleNamespace(API_KEY=request.API_KEY, error_code=82))
    with pytest.raises(Fenced) as fenced:
        asyncio.run(client.send(1, request_))
    assert fenced.value.args == ("sizer-prod", "sizer-worker-1")


def test_an_offset_commit_fenced_on_a_partition_stops_the_worker():
    answer = OffsetCommitResponse_v3(throttle_time_ms=0, topics=[("signals", [(0, 0), (1, 82)])])
    client = guarded(lambda request: answer)
    with pytest.raises(Fenced):
        asyncio.run(client.send(1, OffsetCommitRequest("sizer-prod", 4, "m", -1, [("signals", [(1, 7, "")])])))


@pytest.mark.parametrize("code", [0, 25, 27])  # none, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS
def test_any_other_answer_is_aiokafkas_to_handle(code):
    client = guarded(lambda request: SyncGroupResponse_v3(throttle_time_ms=0, error_code=code, member_assignment=b""))
    answer = asyncio.run(client.send(1, SyncGroupRequest("sizer-prod", 4, "m", "sizer-worker-1", [])))
    assert answer.error_code == code


def test_requests_outside_the_group_pass_untouched():
    fetch = FetchRequest(-1, 100, 1, 1_000_000, 0, [])
    client = guarded(lambda request: SimpleNamespace(API_KEY=1, error_code=82))  # not the group's: not read
    asyncio.run(client.send(1, fetch))
    assert client.sent == [fetch]


@pytest.fixture
def app(tmp_path):
    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path, group_instance_id="sizer-worker-1")
    return build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), CollectorRegistry())


def test_a_worker_takes_over_the_assignment_made_for_the_holder_of_its_instance_id_before_it(app):
    assignor = app.assignor
    actives = {"signals": [0, 3], "fills": [0, 3]}
    made_for_previous = ClientMetadata(assignment=ClientAssignment(actives=actives, standbys={}),
                                       url="http://10.0.0.7:6066", changelog_distribution={}, topic_groups={})
    assigned = sorted(made_for_previous.assignment.kafka_protocol_assignment(app.tables))
    assert str(assignor._url) != made_for_previous.url
    # faust-streaming 0.15.3: AssertionError, in aiokafka's coordinator task, which dies
    assignor.on_assignment(ConsumerProtocolMemberAssignment(
        assignor.version, assigned,
        assignor._compress(membership.with_commit_form(made_for_previous.dumps(), app.commit_form))))
    assert {(tp.topic, tp.partition) for tp in assignor.assigned_actives()} == {
        (topic, p) for topic, partitions in actives.items() for p in partitions}


@pytest.mark.parametrize("refusal", [ProducerFenced(), InvalidTxnState()], ids=["fenced", "invalid_txn_state"])
def test_a_send_the_broker_refuses_asks_the_group_before_the_batch_fails(app, monkeypatch, refusal):
    # a zombie's sends after the newcomer's producers fenced its own (InvalidTxnState: KIP-890's check)
    asked = []

    async def check_membership(app_):
        asked.append(app_)

    monkeypatch.setattr("streams.faust_compat.outputs.check_membership", check_membership)
    outputs = Outputs(app)

    async def refused_send():
        future = asyncio.get_running_loop().create_future()
        future.set_exception(refusal)
        outputs._pending.append(future)
        await outputs.delivered()

    with pytest.raises(type(refusal)):
        asyncio.run(refused_send())
    assert asked == [app]


class RefusedCommit:
    def __init__(self, refusal: BaseException) -> None:
        self.refusal = refusal

    async def send_offsets_to_transaction(self, offsets, group_id):
        pass

    async def commit_transaction(self):
        raise self.refusal


@pytest.mark.parametrize("refusal, asks", [(ProducerFenced(), True), (InvalidTxnState(), True),
                                           (RuntimeError("a bug"), False)], ids=["fenced", "invalid_txn_state", "bug"])
def test_a_commit_the_broker_refuses_asks_the_group_before_it_fails(app, monkeypatch, refusal, asks):
    asked = []

    async def check_membership(app_):
        asked.append(app_)

    monkeypatch.setattr(membership, "check_membership", check_membership)
    producer = object.__new__(ConcurrentCommitProducer)  # only the transaction bookkeeping is used
    producer._transaction_producers = {"t": RefusedCommit(refusal)}
    producer._trn_locks = {"t": asyncio.Lock()}
    producer.app = app
    with pytest.raises(type(refusal)):
        asyncio.run(producer.commit_transactions({"t": {}}, "sizer-prod"))
    assert asked == ([app] if asks else [])


def test_a_worker_with_no_instance_id_asks_nothing(tmp_path):
    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path)
    dynamic = build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), CollectorRegistry())
    asyncio.run(membership.check_membership(dynamic))  # returns at once: no consumer is even looked at


# Kafka's rule for a group.instance.id (the Java client's, as for a topic name): the broker
# itself takes any string, so a bad one must stop start-up here, naming the field and the rule
@pytest.mark.parametrize("value", [" ", "worker 0", " worker-0", "worker-0\n", "wörker-0", "sizer/worker-0",
                                   "ns:worker-0", ".", "..", "w" * 250])
def test_a_group_instance_id_kafka_refuses_stops_start_up_naming_the_field_and_the_rule(monkeypatch, value):
    monkeypatch.setenv("SIZER_GROUP_INSTANCE_ID", value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "group_instance_id: must be 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'" in str(refused.value)


@pytest.mark.parametrize("value", ["sizer-prod.sizer-0", "w" * 249, "A_b.9-x"])
def test_a_group_instance_id_kafka_takes_is_kept_as_given(monkeypatch, value):
    monkeypatch.setenv("SIZER_GROUP_INSTANCE_ID", value)
    assert load_settings().group_instance_id == value


def test_sizer_worker_with_a_bad_group_instance_id_exits_2_before_any_broker(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIZER_", "KAFKA_"))}
    env |= {"SIZER_GROUP_INSTANCE_ID": "worker 0", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "SIZER_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "group_instance_id: must be 1 to 249 of a-z" in done.stderr
    assert "Traceback" not in done.stderr


# A group runs one commit form: the leader assigns only to members of its own, and a
# member told another form than its own stops before it processes anything.
PER_PARTITION = "SIZER_PROCESSING_GUARANTEE=exactly_once SIZER_TRANSACTIONS=per_partition"
PER_WORKER = "SIZER_PROCESSING_GUARANTEE=exactly_once SIZER_TRANSACTIONS=per_worker"
AT_LEAST_ONCE = "SIZER_PROCESSING_GUARANTEE=at_least_once"


def app_of(tmp_path, **settings):
    kafka = WorkerSettings(bootstrap="127.0.0.1:1", data_dir=tmp_path, **settings)
    return build_app(kafka, load_config("conviction"), load_topics(kafka.topics_file, ""), CollectorRegistry())


class Cluster:
    """The partition counts the leader reads, as the spec has them."""

    def __init__(self, app):
        self.counts = dict(app.inputs.partitions)
        self.counts.update({table.changelog_topic.get_topic_name(): 6 for table in app.tables.values()})

    def partitions_for_topic(self, topic):
        return set(range(self.counts[topic])) if topic in self.counts else None

    def topics(self):
        return set(self.counts)


def member_of(app):
    """What a worker built from `app` sends the coordinator when it joins."""
    return app.assignor.metadata({"signals", "fills"})


@pytest.mark.parametrize("settings, form", [({}, PER_WORKER), ({"transactions": "per_partition"}, PER_PARTITION),
                                            ({"processing_guarantee": "at_least_once"}, AT_LEAST_ONCE),
                                            ({"processing_guarantee": "at_least_once", "transactions": "per_worker"},
                                             AT_LEAST_ONCE)])
def test_a_worker_joins_naming_how_it_commits(tmp_path, settings, form):
    joined = json.loads(member_of(app_of(tmp_path, **settings)).user_data)
    assert joined[membership.COMMIT_FORM] == form
    # and faust's own record is still whole
    assert ClientMetadata.loads(member_of(app_of(tmp_path, **settings)).user_data).url == "http://127.0.0.1:6066"


@pytest.mark.parametrize("leader_settings, other_settings", [
    ({"transactions": "per_partition"}, {"transactions": "per_worker"}),
    ({"transactions": "per_worker"}, {"transactions": "per_partition"}),
    ({}, {"processing_guarantee": "at_least_once"}),
    ({"processing_guarantee": "at_least_once"}, {}),
])
def test_the_leader_assigns_nothing_to_a_member_of_another_form_and_tells_it_the_groups(
        tmp_path, leader_settings, other_settings):
    leader = app_of(tmp_path / "a", **leader_settings)
    other = app_of(tmp_path / "b", **other_settings)
    members = {"a-1": member_of(leader), "b-1": member_of(other), "a-2": member_of(leader)}

    assigned = leader.assignor.assign(Cluster(leader), members)

    partitions = {member: {(topic, p) for topic, ps in a.assignment for p in ps} for member, a in assigned.items()}
    assert partitions["b-1"] == set()
    # every input partition goes to a member of the leader's form, once
    assert sorted(partitions["a-1"] | partitions["a-2"]) == sorted(
        (topic, p) for topic in ("signals", "fills") for p in range(6))
    assert partitions["a-1"].isdisjoint(partitions["a-2"])
    for member, assignment in assigned.items():
        record = json.loads(leader.assignor._decompress(assignment.user_data))
        assert record[membership.COMMIT_FORM] == leader.commit_form, member
    # the other member, told the group's form, stops
    stopped = []
    with pytest.raises(SystemExit):
        with_stop_recorded(stopped, lambda: other.assignor.on_assignment(assigned["b-1"]))
    assert stopped == [(other.conf.id, other.commit_form, leader.commit_form)]
    # a member of the leader's form takes its partitions
    leader.assignor.on_assignment(assigned["a-2"])
    assert {(tp.topic, tp.partition) for tp in leader.assignor.assigned_actives()} == partitions["a-2"]


def with_stop_recorded(stopped, call):
    original = membership.stop_mixed

    def stop(group, own, group_form):
        stopped.append((group, own, group_form))
        raise SystemExit(2)

    membership.stop_mixed = stop
    try:
        call()
    finally:
        membership.stop_mixed = original


def test_a_group_of_one_form_is_assigned_as_faust_assigns_it(tmp_path):
    leader = app_of(tmp_path / "a", transactions="per_worker")
    members = {"a-1": member_of(leader), "a-2": member_of(app_of(tmp_path / "b", transactions="per_worker"))}
    assigned = leader.assignor.assign(Cluster(leader), members)
    assert [len(a.assignment[0][1]) + len(a.assignment[1][1]) for a in assigned.values()] == [6, 6]


@pytest.mark.parametrize("settings, stops", [({"transactions": "per_partition"}, False), ({}, True),
                                             ({"transactions": "per_worker"}, True),
                                             ({"processing_guarantee": "at_least_once"}, True)])
def test_an_assignment_from_a_leader_of_an_earlier_release_is_taken_as_exactly_once_per_partition(
        tmp_path, settings, stops):
    # a leader that names no form ran the earlier default: only that form may take its assignment
    app = app_of(tmp_path, **settings)
    record = ClientMetadata(assignment=ClientAssignment(actives={"signals": [1], "fills": [1]}, standbys={}),
                            url="http://127.0.0.1:6066", changelog_distribution={}, topic_groups={})
    assignment = ConsumerProtocolMemberAssignment(app.assignor.version, [("fills", [1]), ("signals", [1])],
                                                  app.assignor._compress(record.dumps()))
    stopped = []
    if stops:
        with pytest.raises(SystemExit):
            with_stop_recorded(stopped, lambda: app.assignor.on_assignment(assignment))
        assert stopped == [(app.conf.id, app.commit_form, PER_PARTITION)]
    else:
        app.assignor.on_assignment(assignment)
        assert {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()} == {("signals", 1), ("fills", 1)}


def test_a_worker_of_another_form_ends_with_one_line_on_stderr_and_exit_2():
    code = ("import io, sys; sys.stderr = io.StringIO(); from streams.faust_compat.membership import stop_mixed; "
            f"stop_mixed('sizer-prod', {PER_WORKER!r}, {PER_PARTITION!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, (
        "sizer: the workers of group sizer-prod run SIZER_PROCESSING_GUARANTEE=exactly_once "
        "SIZER_TRANSACTIONS=per_partition, this one SIZER_PROCESSING_GUARANTEE=exactly_once "
        "SIZER_TRANSACTIONS=per_worker: the two do not fence each other's commits; stop every worker of the "
        "group to change either setting\n"))


@pytest.mark.parametrize("user_data", [b"\x00\x01 not json", b"", b"[]", b"null", b'"per_worker"', b"7",
                                       b'{"sizer_commit_form": "SIZER_PROCESSING_GUARANTEE=exactly_once '
                                       b'SIZER_TRANSACTIONS=per_worker"}',
                                       b'{"assignment": 1, "url": "http://h:1", "changelog_distribution": {}}',
                                       b'{"assignment": {"actives": [], "standbys": {}}, "url": 5, '
                                       b'"changelog_distribution": {}}'])
@pytest.mark.parametrize("transactions", ["per_worker", "per_partition"])
def test_a_member_whose_metadata_is_no_sizer_workers_is_assigned_nothing_and_the_leader_goes_on(
        tmp_path, user_data, transactions):
    # another client joined the group under faust's protocol name, with metadata of its own
    leader = app_of(tmp_path / "a", transactions=transactions)
    stranger = ConsumerProtocolMemberMetadata(0, ["signals", "fills"], user_data)
    members = {"a-1": member_of(leader), "x-1": stranger,
               "a-2": member_of(app_of(tmp_path / "b", transactions=transactions))}

    assigned = leader.assignor.assign(Cluster(leader), members)

    partitions = {member: {(topic, p) for topic, ps in a.assignment for p in ps} for member, a in assigned.items()}
    assert partitions["x-1"] == set()
    assert sorted(partitions["a-1"] | partitions["a-2"]) == sorted(
        (topic, p) for topic in ("signals", "fills") for p in range(6))
    record = json.loads(leader.assignor._decompress(assigned["x-1"].user_data))
    assert record[membership.COMMIT_FORM] == leader.commit_form
    assert record["assignment"] == {"actives": {}, "standbys": {}}


def test_an_assignment_from_a_leader_that_is_no_faust_worker_stops_the_worker(tmp_path):
    app = app_of(tmp_path)
    for user_data in (b"not zlib", app.assignor._compress(b"[1, 2]")):
        stopped = []
        with pytest.raises(SystemExit):
            with_stop_recorded(stopped, lambda: app.assignor.on_assignment(
                ConsumerProtocolMemberAssignment(0, [("signals", [0])], user_data)))
        assert stopped == [(app.conf.id, app.commit_form, membership.UNREADABLE_FORM)]


def running(app, leader, members, member):
    """`app` after it took `member`'s share of the assignment `leader` made for `members`."""
    app.assignor.on_assignment(leader.assignor.assign(Cluster(leader), members)[member])
    return app


@pytest.mark.parametrize("running_settings, newcomer_settings", [
    ({"transactions": "per_partition"}, {}), ({}, {"transactions": "per_partition"}),
    ({}, {"processing_guarantee": "at_least_once"})])
def test_a_leader_of_another_form_than_the_running_members_assigns_itself_nothing_and_stops(
        tmp_path, running_settings, newcomer_settings):
    # the running group's leader left; a newcomer of another form was elected leader
    first = app_of(tmp_path / "a", **running_settings)
    second = app_of(tmp_path / "b", **running_settings)
    members = {"a-1": member_of(first), "b-1": member_of(second)}
    running(first, first, members, "a-1")
    running(second, first, members, "b-1")
    newcomer = app_of(tmp_path / "c", **newcomer_settings)
    members = {"c-1": member_of(newcomer), "a-1": member_of(first), "b-1": member_of(second)}

    assigned = newcomer.assignor.assign(Cluster(newcomer), members)

    partitions = {member: {(topic, p) for topic, ps in a.assignment for p in ps} for member, a in assigned.items()}
    assert partitions["c-1"] == set()
    assert sorted(partitions["a-1"] | partitions["b-1"]) == sorted(
        (topic, p) for topic in ("signals", "fills") for p in range(6))
    stopped = []
    with pytest.raises(SystemExit):
        with_stop_recorded(stopped, lambda: newcomer.assignor.on_assignment(assigned["c-1"]))
    assert stopped == [(newcomer.conf.id, newcomer.commit_form, first.commit_form)]
    first.assignor.on_assignment(assigned["a-1"])  # the running members go on
    assert {(tp.topic, tp.partition) for tp in first.assignor.assigned_actives()} == partitions["a-1"]
