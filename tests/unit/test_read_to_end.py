"""Reading a topic to its end offsets (`streams.kafka.io`, the worker's start-up
check of its stored positions, the audit) ends as soon as the position reaches the
end, when the last offset is a transaction marker too: aiokafka hands no record
for it, and a poll with nothing to hand waits its whole timeout."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from streams.errors import KafkaUnavailable
from streams.kafka import io, topics

TP = TopicPartition("sizer-exposure-changelog", 0)


class TransactionalTopic:
    """One partition: records at offsets 0-2, a commit marker at 3 (end offset 4).
    Like aiokafka, a poll that finds only the marker moves the position past it and
    waits out its timeout (noted in `waited_ms`)."""

    def __init__(self) -> None:
        self.at = 0
        self.waited_ms = 0

    async def topics(self):
        return {TP.topic}

    def assign(self, tps):
        pass

    async def seek_to_beginning(self, tp):
        self.at = 0

    async def end_offsets(self, tps):
        return {TP: 4}

    async def position(self, tp):
        return self.at

    async def getmany(self, timeout_ms):
        if self.at < 3:
            records = [type("R", (), {"topic": TP.topic, "partition": 0, "offset": o, "key": b"k", "value": b"v",
                                      "headers": (), "timestamp": 0})() for o in range(self.at, 3)]
            self.at = 3
            return {TP: records}
        self.at = 4  # the marker: no record
        self.waited_ms += timeout_ms
        return {}


def test_a_read_ending_on_a_transaction_marker_waits_one_short_poll_for_it():
    topic = TransactionalTopic()
    records = asyncio.run(io._read_assigned(topic, {TP: (None, None)}, 30.0))
    assert [r.offset for r in records] == [0, 1, 2]
    assert topic.waited_ms <= 100  # was 500 on every read of a changelog or the positions


class LateMetadata:
    """A consumer whose metadata lacks a topic for its first `absent` answers: a
    changelog another worker has just created, asked of a broker that has not yet
    learned of it."""

    def __init__(self, absent: int) -> None:
        self.absent, self.asked = absent, 0

    async def topics(self):
        self.asked += 1
        return set() if self.asked <= self.absent else {TP.topic}


class Principal:
    settings = type("Settings", (), {"principal": "User:sizer"})()


def refusing(*names, asked=None):
    async def refused_topics(client, hidden):
        if asked is not None:
            asked.append(hidden)
        return [name for name in hidden if name in names]
    return refused_topics


def test_a_topic_another_worker_has_just_created_is_waited_for(monkeypatch):
    described = []
    monkeypatch.setattr(topics, "refused_topics", refusing(asked=described))
    monkeypatch.setattr(io, "VISIBLE_RETRY_S", 0.01)
    consumer = LateMetadata(absent=3)
    asyncio.run(io.until_visible(consumer, {TP.topic}, Principal()))
    assert consumer.asked == 4  # was refused "not authorized" at the first absence
    assert described == [[TP.topic]]  # the broker asked by name once, not at every retry


def test_a_topic_this_principal_may_not_describe_is_refused_at_once_naming_it(monkeypatch):
    monkeypatch.setattr(topics, "refused_topics", refusing(TP.topic))
    consumer = LateMetadata(absent=1_000)
    with pytest.raises(KafkaUnavailable, match=f"not authorized: User:sizer may not Read topic {TP.topic}"):
        asyncio.run(io.until_visible(consumer, {TP.topic}, Principal()))
    assert consumer.asked == 1


def test_a_topic_that_never_appears_is_refused_after_the_wait(monkeypatch):
    monkeypatch.setattr(topics, "refused_topics", refusing())
    monkeypatch.setattr(io, "VISIBLE_WAIT_S", 0.2)
    monkeypatch.setattr(io, "VISIBLE_RETRY_S", 0.01)
    consumer = LateMetadata(absent=1_000_000)
    with pytest.raises(KafkaUnavailable, match="or no such topic"):
        asyncio.run(io.until_visible(consumer, {TP.topic}, Principal()))
    assert 5 < consumer.asked < 1_000


class MetadataModel:
    """aiokafka's consumer as `end_offsets` meets unknown topics: without an
    assignment it learns one unknown topic per attempt, each attempt after its 100 ms
    retry backoff (`backoffs`); assigned partitions' topics come in one request."""

    def __init__(self, **options) -> None:
        self.known: set[str] = set()
        self.backoffs = 0

    async def start(self):
        pass

    async def stop(self):
        pass

    def assign(self, tps):
        self.known |= {tp.topic for tp in tps}

    async def end_offsets(self, tps):
        while unknown := sorted({tp.topic for tp in tps} - self.known):
            self.known.add(unknown[0])
            self.backoffs += 1
        return {tp: 7 for tp in tps}


def test_the_end_offsets_of_many_topics_come_without_a_backoff_per_topic(monkeypatch):
    made: list[MetadataModel] = []

    def consumer(**options):
        made.append(MetadataModel(**options))
        return made[-1]

    monkeypatch.setattr(io, "AIOKafkaConsumer", consumer)
    client = type("Client", (), {"options": lambda self, **kw: kw})()
    changelogs = {f"sizer-{table}-changelog": range(6) for table in ("exposure", "streak", "controls", "windows")}
    ends = asyncio.run(io.partition_ends(client, changelogs))
    assert len(ends) == 24 and set(ends.values()) == {7}
    assert len(made) == 1 and made[0].backoffs == 0  # was one consumer per changelog, each a backoff


def test_the_audit_lets_every_read_end_before_a_refusal_is_raised(monkeypatch):
    """One refused topic among the audit's concurrent reads: the refusal is raised
    only once every other read has ended, so none is left to end (and be logged with
    its traceback) while asyncio.run shuts down (seen under Kafka 4.4 in CI)."""
    from streams.history import audit
    from streams.kafka.topics import load_topics

    ended: list[str] = []

    async def read_topic(client, name, partitions, timeout_s=60.0):
        if name.endswith("controls"):
            raise KafkaUnavailable(f"not authorized: User:operator may not Read topic {name}")
        await asyncio.sleep(0.05)
        ended.append(name)
        return []

    monkeypatch.setattr(audit, "read_topic", read_topic)
    topics = load_topics(__import__("pathlib").Path(__file__).resolve().parents[2] / "topics" / "topics.toml", "t-")
    with pytest.raises(KafkaUnavailable, match="may not Read topic t-controls"):
        asyncio.run(audit.read_history(Principal(), topics))
    assert len(ended) == len(audit.ROLES) - 1
