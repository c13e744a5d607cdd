"""The ACL file: placeholders expanded against the topics and app id, bad entries named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.ops.acls import AclEntry, load_acls
from streams.errors import ConfigError
from streams.kafka.topics import load_topics
from streams.wire.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_file_expands_to_the_prefixed_topics_and_the_app_id():
    topics = load_topics(ROOT / "topics" / "topics.toml", "p-")
    principals = {p.key: p for p in load_acls(ROOT / "topics" / "acls.toml", topics, "app")}

    worker = set(principals["worker"].acls)
    assert AclEntry("User:sizer-worker", "TOPIC", "LITERAL", "p-signals", "Read") in worker
    assert AclEntry("User:sizer-worker", "TRANSACTIONAL_ID", "PREFIXED", "app-", "Write") in worker
    assert AclEntry("User:sizer-worker", "GROUP", "LITERAL", "app", "Read") in worker
    assert {e.name for e in worker if e.operation == "DescribeConfigs" and e.name.startswith("p-")} == {
        topics.name(role) for role in ROLES}
    assert not any(e.name == "p-signals" and e.operation == "Write" for e in worker)
    assert {(e.operation, e.name) for e in principals["signal-producers"].acls} == {("Write", "p-signals")}
    assert {e.operation for e in principals["auditors"].acls} == {"Read", "DescribeConfigs"}


def test_the_security_page_names_every_changelog_the_worker_is_granted():
    topics = load_topics(ROOT / "topics" / "topics.toml")
    principals = {p.key: p for p in load_acls(ROOT / "topics" / "acls.toml", topics, "app")}
    granted = {e.name.removeprefix("app-").removesuffix("-changelog") for e in principals["worker"].acls
               if e.name.endswith("-changelog")}

    row, = [line for line in (ROOT / "docs" / "pages" / "security.md").read_text().splitlines()
            if line.startswith("| worker |")]
    listed = re.search(r"`<app_id>-\{([^}]*)\}-changelog`", row).group(1).split(",")

    assert sorted(listed) == sorted(granted)


@pytest.mark.parametrize("entry, named", [
    ('"Reed topic:{signals}"', "unknown operation 'Reed'"),
    ('"Read tropic:{signals}"', "resource must be one of"),
    ('"Read topic:{signalz}"', "unknown placeholder"),
    ('"Read topic"', "needs a name"),
    ('"IdempotentWrite cluster:x"', "has no name"),
    ('"Read"', "OPERATIONS RESOURCE"),
])
def test_a_bad_entry_stops_with_the_principal_and_entry_named(tmp_path, entry, named):
    path = tmp_path / "acls.toml"
    path.write_text(f'[principals.worker]\nuser = "w"\nallow = [{entry}]\n')
    topics = load_topics(ROOT / "topics" / "topics.toml")
    with pytest.raises(ConfigError, match="principals.worker") as raised:
        load_acls(path, topics, "app")
    assert named in str(raised.value)


def test_an_acl_reads_as_its_principal_operation_and_resource():
    assert str(AclEntry("User:a", "TOPIC", "PREFIXED", "x-", "Write")) == "User:a Write topic-prefix:x-"
    assert str(AclEntry("User:a", "CLUSTER", "LITERAL", "kafka-cluster", "IdempotentWrite")) == \
        "User:a IdempotentWrite cluster"


def test_every_client_gets_the_one_configuration_and_no_secret_in_its_repr(tmp_path):
    from streams.worker.settings import WorkerSettings

    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    kafka = WorkerSettings(bootstrap="b:9093", security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="u", sasl_password_file=secret)
    client = kafka.for_role("audit")
    assert client.options(group_id=None) == {
        "bootstrap_servers": "b:9093", "client_id": "sizer-audit", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "u", "sasl_plain_password": "s3cret",
        "group_id": None}
    assert "s3cret" not in repr(client) and "s3cret" not in repr(kafka)


def _resources(app_id: str = "app"):
    from streams.ops.acls import product_resources

    topics = load_topics(ROOT / "topics" / "topics.toml", "p-")
    principals = load_acls(ROOT / "topics" / "acls.toml", topics, app_id)
    return principals, product_resources(principals, topics, app_id)


@pytest.mark.parametrize("extra", [
    AclEntry("User:*", "TOPIC", "LITERAL", "p-orders", "Read"),  # every principal may read the orders
    AclEntry("User:mallory", "TOPIC", "LITERAL", "p-signals", "Write"),  # a principal the file does not name
    AclEntry("User:mallory", "TOPIC", "LITERAL", "*", "Read"),  # every topic
    AclEntry("User:mallory", "TOPIC", "PREFIXED", "p-", "Write"),  # a prefix that covers the product's topics
    AclEntry("User:mallory", "TOPIC", "LITERAL", "app-exposure-changelog", "Read"),  # a table's changelog
    AclEntry("User:mallory", "GROUP", "LITERAL", "app", "Read"),  # the worker's group
    AclEntry("User:mallory", "TRANSACTIONAL_ID", "LITERAL", "app-app-signals-0", "Write"),  # a worker's producer
    AclEntry("User:mallory", "TRANSACTIONAL_ID", "PREFIXED", "ap", "Write"),
    AclEntry("User:auditor", "TOPIC", "LITERAL", "p-orders", "Write"),  # a named principal, beyond the file
    AclEntry("User:auditor", "TOPIC", "LITERAL", "elsewhere", "Write"),  # a named principal, anywhere
    # Alter on the cluster creates and deletes ACLs: whoever holds it can grant itself anything
    AclEntry("User:mallory", "CLUSTER", "LITERAL", "kafka-cluster", "Alter"),
    AclEntry("User:*", "CLUSTER", "LITERAL", "kafka-cluster", "All"),
    AclEntry("User:mallory", "CLUSTER", "LITERAL", "kafka-cluster", "AlterConfigs"),  # the brokers' settings
    AclEntry("User:mallory", "CLUSTER", "LITERAL", "kafka-cluster", "ClusterAction"),  # a broker's own requests
    # CreateTokens on a product principal: a delegation token that authenticates as the worker
    AclEntry("User:mallory", "USER", "LITERAL", "User:sizer-worker", "CreateTokens"),
    AclEntry("User:mallory", "USER", "LITERAL", "*", "CreateTokens"),
    AclEntry("User:mallory", "USER", "LITERAL", "User:operator", "All"),
])
def test_a_grant_the_file_does_not_make_is_named_whoever_holds_it(extra):
    from streams.ops.acls import unmade_grants

    principals, resources = _resources()
    held = {entry for principal in principals for entry in principal.acls} | {extra}

    assert unmade_grants(held, principals, resources) == [extra]


@pytest.mark.parametrize("other", [
    AclEntry("User:other-app", "TOPIC", "LITERAL", "other-signals", "Write"),  # another product's topic
    AclEntry("User:other-app", "GROUP", "LITERAL", "other-group", "Read"),
    AclEntry("User:other-app", "TRANSACTIONAL_ID", "PREFIXED", "other-", "Write"),
    AclEntry("User:mallory", "TOPIC", "LITERAL", "p-signals", "Write", permission="DENY"),  # a refusal, not a grant
    # what any client of a shared cluster may hold: nothing over the product
    AclEntry("User:other-app", "CLUSTER", "LITERAL", "kafka-cluster", "IdempotentWrite"),
    AclEntry("User:other-app", "CLUSTER", "LITERAL", "kafka-cluster", "Describe"),
    AclEntry("User:other-app", "CLUSTER", "LITERAL", "kafka-cluster", "DescribeConfigs"),
    AclEntry("User:other-app", "USER", "LITERAL", "User:other-app", "CreateTokens"),  # its own tokens
])
def test_grants_on_other_resources_and_denials_pass(other):
    from streams.ops.acls import unmade_grants

    principals, resources = _resources()
    held = {entry for principal in principals for entry in principal.acls} | {other}

    assert unmade_grants(held, principals, resources) == []
