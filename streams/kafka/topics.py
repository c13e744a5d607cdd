"""Topics as code: the one definition in `topics/topics.toml`, and applying it.

`apply` creates missing topics and checks existing ones; a topic that exists
with another partition count or configuration is an error, never silently used.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from streams.errors import ConfigError, KafkaUnavailable, TopicMismatch, TopicRecreated, read_toml
from streams.kafka.positions import stored_positions_beyond_end
from streams.text import counted
from streams.wire.roles import CO_PARTITIONED, COMPACTED, ROLES

if TYPE_CHECKING:
    from streams.kafka.settings import ClientConfig

TOPIC_AUTHORIZATION_FAILED = 29
UNKNOWN_TOPIC_OR_PARTITION = 3

CLEANUP = ("delete", "compact")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    replication: int
    cleanup_policy: str
    retention_ms: int

    @property
    def configs(self) -> dict[str, str]:
        """The broker configs this spec pins, as the broker reports them."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True, slots=True)
class TopicSet:
    specs: Mapping[str, TopicSpec]

    def __getitem__(self, role: str) -> TopicSpec:
        return self.specs[role]

    def __iter__(self):
        return iter(self.specs.values())

    def name(self, role: str) -> str:
        return self.specs[role].name


def load_topics(path: Path, prefix: str = "") -> TopicSet:
    """Read and validate the topic definitions; every name gets `prefix`."""
    data = read_toml(path, "topics file")
    defaults = data.get("defaults", {})
    entries = data.get("topics", {})
    missing = [role for role in ROLES if role not in entries]
    if missing:
        raise ConfigError(f"topics file {path}: missing topics.{', topics.'.join(missing)}")
    specs: dict[str, TopicSpec] = {}
    for role in ROLES:
        entry = {**defaults, **entries[role]}
        where = f"topics file {path}: topics.{role}"
        try:
            spec = TopicSpec(
                role=role, name=prefix + str(entry["name"]), partitions=int(entry["partitions"]),
                replication=int(entry.get("replication", 1)), cleanup_policy=str(entry["cleanup_policy"]),
                retention_ms=int(entry["retention_ms"]),
            )
        except KeyError as exc:
            raise ConfigError(f"{where}.{exc.args[0]}: required") from None
        if spec.partitions < 1 or spec.replication < 1:
            raise ConfigError(f"{where}: partitions and replication must be at least 1")
        if spec.cleanup_policy not in CLEANUP:
            raise ConfigError(f"{where}.cleanup_policy: must be one of {', '.join(CLEANUP)}")
        specs[role] = spec
    for role in COMPACTED:
        if specs[role].cleanup_policy != "compact":
            raise ConfigError(f"topics file {path}: topics.{role}.cleanup_policy: must be compact")
    # One portfolio's whole state lives on one partition: its signals, fills and
    # commands must arrive there, and its orders and decisions go to the same
    # partition number.
    width = specs["signals"].partitions
    for role in CO_PARTITIONED:
        if specs[role].partitions != width:
            raise ConfigError(
                f"topics file {path}: topics.{role}.partitions: must equal topics.signals.partitions "
                f"({width}) so that portfolios stay co-partitioned"
            )
    return TopicSet(specs)


def reset_advice(app_id: str) -> str:
    """How to start a worker group over on recreated input topics: forget its stored
    input positions (the group's offsets and its input-positions changelog); the
    portfolios' state (exposure, streak) is kept."""
    return (f"to process the new topic from its start, stop every worker of {app_id}, then delete the group's "
            f"offsets and positions (kafka-consumer-groups.sh --delete --group {app_id}; kafka-topics.sh --delete "
            f"--topic {app_id}-input-positions-changelog) and start the workers again")


def recreated(app_id: str, found: list[str]) -> TopicRecreated:
    """The one error, one line, for an input topic that is not the one the worker read."""
    return TopicRecreated(f"{'; '.join(found)}: the topic was deleted and recreated (or repartitioned) since "
                          f"worker group {app_id} read it, and its stored positions would skip or misplace new "
                          f"records; {reset_advice(app_id)}")


async def apply(client: ClientConfig, topics: TopicSet, create: bool = True, app_id: str | None = None) -> list[str]:
    """Create missing topics (when `create`) and verify every existing one; with
    `app_id`, also that the worker group's stored input positions belong to the
    input topics as they are now.

    Returns one line per topic saying what was done. Raises TopicMismatch naming
    every topic whose partition count or configuration differs from its spec, and
    TopicRecreated (one line: what happened, how to reset) for recreated inputs."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**client.options(request_timeout_ms=15_000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        report: list[str] = []
        to_create = [spec for spec in topics if spec.name not in existing]
        if to_create:
            # a topic we may not Describe is absent from the list: say so, not "missing"
            hidden = [entry["topic"] for entry in await admin.describe_topics([spec.name for spec in to_create])
                      if entry.get("error_code") == TOPIC_AUTHORIZATION_FAILED]
            if hidden and not create:
                raise not_authorized(hidden, "Describe", client.settings.principal)
        if to_create and create:
            await _create(admin, [NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=spec.configs)
                                  for spec in to_create])
            report += [f"created {spec.name} ({counted(spec.partitions, 'partition')}, {spec.cleanup_policy})"
                       for spec in to_create]
        elif to_create:
            raise TopicMismatch("missing topics: " + ", ".join(spec.name for spec in to_create)
                                + " (run `sizer topics apply`)")
        problems = await _differences(admin, topics, ConfigResource, ConfigResourceType)
        # A topic just created can be reported with no partitions until its metadata
        # has propagated; give those a moment, never a topic that was already there.
        created_names = {spec.name for spec in to_create}
        for _ in range(100):
            if not any(p.split(":")[0] in created_names and " 0 partitions on the broker" in p for p in problems):
                break
            await asyncio.sleep(0.1)
            problems = await _differences(admin, topics, ConfigResource, ConfigResourceType)
        if problems:
            raise TopicMismatch("topics differ from topics/topics.toml:\n  " + "\n  ".join(problems))
        if app_id is not None:
            found = await stored_positions_beyond_end(admin, client, topics, app_id)
            if found:
                raise recreated(app_id, found)
        created = {spec.name for spec in to_create}
        report += [f"ok {spec.name}" for spec in topics if spec.name not in created]
        return report
    finally:
        await admin.close()


async def _create(admin: Any, new_topics: list[Any]) -> None:
    """Create `new_topics` (aiokafka NewTopic). A topic created meanwhile by someone
    else is fine; a refusal raises KafkaUnavailable (ACLs) or TopicMismatch."""
    response = await admin.create_topics(new_topics)
    for name, code, message in (error[:3] for error in response.topic_errors):
        if code == TOPIC_AUTHORIZATION_FAILED:
            raise not_authorized([name], "Create")
        if code not in (0, 36):  # 36: created meanwhile by someone else
            raise TopicMismatch(f"{name}: could not be created: error {code} {message or ''}".strip())


async def declare_changelogs(client: ClientConfig, changelogs: Mapping[str, int], replication: int) -> list[str]:
    """Create the missing changelog topics of the worker's tables (name -> partitions;
    compacted, as faust makes them) and wait until the broker lists their partitions.
    Returns the names created.

    faust declares them itself when it starts, but its consumer may fetch the group's
    topics before a new one is visible: it then joins without that changelog and
    rebalances when its metadata next refreshes, five minutes later (seen in `make
    soak` on fresh topics: the worker stalled about 45 s in recovery, under load).

    An existing changelog with another partition count, or not compacted, raises
    TopicMismatch naming it: its writes would fail only later (a partition it lacks)
    or its records be deleted by retention (state lost)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**client.options(request_timeout_ms=15_000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(changelogs) - existing)
        present = sorted(set(changelogs) & existing)
        problems = []
        if present:
            described = {entry["topic"]: entry for entry in await admin.describe_topics(present)}
            configs = await _configs(admin, present, ConfigResource, ConfigResourceType)
            for name in present:
                policy = configs.get(name, {}).get("cleanup.policy", "")
                partitions = len(described.get(name, {}).get("partitions", []))
                if partitions != changelogs[name]:
                    problems.append(f"{name}: {counted(partitions, 'partition')} on the broker, the worker's tables "
                                    f"have {changelogs[name]} (the input topics' count)")
                if "compact" not in policy.split(","):
                    problems.append(f"{name}: cleanup.policy={policy} on the broker, a changelog must be compacted")
        if problems:
            raise TopicMismatch("changelog topics differ from what the worker's tables need:\n  "
                                + "\n  ".join(problems))
        if not missing:
            return []
        await _create(admin, [NewTopic(name, changelogs[name], replication,
                                       topic_configs={"cleanup.policy": "compact"}) for name in missing])
        for _ in range(100):
            described_new = await admin.describe_topics(missing)
            if all(len(entry.get("partitions", [])) == changelogs[entry["topic"]] for entry in described_new):
                break
            await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()


def not_authorized(names: list[str], operation: str, principal: str | None = None) -> KafkaUnavailable:
    """One line for a topic operation the broker's ACLs refuse us: who, which
    topics, which permission."""
    who = principal or "the principal"
    return KafkaUnavailable(f"not authorized: {who} may not {operation} topic {', '.join(names)} "
                            f"(it lacks that ACL: see topics/acls.toml)")


async def require_topics(client: "ClientConfig", names: list[str], operation: str) -> None:
    """Check, before a command reads or writes them, that the topics `names` exist and
    that this principal may see them. `operation` is what the command will do (Read,
    Write), named in the refusal. Raises TopicMismatch (exit 3) naming every missing
    topic, KafkaUnavailable (exit 4) naming the principal, the topics it may not
    see and the permission."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka.io import start_or_close

    admin = AIOKafkaAdminClient(**client.options(request_timeout_ms=15_000))
    await start_or_close(admin)
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    codes = {entry["topic"]: entry.get("error_code", 0) for entry in described}
    # the broker answers "not authorized" for a topic this principal may not Describe,
    # whether or not it exists: it does not tell strangers which topics there are
    hidden = [name for name in names if codes.get(name) == TOPIC_AUTHORIZATION_FAILED]
    if hidden:
        raise not_authorized(hidden, operation, client.settings.principal)
    missing = [name for name in names if codes.get(name) == UNKNOWN_TOPIC_OR_PARTITION or name not in codes]
    if missing:
        raise TopicMismatch(f"missing {'topic' if len(missing) == 1 else 'topics'}: {', '.join(missing)}")


async def _configs(admin, names: list[str], ConfigResource, ConfigResourceType) -> dict[str, dict[str, str]]:
    """Each topic's broker configs (name -> key -> value). A topic we may not
    DescribeConfigs raises KafkaUnavailable naming it."""
    configs: dict[str, dict[str, str]] = {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            error_code, _, _, name, entries = resource[:5]
            if error_code == TOPIC_AUTHORIZATION_FAILED:
                raise not_authorized([name], "DescribeConfigs")
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


async def _differences(admin, topics: TopicSet, ConfigResource, ConfigResourceType) -> list[str]:
    names = [spec.name for spec in topics]
    described = {entry["topic"]: entry for entry in await admin.describe_topics(names)}
    configs = await _configs(admin, names, ConfigResource, ConfigResourceType)
    problems = []
    for spec in topics:
        partitions = len(described.get(spec.name, {}).get("partitions", []))
        if partitions != spec.partitions:
            problems.append(f"{spec.name}: {counted(partitions, 'partition')} on the broker, "
                            f"{spec.partitions} in the spec")
        for key, wanted in spec.configs.items():
            actual = configs.get(spec.name, {}).get(key)
            if actual != wanted:
                problems.append(f"{spec.name}: {key}={actual} on the broker, {wanted} in the spec")
    return problems
