"""The product on a secured broker (issue 14): the project's KRaft broker started
by `broker.sh` with KAFKA_SECURITY=sasl_ssl (SASL_SSL, SCRAM-SHA-512, its own CA,
the StandardAuthorizer), the ACLs of topics/acls.toml applied by `sizer acls
apply`, and every client connecting as its own principal."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from streams.errors import KafkaUnavailable
from streams.kafka.io import end_offsets, publish, read_topic, wait_consumed
from streams.worker.settings import WorkerSettings
from streams.kafka.topics import load_topics
from streams.wire.roles import ROLES
from tests.builders import journal_text
from tests.integration.harness import ROOT, SIZER, Broker, Worker, free_port
from tests.integration.test_cap_on_broker import ENV, FILLS, FIRST, INSTRUMENTS, THEN, comparable

USERS = ("admin", "sizer-worker", "signal-producer", "execution-engine", "operator", "auditor", "sizer-setup")


class Secured:
    """The secured broker, this module's topics and app id, and running commands as a principal."""

    def __init__(self, broker: Broker, workdir: Path) -> None:
        self.home, self.bootstrap, self.workdir = broker.home, broker.bootstrap, workdir
        tag = uuid.uuid4().hex[:8]
        self.prefix, self.app_id = f"sec{tag}-", f"sizer-sec-{tag}"
        self.topics = load_topics(ROOT / "topics" / "topics.toml", self.prefix)
        self.passwords = {user: (self.home / "secrets" / f"{user}.password").read_text().strip() for user in USERS}
        self.made: list[Any] = []  # the workers made here, whichever principal (harness.Worker's data dirs)

    def env(self, user: str | None, **extra: str) -> dict[str, str]:
        """A clean environment (no SIZER_*, SIZING_*, KAFKA_* of the test run) with `user`'s
        client settings from broker.sh; None: no security settings at all."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SIZER_", "SIZING_", "KAFKA_"))}
        client = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        if user is not None:
            lines = (self.home / "clients" / f"{user}.env").read_text().splitlines()
            client.update(line.split("=", 1) for line in lines if "=" in line)
        return {**base, **client, "SIZER_TOPIC_PREFIX": self.prefix, "SIZER_APP_ID": self.app_id, **extra}

    def settings(self, user: str) -> WorkerSettings:
        return WorkerSettings(
            bootstrap=self.bootstrap, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user, sasl_password_file=self.home / "secrets" / f"{user}.password",
            ssl_cafile=self.home / "tls" / "ca.pem", topic_prefix=self.prefix, app_id=self.app_id)

    def client(self, user: str):
        return self.settings(user).for_role(f"test-{user}")

    def sizer(self, user: str | None, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run a `sizer` command as `user`. No password of any user may appear in what it prints."""
        done = subprocess.run([SIZER, *args], env=self.env(user, **extra), capture_output=True, text=True,
                              timeout=300, cwd=self.workdir)
        self.assert_no_password(done.stdout + done.stderr, f"sizer {' '.join(args)}")
        return done

    def assert_no_password(self, text: str, where: str) -> None:
        for user, password in self.passwords.items():
            assert password not in text, f"{user}'s password appears in {where}"

    def publish(self, user: str, entries: list[dict]) -> None:
        asyncio.run(publish(self.client(user), self.topics, [(e["topic"], e["value"]) for e in entries]))

    def read(self, user: str, role: str):
        spec = self.topics[role]
        return asyncio.run(read_topic(self.client(user), spec.name, spec.partitions))

    def wait_for(self, role: str, count: int, timeout_s: float = 90.0):
        deadline = time.monotonic() + timeout_s
        while len(records := self.read("auditor", role)) < count:
            assert time.monotonic() < deadline, f"{role} has {len(records)} records, expected {count}"
            time.sleep(0.3)
        return records

    def as_user(self, user: str) -> "_As":
        return _As(self, user)


class _As:
    """What harness.Worker needs of a deployment, for one principal."""

    def __init__(self, secured: Secured, user: str) -> None:
        self.secured, self.user, self.workdir, self.made = secured, user, secured.workdir, secured.made

    def env(self, **extra: str) -> dict[str, str]:
        return self.secured.env(self.user, **extra)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """The secured broker for this module, with the ACLs applied (as admin) and the
    topics created (as operator), each by the product's own command."""
    broker = Broker(tmp_path_factory.mktemp("kafka-secured"), security="sasl_ssl")
    broker.start()
    try:
        cluster = Secured(broker, tmp_path_factory.mktemp("secured"))
        cluster.acls_applied = cluster.sizer("admin", "acls", "apply")
        cluster.topics_applied = cluster.sizer("operator", "topics", "apply")
        yield cluster
    finally:
        broker.stop()


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_acls_and_topics_are_applied_by_their_own_principals_and_drift_is_named(secured):
    assert secured.acls_applied.returncode == 0, secured.acls_applied.stderr
    created = secured.acls_applied.stdout
    orders = secured.topics.name("orders")
    for line in (f"created User:sizer-worker Write transactional-id-prefix:{secured.app_id}-",
                 f"created User:sizer-worker Read group:{secured.app_id}",
                 f"created User:sizer-worker Create topic:{secured.app_id}-exposure-changelog",
                 f"created User:signal-producer Write topic:{secured.topics.name('signals')}",
                 f"created User:auditor Read topic:{orders}"):
        assert line in created.splitlines()
    assert secured.topics_applied.returncode == 0, secured.topics_applied.stderr
    assert f"created {orders} (6 partitions, delete)" in secured.topics_applied.stdout

    again = secured.sizer("admin", "acls", "apply")
    assert again.returncode == 0 and "created" not in again.stdout
    assert secured.sizer("admin", "acls", "apply", "--check").returncode == 0
    assert secured.sizer("operator", "topics", "apply", "--check").returncode == 0

    # an ACL the file does not grant: named, exit 3, and left for a human to remove
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             KafkaAdminClient, ResourcePattern, ResourcePatternFilter, ResourceType)

    admin = KafkaAdminClient(**secured.settings("admin").client("test-admin"))
    try:
        extra = ACL("User:auditor", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType.TOPIC, orders))
        assert not admin.create_acls([extra])["failed"]
        drifted = secured.sizer("admin", "acls", "apply")
        assert drifted.returncode == 3
        assert f"User:auditor Write topic:{orders}: on the broker, not in the ACL file" in drifted.stderr
        assert drifted.stderr.count("not in the ACL file") == 1
    finally:
        admin.delete_acls([ACLFilter("User:auditor", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                                     ResourcePatternFilter(ResourceType.TOPIC, orders,
                                                           ACLResourcePatternType.LITERAL))])
        admin.close()
    assert secured.sizer("admin", "acls", "apply", "--check").returncode == 0
    # ACLs are administered by a super user or the setup principal only
    refused = secured.sizer("operator", "acls", "apply")
    assert refused.returncode == 4 and "not authorized" in one_line(refused)


def test_the_setup_principal_applies_acls_and_checks_topics_without_being_a_super_user(secured):
    """What the Helm chart's setup Job runs, as sizer-setup (granted its ACLs once, here by
    the fixture's `acls apply` as admin): an ACL gone from the broker is created again."""
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient
    from kafka.admin import ResourcePatternFilter, ResourceType

    assert "User:sizer-setup" not in (secured.home / "server.properties").read_text().split("super.users=")[1]
    orders = secured.topics.name("orders")
    admin = KafkaAdminClient(**secured.settings("admin").client("test-admin"))
    try:
        deleted = admin.delete_acls([ACLFilter("User:auditor", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                                               ResourcePatternFilter(ResourceType.TOPIC, orders,
                                                                     ACLResourcePatternType.LITERAL))])
        assert len(deleted[0][1]) == 1, deleted
    finally:
        admin.close()
    applied = secured.sizer("sizer-setup", "acls", "apply")
    assert applied.returncode == 0, applied.stderr
    assert f"created User:auditor Read topic:{orders}" in applied.stdout.splitlines(), applied.stdout
    assert secured.sizer("sizer-setup", "topics", "apply").returncode == 0


def test_acls_check_names_a_grant_to_a_principal_the_file_does_not_name(secured):
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             KafkaAdminClient, ResourcePattern, ResourcePatternFilter, ResourceType)

    orders, signals = secured.topics.name("orders"), secured.topics.name("signals")
    extra = [ACL("User:*", "*", ACLOperation.READ, ACLPermissionType.ALLOW, ResourcePattern(ResourceType.TOPIC, orders)),
             ACL("User:mallory", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                 ResourcePattern(ResourceType.TOPIC, signals)),
             ACL("User:mallory", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                 ResourcePattern(ResourceType.GROUP, secured.app_id)),
             # the ACLs themselves (Alter on the cluster), and a delegation token as the worker
             ACL("User:mallory", "*", ACLOperation.ALTER, ACLPermissionType.ALLOW,
                 ResourcePattern(ResourceType.CLUSTER, "kafka-cluster")),
             ACL("User:mallory", "*", ACLOperation.CREATE_TOKENS, ACLPermissionType.ALLOW,
                 ResourcePattern(ResourceType.USER, "User:sizer-worker")),
             # another application's topic, and what any client of a shared cluster holds: none of
             # the product's business
             ACL("User:mallory", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                 ResourcePattern(ResourceType.TOPIC, "another-apps-topic")),
             ACL("User:other-app", "*", ACLOperation.IDEMPOTENT_WRITE, ACLPermissionType.ALLOW,
                 ResourcePattern(ResourceType.CLUSTER, "kafka-cluster"))]
    admin = KafkaAdminClient(**secured.settings("admin").client("test-admin"))
    try:
        assert not admin.create_acls(extra)["failed"]
        drifted = secured.sizer("admin", "acls", "apply", "--check")
        assert drifted.returncode == 3, drifted.stdout + drifted.stderr
        for line in (f"User:* Read topic:{orders}: on the broker, not in the ACL file",
                     f"User:mallory Write topic:{signals}: on the broker, not in the ACL file",
                     f"User:mallory Read group:{secured.app_id}: on the broker, not in the ACL file",
                     "User:mallory Alter cluster: on the broker, not in the ACL file",
                     "User:mallory CreateTokens user:User:sizer-worker: on the broker, not in the ACL file"):
            assert line in drifted.stderr, drifted.stderr
        assert "another-apps-topic" not in drifted.stderr and "other-app" not in drifted.stderr
    finally:
        for acl in extra:
            pattern = acl.resource_pattern
            admin.delete_acls([ACLFilter(acl.principal, "*", acl.operation, acl.permission_type,
                                         ResourcePatternFilter(pattern.resource_type, pattern.resource_name,
                                                               ACLResourcePatternType.LITERAL))])
        admin.close()
    assert secured.sizer("admin", "acls", "apply", "--check").returncode == 0


def test_no_scram_password_was_on_a_command_line_and_the_brokers_files_are_its_owners(secured):
    import stat

    # the users are created through the admin API from files, after the broker started
    script = (ROOT / "deploy" / "broker" / "broker.sh").read_text()
    assert "--add-scram" not in script and "--add-config-file" in script
    for user in USERS:
        assert f"{user}.scram" not in {p.name for p in (secured.home / "secrets").iterdir()}
    data, = secured.home.glob("data*")  # data-<Kafka version>
    for path in (secured.home, data, secured.home / "secrets", secured.home / "tls"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    segments = [p for p in data.rglob("*") if p.is_file()]
    assert segments and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in segments)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_two_exactly_once_workers_decide_over_sasl_ssl_as_replay_does(secured, tmp_path):
    stray_web = free_port()
    # faust's own unprefixed variables: a broker that does not exist, another guarantee and port
    stray = {"PROCESSING_GUARANTEE": "at_least_once", "BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
             "WEB_PORT": str(stray_web)}
    first = Worker(secured.as_user("sizer-worker"), ["--preset", "conviction"], dict(ENV))
    second = Worker(secured.as_user("sizer-worker"), ["--preset", "conviction"],
                    {**ENV, **stray, "SIZER_DATA_DIR": str(tmp_path / "second")})
    try:
        first.start()
        second.start()
        secured.publish("operator", INSTRUMENTS)
        secured.publish("signal-producer", FIRST)
        secured.wait_for("decisions", len(FIRST))
        secured.publish("execution-engine", FILLS)
        fills = secured.topics["fills"]
        asyncio.run(wait_consumed(secured.client("admin"), secured.app_id, fills.name, fills.partitions))
        secured.publish("signal-producer", THEN)
        records = secured.wait_for("decisions", len(FIRST) + len(THEN))

        # the decisions of `sizer replay` on the same journal
        journal = tmp_path / "journal.jsonl"
        journal.write_text(journal_text(INSTRUMENTS + FIRST + FILLS + THEN))
        done = secured.sizer(None, "replay", "--journal", str(journal), "--preset", "conviction", **ENV)
        assert done.returncode == 0, done.stderr
        expected = {(d["portfolio_id"], d["signal_id"], d["trace"]["signal"]["price"]): comparable(d)
                    for d in map(json.loads, done.stdout.splitlines())}
        decided = {(d["portfolio_id"], d["signal_id"], d["trace"]["signal"]["price"]): comparable(d)
                   for d in (r.json() for r in records)}
        assert decided == expected

        # Both workers decided, each served /metrics on its SIZER_WEB_PORT; faust's
        # WEB_PORT opened nothing; together they decided each signal once.
        counts = [metric(w.web_port, "sizer_decisions_total") for w in (first, second)]
        assert sum(counts) == len(records) and all(counts), counts
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{stray_web}/metrics", timeout=3)
        # exactly-once held on every partition, the stray worker's too: each partition
        # written ends past its last record (a transaction's commit marker)
        decisions = secured.topics["decisions"]
        ends = asyncio.run(end_offsets(secured.client("auditor"), decisions.name, decisions.partitions))
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        assert all(ends[p] > offset + 1 for p, offset in last.items()), (ends, last)

        # the config hash is the sizing configuration's alone: a password in the environment changes nothing
        shown = secured.sizer("sizer-worker", "config", "--json", "--preset", "conviction",
                              SIZER_SASL_PASSWORD_FILE="", SIZER_SASL_PASSWORD=secured.passwords["sizer-worker"],
                              **ENV)
        assert shown.returncode == 0, shown.stderr
        assert {r.json()["config_hash"] for r in records} == {json.loads(shown.stdout)["config_hash"]}
        assert json.loads(shown.stdout)["kafka"]["sasl_password"] == "**********"

        audit = secured.sizer("auditor", "audit", "--json")
        report = json.loads(audit.stdout)
        assert (audit.returncode, report["ok"], report["verified"]) == (0, True, len(records)), audit.stderr
        whatif = secured.sizer("auditor", "replay", "--from-kafka", "--preset", "conviction", "--json", **ENV)
        assert whatif.returncode == 0, whatif.stderr

        # an operator's command is applied by the workers and read back from their tables
        halt = secured.sizer("operator", "control", "halt", "--portfolio", "pc", "--reason", "secured")
        assert halt.returncode == 0, halt.stderr
        status = secured.sizer("operator", "control", "status", "--portfolio", "pc")
        assert status.returncode == 0 and "secured" in status.stdout, status.stdout + status.stderr
        whole = secured.sizer("operator", "status", "--portfolio", "pc", "--json")
        assert whole.returncode == 0, whole.stderr
        assert [latch["detail"] for latch in json.loads(whole.stdout)["portfolios"][0]["in_force"]] == ["secured"]
    finally:
        for worker in (first, second):
            if worker.process is not None:
                worker.stop()
    for worker in (first, second):
        secured.assert_no_password(worker.log(), f"worker log {worker.log_path}")


def test_refused_clients_get_one_line_naming_the_cause_and_exit_4(secured):
    check = ("topics", "apply", "--check")
    nothing = secured.sizer(None, *check)
    assert nothing.returncode == 4 and "authentication required" in one_line(nothing)
    tls_only = secured.sizer(None, *check, SIZER_SECURITY_PROTOCOL="SSL",
                             SIZER_SSL_CAFILE=str(secured.home / "tls" / "ca.pem"))
    assert tls_only.returncode == 4 and "without SASL credentials" in one_line(tls_only)
    wrong = secured.sizer("operator", *check, SIZER_SASL_PASSWORD_FILE="",
                          SIZER_SASL_PASSWORD=secured.passwords["auditor"])
    assert wrong.returncode == 4 and "authentication failed" in one_line(wrong)
    untrusted = secured.sizer("operator", *check, SIZER_SSL_CAFILE="")  # the system's CAs
    assert untrusted.returncode == 4 and "TLS verification failed" in one_line(untrusted)
    unauthorized = secured.sizer("signal-producer", "audit")
    assert unauthorized.returncode == 4
    assert "not authorized: User:signal-producer may not Describe topic" in one_line(unauthorized)
    worker = secured.sizer("sizer-worker", "worker", SIZER_SASL_PASSWORD_FILE="", SIZER_SASL_PASSWORD="not-it")
    assert worker.returncode == 4 and "authentication failed" in one_line(worker)


def test_refusals_name_the_principal_the_topic_and_the_permission_in_one_line(secured, tmp_path):
    changelog = f"{secured.app_id}-controls-changelog"
    journal = tmp_path / "signals.jsonl"
    journal.write_text(journal_text([{"topic": "signals", "value": {
        "signal_id": "s-1", "portfolio_id": "p1", "symbol": "X", "side": "buy", "score": "0.5", "price": "10",
        "ts": "2026-01-01T00:00:00Z"}}]))
    cases = {
        ("signal-producer", "control", "status"): f"User:signal-producer may not Read topic {changelog}",
        ("signal-producer", "control", "status", "--portfolio", "p1"):
            f"User:signal-producer may not Read topic {changelog}",
        ("signal-producer", "status"): "User:signal-producer may not Read topic",
        ("signal-producer", "tail", "dlq"): f"User:signal-producer may not Read topic {secured.topics.name('dlq')}",
        ("auditor", "tail", "controls", "--portfolio", "p1"): None,  # allowed: reads every topic
        ("operator", "audit"): "User:operator may not Read topic",
        ("execution-engine", "publish", "--journal", str(journal)):
            f"User:execution-engine may not Write topic {secured.topics.name('signals')}",
    }
    for (user, *args), refusal in cases.items():
        done = secured.sizer(user, *args)
        if refusal is None:
            assert done.returncode == 0, done.stderr
            continue
        assert (done.returncode, done.stdout) == (4, ""), (args, done.stdout, done.stderr)
        line = one_line(done)
        assert line.startswith("sizer: not authorized: ") and refusal in line, (args, line)


def test_each_principal_is_confined_to_what_the_acl_file_grants(secured):
    name = secured.topics.name

    async def write(user: str, role: str) -> bool:
        producer = AIOKafkaProducer(**secured.client(user).options(acks="all", request_timeout_ms=15_000))
        await producer.start()
        try:
            await producer.send_and_wait(name(role), b'{"probe": true}', key=b"probe", partition=0)
            return True
        except TopicAuthorizationFailedError:
            return False
        finally:
            await producer.stop()

    def can_write(user: str, role: str) -> bool:
        return asyncio.run(write(user, role))

    def can_read(user: str, role: str) -> bool:
        try:
            secured.read(user, role)
            return True
        except KafkaUnavailable as exc:
            assert name(role) in str(exc)
            return False

    assert can_write("signal-producer", "signals")  # the attempts can succeed
    assert not can_read("signal-producer", "orders")
    assert [role for role in ("orders", "decisions", "fills", "controls") if can_write("signal-producer", role)] == []
    assert can_read("auditor", "orders")
    assert [role for role in ROLES if can_write("auditor", role)] == []
    assert not can_write("sizer-worker", "signals")
    assert not can_write("execution-engine", "orders") and can_read("execution-engine", "orders")


def test_a_misspelled_sizing_variable_stops_the_worker_naming_the_right_one(secured):
    done = secured.sizer("sizer-worker", "worker", "--preset", "conviction", SIZING_PORTFOLIO_CAPP="1%")
    assert done.returncode == 2
    assert "SIZING_PORTFOLIO_CAPP" in done.stderr and "SIZING_PORTFOLIO_CAP" in done.stderr.replace(
        "SIZING_PORTFOLIO_CAPP", "")
    assert "Traceback" not in done.stderr
