"""Topics as code: the one definition in `topics/topics.toml`, and applying it.

`apply` creates missing topics and checks existing ones; a topic that exists
with another partition count, replication factor or configuration is an error,
never silently used. How many copies every topic and changelog gets is a
deployment's setting (`Replication`: SIZER_REPLICATION_FACTOR,
SIZER_MIN_INSYNC_REPLICAS), not the topics file's.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping

from streams.errors import ConfigError, KafkaUnavailable, TopicMismatch, TopicRecreated, read_toml
from streams.kafka.positions import stored_positions_beyond_end
from streams.text import counted
from streams.wire.roles import CO_PARTITIONED, COMPACTED, ROLES, TIMED

if TYPE_CHECKING:
    from streams.kafka.settings import ClientConfig

TOPIC_AUTHORIZATION_FAILED = 29
UNKNOWN_TOPIC_OR_PARTITION = 3

CLEANUP = ("delete", "compact")
# The input topics whose record timestamps the FUTURE_TIMESTAMP rule trusts (the
# timed roles) are bounded: the broker refuses a record stamped further ahead of its
# own clock than the bound.
TIMESTAMP_BOUND = "message.timestamp.after.max.ms"

# the topic configs a spec sets from its own fields or from `Replication`: never in a topic's `configs` table
OWN_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas", TIMESTAMP_BOUND)


@dataclass(frozen=True, slots=True)
class Replication:
    """How many copies of each partition every topic and changelog the product
    creates gets (`factor`, SIZER_REPLICATION_FACTOR), and how many of them must
    have a write before it is acknowledged (`min_insync`, the topics'
    `min.insync.replicas`, SIZER_MIN_INSYNC_REPLICAS; the product's producers use
    acks=all). A single local broker: 1 and 1; production: 3 and 2, so one broker
    may be lost without losing an acknowledged write or stopping writes.
    Raises ValueError (naming the setting) for a count below 1 or a min ISR above
    the factor, which would refuse every write."""

    factor: int = 1
    min_insync: int = 1

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"replication_factor: at least 1, not {self.factor}")
        if not 1 <= self.min_insync <= self.factor:
            raise ValueError(f"min_insync_replicas: between 1 and replication_factor ({self.factor}), "
                             f"not {self.min_insync}")

    @property
    def configs(self) -> dict[str, str]:
        """The topic configs this sets, on every topic and changelog."""
        return {"min.insync.replicas": str(self.min_insync)}


LOCAL_REPLICATION = Replication(1, 1)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    replication: int
    cleanup_policy: str
    retention_ms: int
    min_insync_replicas: int = 1
    # how far ahead of the broker's clock a record timestamp may be (Kafka 3.6+,
    # `message.timestamp.after.max.ms`); None: not pinned by this spec
    timestamp_after_max_ms: int | None = None
    # any further topic configs of the topics file (`configs` tables), as the broker reports them
    extra_configs: tuple[tuple[str, str], ...] = ()

    @property
    def configs(self) -> dict[str, str]:
        """Every broker config this spec pins, as the broker reports them (strings)."""
        pinned = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms),
                  "min.insync.replicas": str(self.min_insync_replicas), **dict(self.extra_configs)}
        if self.timestamp_after_max_ms is not None:
            pinned[TIMESTAMP_BOUND] = str(self.timestamp_after_max_ms)
        return pinned


@dataclass(frozen=True, slots=True)
class TopicSet:
    specs: Mapping[str, TopicSpec]

    def __getitem__(self, role: str) -> TopicSpec:
        return self.specs[role]

    def __iter__(self):
        return iter(self.specs.values())

    def name(self, role: str) -> str:
        return self.specs[role].name


def _config_value(value: Any) -> str:
    """A topic config as the broker reports it: booleans lower-case, numbers as digits."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _extra_configs(where: str, defaults: Mapping[str, Any], own: Any) -> tuple[tuple[str, str], ...]:
    """The `configs` tables of [defaults] and of one topic, merged (the topic's win)."""
    if not isinstance(own, Mapping):
        raise ConfigError(f"{where}.configs: a table of broker topic configs (name = value)")
    merged = {**defaults, **own}
    for key, value in merged.items():
        if key in OWN_CONFIGS:
            raise ConfigError(f"{where}.configs.{key}: set by the spec's own field or setting, not here")
        if isinstance(value, (Mapping, list)):
            raise ConfigError(f"{where}.configs.{key}: a string, number or boolean")
    return tuple(sorted((key, _config_value(value)) for key, value in merged.items()))


def load_topics(path: Path, prefix: str = "", max_future_skew_ms: int | None = None,
                replication: Replication = LOCAL_REPLICATION) -> TopicSet:
    """Read and validate the topic definitions; every name gets `prefix`, every
    topic `replication` (the deployment's settings, `ConnectionSettings.replication`).

    `max_future_skew_ms`: the sizing configuration's `max_future_skew_s` in ms,
    pinned as the input topics' `message.timestamp.after.max.ms` (DESIGN.md,
    "Production Kafka": a producer cannot forge the record timestamp the
    FUTURE_TIMESTAMP rule trusts); None for commands that run without a sizing
    configuration, which then neither set nor check it.
    Raises ConfigError naming the entry and the rule."""
    data = read_toml(path, "topics file")
    defaults = dict(data.get("defaults", {}))
    default_configs = defaults.pop("configs", {})
    entries = data.get("topics", {})
    missing = [role for role in ROLES if role not in entries]
    if missing:
        raise ConfigError(f"topics file {path}: missing topics.{', topics.'.join(missing)}")
    if not isinstance(default_configs, Mapping):
        raise ConfigError(f"topics file {path}: defaults.configs: a table of broker topic configs (name = value)")
    specs: dict[str, TopicSpec] = {}
    for role in ROLES:
        entry = {**defaults, **entries[role]}
        where = f"topics file {path}: topics.{role}"
        if "replication" in entry:
            raise ConfigError(f"{where}.replication: set by SIZER_REPLICATION_FACTOR (and min.insync.replicas by "
                              f"SIZER_MIN_INSYNC_REPLICAS) for every topic, not in the topics file")
        try:
            spec = TopicSpec(
                role=role, name=prefix + str(entry["name"]), partitions=int(entry["partitions"]),
                replication=replication.factor, cleanup_policy=str(entry["cleanup_policy"]),
                retention_ms=int(entry["retention_ms"]), min_insync_replicas=replication.min_insync,
                timestamp_after_max_ms=max_future_skew_ms if role in TIMED else None,
                extra_configs=_extra_configs(where, default_configs, entry.get("configs", {})),
            )
        except KeyError as exc:
            raise ConfigError(f"{where}.{exc.args[0]}: required") from None
        if spec.partitions < 1:
            raise ConfigError(f"{where}.partitions: must be at least 1")
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


@contextlib.asynccontextmanager
async def admin_client(client: ClientConfig, admin: Any = None) -> AsyncIterator[Any]:
    """An aiokafka admin client: `admin` itself when given (its owner closes it), else
    a new one, closed on the way out. Checks that run together share one (the
    worker's start-up): each client started is a bootstrap and a metadata round trip."""
    if admin is not None:
        yield admin
        return
    from aiokafka.admin import AIOKafkaAdminClient

    own = AIOKafkaAdminClient(**client.options(request_timeout_ms=15_000))
    await own.start()
    try:
        yield own
    finally:
        await own.close()


async def apply(client: ClientConfig, topics: TopicSet, create: bool = True, app_id: str | None = None,
                changelogs: Mapping[str, int] | None = None, admin: Any = None) -> list[str]:
    """Create missing topics (when `create`) and verify every existing one; with
    `app_id`, also that the worker group's stored input positions belong to the
    input topics as they are now; with `changelogs` (name -> partitions), that those
    of them that exist are what the workers' tables need (`declare_changelogs`; the
    workers create the missing ones). `admin`: an admin client to use (`admin_client`).

    Returns one line per topic saying what was done. Raises TopicMismatch naming
    every difference of every topic from its spec (partition count, replication
    factor, min.insync.replicas, any other config), or, before creating anything,
    a replication factor above the cluster's broker count; TopicRecreated (one
    line: what happened, how to reset) for recreated inputs."""
    async with admin_client(client, admin) as admin:
        return await _apply(admin, client, topics, create, app_id, changelogs or {})


async def _apply(admin: Any, client: ClientConfig, topics: TopicSet, create: bool, app_id: str | None,
                 changelogs: Mapping[str, int]) -> list[str]:
    from aiokafka.admin import NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

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
        await _enough_brokers(admin, max(spec.replication for spec in to_create))
        await _create(admin, [NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=spec.configs)
                              for spec in to_create])
        report += [f"created {spec.name} ({counted(spec.partitions, 'partition')}, {spec.cleanup_policy})"
                   for spec in to_create]
    elif to_create:
        raise TopicMismatch("missing topics: " + ", ".join(spec.name for spec in to_create)
                            + " (run `sizer topics apply`)")
    if create:
        report += await _bound_timestamps(client, admin, topics, ConfigResource, ConfigResourceType,
                                          {spec.name for spec in to_create})
    problems = await _settled_differences(admin, topics, {spec.name for spec in to_create})
    problems += await _existing_changelog_differences(admin, topics, existing, changelogs)
    if problems:
        raise TopicMismatch("topics differ from topics/topics.toml:\n  " + "\n  ".join(problems))
    if app_id is not None:
        found = await stored_positions_beyond_end(admin, client, topics, app_id)
        if found:
            raise recreated(app_id, found)
    created = {spec.name for spec in to_create}
    report += [f"ok {spec.name}" for spec in topics if spec.name not in created]
    return report


async def _settled_differences(admin: Any, topics: TopicSet, created_names: set[str]) -> list[str]:
    """`_differences`, once the topics just created (`created_names`) have settled: one
    can be reported with no partitions, or with no configs (None: the broker asked has
    not got its metadata yet, seen on a cluster), until its metadata has propagated;
    give those a moment, never a topic that was already there."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    problems = await _differences(admin, topics, ConfigResource, ConfigResourceType)
    for _ in range(100):
        if not any(p.split(":")[0] in created_names for p in problems):
            break
        await asyncio.sleep(0.1)
        problems = await _differences(admin, topics, ConfigResource, ConfigResourceType)
    return problems


async def _existing_changelog_differences(admin: Any, topics: TopicSet, existing: set[str],
                                          changelogs: Mapping[str, int]) -> list[str]:
    """What differs in those of `changelogs` that exist from what the workers' tables
    need, at the topics' replication; none for the ones not made yet."""
    present = sorted(set(changelogs) & existing)
    if not present:
        return []
    replication = Replication(topics["signals"].replication, topics["signals"].min_insync_replicas)
    return await _changelog_differences(admin, present, await _described(admin, present), changelogs, replication)


async def _enough_brokers(admin: Any, factor: int) -> None:
    """TopicMismatch, one line, when the cluster has fewer brokers than `factor`:
    Kafka would refuse every topic (INVALID_REPLICATION_FACTOR)."""
    brokers = len((await admin.describe_cluster()).get("brokers") or ())
    if brokers < factor:
        raise TopicMismatch(f"replication factor {factor} (SIZER_REPLICATION_FACTOR) needs at least {factor} "
                            f"brokers; the cluster at the bootstrap address has {brokers}: nothing was created")


async def unbounded_inputs(client: ClientConfig, topics: TopicSet, max_future_skew_ms: int,
                           admin: Any = None) -> list[str]:
    """The input topics whose broker does not refuse record timestamps more than
    `max_future_skew_ms` ahead of its clock (`unbounded`), one line each; empty when
    all are bounded. `admin`: an admin client to use (`admin_client`)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    names = [topics.name(role) for role in TIMED]
    async with admin_client(client, admin) as admin:
        configs = await _configs(admin, names, ConfigResource, ConfigResourceType)
    return [line for name in names if (line := unbounded(name, configs.get(name, {}), max_future_skew_ms))]


def unbounded(name: str, configs: Mapping[str, str], max_future_skew_ms: int) -> str | None:
    """One line when topic `name`, by its broker `configs`, takes record timestamps more
    than `max_future_skew_ms` ahead of the broker's clock; None when it does not: its
    `message.timestamp.after.max.ms` is at most that, or the broker stamps every record
    itself (`message.timestamp.type=LogAppendTime`: no producer's clock at all)."""
    if configs.get("message.timestamp.type") == "LogAppendTime":
        return None
    bound = configs.get(TIMESTAMP_BOUND)
    if bound is None or not bound.lstrip("-").isdigit() or int(bound) > max_future_skew_ms:
        return f"{name}: {TIMESTAMP_BOUND}={bound}"
    return None


@dataclass(frozen=True, slots=True)
class TimestampBounds:
    """How far from its own clock a topic's broker takes a record timestamp: at most
    `after_ms` ahead (`message.timestamp.after.max.ms`) and `before_ms` behind
    (`message.timestamp.before.max.ms`); None is no limit (Kafka's largest long).
    `log_append`: the broker stamps every record itself (LogAppendTime) and refuses none.
    `retention_ms`: a topic that deletes by time (`cleanup.policy` delete) takes a record
    stamped further back than `retention.ms` and deletes it at its next retention check
    (every 5 minutes by default: the segment's newest timestamp decides); None: never."""

    after_ms: int | None
    before_ms: int | None
    log_append: bool = False
    retention_ms: int | None = None

    @classmethod
    def of(cls, configs: Mapping[str, str]) -> "TimestampBounds":
        """From a topic's broker configs (what DescribeConfigs answers: its own value,
        else the broker's default, which differs between releases)."""
        def limit(key: str) -> int | None:
            value = configs.get(key, "")
            return int(value) if value.isdigit() and int(value) < 2**63 - 1 else None

        deletes = "delete" in configs.get("cleanup.policy", "delete").split(",")
        return cls(limit(TIMESTAMP_BOUND), limit("message.timestamp.before.max.ms"),
                   configs.get("message.timestamp.type") == "LogAppendTime",
                   limit("retention.ms") if deletes else None)


async def timestamp_bounds(client: ClientConfig, names: list[str]) -> dict[str, TimestampBounds]:
    """Each topic's `TimestampBounds`, as its broker reports them; empty when this
    principal may not DescribeConfigs (a producer's ACLs: the broker still refuses
    what is out of bounds, when the record is sent). A missing topic has none."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streams.kafka.io import start_or_close

    admin = AIOKafkaAdminClient(**client.options(request_timeout_ms=15_000))
    await start_or_close(admin)
    try:
        configs = await _configs(admin, names, ConfigResource, ConfigResourceType)
    except KafkaUnavailable:
        return {}
    finally:
        await admin.close()
    return {name: TimestampBounds.of(found) for name, found in configs.items() if found}


async def _bound_timestamps(client: ClientConfig, admin: Any, topics: TopicSet, ConfigResource, ConfigResourceType,
                            created: set[str]) -> list[str]:
    """Set `message.timestamp.after.max.ms` on the existing input topics that lack the
    spec's value (created before the bound existed, or before `max_future_skew_s`
    changed), by IncrementalAlterConfigs: no other setting of the topic changes.
    Returns one line per topic changed. A broker that refuses raises
    KafkaUnavailable (one line)."""
    bounded = [spec for spec in topics if spec.timestamp_after_max_ms is not None and spec.name not in created]
    if not bounded:
        return []
    configs = await _configs(admin, [spec.name for spec in bounded], ConfigResource, ConfigResourceType)
    stale = [spec for spec in bounded if configs.get(spec.name, {}).get(TIMESTAMP_BOUND) != spec.configs[TIMESTAMP_BOUND]]
    if not stale:
        return []
    await asyncio.to_thread(_alter_bound, client, stale)
    return [f"bounded {spec.name}: {TIMESTAMP_BOUND}={spec.timestamp_after_max_ms} (was "
            f"{configs.get(spec.name, {}).get(TIMESTAMP_BOUND)})" for spec in stale]


def _alter_bound(client: ClientConfig, specs: list[TopicSpec]) -> None:
    # aiokafka's admin client has no IncrementalAlterConfigs (its AlterConfigs resets
    # every setting it is not given); kafka-python's has, as `acls` uses it
    from kafka import errors
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    try:
        admin = KafkaAdminClient(**client.options(request_timeout_ms=30_000))
    except errors.KafkaError as exc:
        raise KafkaUnavailable(f"cannot reach {client.bootstrap} to bound record timestamps: {exc}") from exc
    try:
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name,
                            configs={TIMESTAMP_BOUND: str(spec.timestamp_after_max_ms)}) for spec in specs],
            raise_on_unknown=False, incremental=True)
    except errors.KafkaError as exc:
        raise KafkaUnavailable(f"the broker refused {TIMESTAMP_BOUND} on "
                               f"{', '.join(spec.name for spec in specs)}: {exc}") from exc
    finally:
        admin.close()
    # kafka-python answers {resource type: {name: "OK" or the error, as text}}
    refused = [f"{name}: {outcome}" for by_name in result.values() for name, outcome in by_name.items()
               if outcome != "OK"]
    if refused:
        raise KafkaUnavailable(f"the broker refused {TIMESTAMP_BOUND}: {'; '.join(refused)}")


async def _create(admin: Any, new_topics: list[Any]) -> None:
    """Create `new_topics` (aiokafka NewTopic). A topic created meanwhile by someone
    else is fine; a refusal raises KafkaUnavailable (ACLs) or TopicMismatch."""
    response = await admin.create_topics(new_topics)
    for name, code, message in (error[:3] for error in response.topic_errors):
        if code == TOPIC_AUTHORIZATION_FAILED:
            raise not_authorized([name], "Create")
        if code not in (0, 36):  # 36: created meanwhile by someone else
            raise TopicMismatch(f"{name}: could not be created: error {code} {message or ''}".strip())


async def declare_changelogs(client: ClientConfig, changelogs: Mapping[str, int],
                             replication: Replication, admin: Any = None) -> list[str]:
    """Create the missing changelog topics of the worker's tables (name -> partitions;
    compacted, as faust makes them, with `replication`'s factor and min.insync.replicas)
    and wait until the broker lists their partitions. Returns the names created.

    faust declares them itself when it starts, but its consumer may fetch the group's
    topics before a new one is visible: it then joins without that changelog and
    rebalances when its metadata next refreshes, five minutes later (seen in `make
    soak` on fresh topics: the worker stalled about 45 s in recovery, under load).

    An existing changelog with another partition count, not compacted, or with
    another replication factor or min.insync.replicas raises TopicMismatch naming
    each difference: its writes would fail only later (a partition it lacks), its
    records be deleted by retention, or a lost broker lose the state (portfolios'
    exposure) that the input topics' replication was meant to keep. `admin`: an
    admin client to use (`admin_client`)."""
    from aiokafka.admin import NewTopic

    async with admin_client(client, admin) as admin:
        existing = set(await admin.list_topics())
        missing = sorted(set(changelogs) - existing)
        if missing:
            await _enough_brokers(admin, replication.factor)
            await _create(admin, [NewTopic(name, changelogs[name], replication.factor,
                                           topic_configs={"cleanup.policy": "compact", **replication.configs})
                                  for name in missing])
        # Listed is not described: a changelog another worker has just created is listed
        # by the controller before the broker asked has its partitions and configs (a
        # cluster; seen with two workers started together on a fresh install as "0
        # partitions on the broker", and the second worker exiting). Wait until each lists
        # its partitions, and look again for a while before calling a difference one.
        names = sorted(changelogs)
        present = [name for name in names if name not in missing]
        deadline = asyncio.get_running_loop().time() + 10.0
        while True:
            described = await _described(admin, names)
            problems = await _changelog_differences(admin, present, described, changelogs, replication)
            if not problems or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        if problems:
            raise TopicMismatch("changelog topics differ from what the worker's tables need:\n  "
                                + "\n  ".join(problems))
        return missing


async def _changelog_differences(admin: Any, present: list[str], described: Mapping[str, Any],
                                 changelogs: Mapping[str, int], replication: Replication) -> list[str]:
    """What differs between the changelogs in `present` and what the worker's tables need."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    problems: list[str] = []
    configs = await _configs(admin, present, ConfigResource, ConfigResourceType) if present else {}
    for name in present:
        policy = configs.get(name, {}).get("cleanup.policy") or ""
        partitions = len(described.get(name, {}).get("partitions") or ())
        if partitions != changelogs[name]:
            problems.append(f"{name}: {counted(partitions, 'partition')} on the broker, the worker's tables "
                            f"have {changelogs[name]} (the input topics' count)")
        if "compact" not in policy.split(","):
            problems.append(f"{name}: cleanup.policy={policy or None} on the broker, a changelog must be compacted")
        problems += _replication_differences(name, described.get(name, {}), configs.get(name, {}),
                                             replication.factor, replication.configs)
    return problems


async def _described(admin: Any, names: list[str], timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """`describe_topics` of existing topics (name -> entry), once every one lists its
    partitions or after `timeout_s`: a topic's metadata reaches each broker of a
    cluster some time after it is created."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = {entry["topic"]: entry for entry in await admin.describe_topics(names)}
        if all(described.get(name, {}).get("partitions") for name in names):
            return described
        if asyncio.get_running_loop().time() > deadline:
            return described
        await asyncio.sleep(0.1)


def not_authorized(names: list[str], operation: str, principal: str | None = None) -> KafkaUnavailable:
    """One line for a topic operation the broker's ACLs refuse us: who, which
    topics, which permission."""
    who = principal or "the principal"
    return KafkaUnavailable(f"not authorized: {who} may not {operation} topic {', '.join(names)} "
                            f"(it lacks that ACL: see topics/acls.toml)")


async def refused_topics(client: "ClientConfig", names: list[str]) -> list[str]:
    """Those of topics `names` this principal may not Describe, as the broker answers
    for them by name (it answers so whether or not they exist)."""
    return [name for name, code in (await _error_codes(client, names)).items() if code == TOPIC_AUTHORIZATION_FAILED]


async def _error_codes(client: "ClientConfig", names: list[str]) -> dict[str, int]:
    """{topic: the error code of its metadata} for topics `names`, asked by name."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka.io import start_or_close

    admin = AIOKafkaAdminClient(**client.options(request_timeout_ms=15_000))
    await start_or_close(admin)
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return {entry["topic"]: entry.get("error_code", 0) for entry in described}


async def require_topics(client: "ClientConfig", names: list[str], operation: str) -> None:
    """Check, before a command reads or writes them, that the topics `names` exist and
    that this principal may see them. `operation` is what the command will do (Read,
    Write), named in the refusal. Raises TopicMismatch (exit 3) naming every missing
    topic, KafkaUnavailable (exit 4) naming the principal, the topics it may not
    see and the permission."""
    codes = await _error_codes(client, names)
    # the broker answers "not authorized" for a topic this principal may not Describe,
    # whether or not it exists: it does not tell strangers which topics there are
    hidden = [name for name in names if codes.get(name) == TOPIC_AUTHORIZATION_FAILED]
    if hidden:
        raise not_authorized(hidden, operation, client.settings.principal)
    missing = [name for name in names if codes.get(name) == UNKNOWN_TOPIC_OR_PARTITION or name not in codes]
    if missing:
        raise TopicMismatch(f"missing {'topic' if len(missing) == 1 else 'topics'}: {', '.join(missing)}")


async def _configs(admin, names: list[str], ConfigResource, ConfigResourceType,
                   kind: Any = None) -> dict[str, dict[str, str]]:
    """Each topic's (or, with `kind` BROKER, each broker id's) configs (name -> key ->
    value). A topic we may not DescribeConfigs raises KafkaUnavailable naming it."""
    configs: dict[str, dict[str, str]] = {}
    resources = [ConfigResource(kind or ConfigResourceType.TOPIC, name) for name in names]
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            error_code, _, _, name, entries = resource[:5]
            if error_code == TOPIC_AUTHORIZATION_FAILED:
                raise not_authorized([name], "DescribeConfigs")
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


# where a difference in these comes from, named beside it
SETTING_OF = {"replication factor": "SIZER_REPLICATION_FACTOR", "min.insync.replicas": "SIZER_MIN_INSYNC_REPLICAS"}


def _replication_differences(name: str, described: Mapping[str, Any], configs: Mapping[str, str],
                             factor: int, wanted: Mapping[str, str]) -> list[str]:
    """One line per difference of topic `name` (its metadata `described`, its broker
    `configs`) from `factor` replicas per partition and the configs `wanted`."""
    problems = []
    factors = sorted({len(partition.get("replicas") or ()) for partition in described.get("partitions") or ()})
    if factors and factors != [factor]:
        problems.append(f"{name}: replication factor {'/'.join(map(str, factors))} on the broker, {factor} in the "
                        f"spec ({SETTING_OF['replication factor']})")
    for key, value in wanted.items():
        actual = configs.get(key)
        if actual != value:
            setting = f" ({SETTING_OF[key]})" if key in SETTING_OF else ""
            problems.append(f"{name}: {key}={actual} on the broker, {value} in the spec{setting}")
    return problems


async def _differences(admin, topics: TopicSet, ConfigResource, ConfigResourceType) -> list[str]:
    """Every difference of every topic from its spec, one line each: partitions,
    replication factor, each config the spec pins."""
    names = [spec.name for spec in topics]
    described = {entry["topic"]: entry for entry in await admin.describe_topics(names)}
    configs = await _configs(admin, names, ConfigResource, ConfigResourceType)
    problems = []
    for spec in topics:
        partitions = len(described.get(spec.name, {}).get("partitions", []))
        if partitions != spec.partitions:
            problems.append(f"{spec.name}: {counted(partitions, 'partition')} on the broker, "
                            f"{spec.partitions} in the spec")
        problems += _replication_differences(spec.name, described.get(spec.name, {}), configs.get(spec.name, {}),
                                             spec.replication, spec.configs)
    return problems


# Kafka's own topics that exactly-once writes through, with the broker settings that
# make them: (replication factor setting, min ISR setting)
INTERNAL_TOPICS = {
    "__transaction_state": ("transaction.state.log.replication.factor", "transaction.state.log.min.isr"),
    "__consumer_offsets": ("offsets.topic.replication.factor", "min.insync.replicas"),
}


async def internal_replication(client: ClientConfig, admin: Any = None) -> dict[str, tuple[int, int]]:
    """(replication factor, min.insync.replicas) of Kafka's transaction log and
    offsets topic (`INTERNAL_TOPICS`): read from the topic where it exists, else
    from the broker settings it will be created with. What this client may not
    describe (ACLs, an old broker) is left out. `admin`: an admin client to use
    (`admin_client`)."""
    async with admin_client(client, admin) as admin:
        return await _internal_replication(admin)


async def _internal_replication(admin: Any) -> dict[str, tuple[int, int]]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    found: dict[str, tuple[int, int]] = {}
    try:
        existing = set(await admin.list_topics())
        present = [name for name in INTERNAL_TOPICS if name in existing]
        if present:
            described = {entry["topic"]: entry for entry in await admin.describe_topics(present)}
            configs = await _configs(admin, present, ConfigResource, ConfigResourceType)
            for name in present:
                factors = [len(p.get("replicas") or ()) for p in described.get(name, {}).get("partitions") or ()]
                isr = configs.get(name, {}).get("min.insync.replicas")
                if factors and isr is not None and isr.isdigit():
                    found[name] = (min(factors), int(isr))
        absent = [name for name in INTERNAL_TOPICS if name not in found]
        brokers = (await admin.describe_cluster()).get("brokers") or () if absent else ()
        if brokers:
            node = str(brokers[0]["node_id"])
            broker = (await _configs(admin, [node], ConfigResource, ConfigResourceType,
                                     ConfigResourceType.BROKER)).get(node, {})
            for name in absent:
                factor, isr = (broker.get(key) for key in INTERNAL_TOPICS[name])
                if factor and isr and factor.isdigit() and isr.isdigit():
                    found[name] = (int(factor), int(isr))
    except Exception:  # noqa: BLE001 - not ours to describe (ACLs, an old broker): left out
        pass
    return found


def internal_replication_warnings(found: Mapping[str, tuple[int, int]], replication: Replication) -> list[str]:
    """One line per Kafka internal topic of `found` (`internal_replication`)
    replicated less than the product's own topics (`replication`), naming the
    broker setting: a lost broker would lose the transactions or the committed
    positions the product's exactly-once rests on, whatever its own topics'
    replication."""
    warnings = []
    for name, (factor, isr) in found.items():
        factor_setting, isr_setting = INTERNAL_TOPICS[name]
        if factor < replication.factor:
            warnings.append(f"{name} has replication factor {factor} (broker setting {factor_setting}), below the "
                            f"product's topics ({replication.factor}, SIZER_REPLICATION_FACTOR): one lost broker can "
                            f"lose what exactly-once rests on")
        if isr < replication.min_insync:
            warnings.append(f"{name} has min.insync.replicas {isr} (broker setting {isr_setting}), below the "
                            f"product's topics ({replication.min_insync}, SIZER_MIN_INSYNC_REPLICAS): a write there "
                            f"can be acknowledged by fewer brokers than the product's own")
    return warnings


async def topic_ids(client: ClientConfig, names: list[str]) -> dict[str, str]:
    """Each existing topic's Kafka topic id (KIP-516), as text: what tells a topic
    from another of the same name, deleted and recreated. Topics without one (absent,
    or a broker before 2.8) are left out; nothing when they cannot be read (a
    checkpoint is then checked by its offsets alone, as before topic ids)."""
    return await asyncio.to_thread(_topic_ids, client, names)


def _topic_ids(client: ClientConfig, names: list[str]) -> dict[str, str]:
    # aiokafka's metadata requests stop before topic ids (v10); kafka-python's have them
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(**{**client.settings.kafka_python_client(client.role), "request_timeout_ms": 15_000})
        try:
            return ids_of(admin.describe_topics(names))
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - not ours to describe, or unreachable: checked by offsets alone
        return {}


NO_TOPIC_ID = "00000000-0000-0000-0000-000000000000"


def ids_of(described: list[Mapping[str, Any]]) -> dict[str, str]:
    """{topic name: topic id} of a metadata answer's topics (kafka-python's
    `describe_topics`), leaving out errors and the all-zero id of a broker without ids."""
    found = {}
    for entry in described:
        name, ident = entry.get("name", entry.get("topic")), entry.get("topic_id")
        if entry.get("error_code", 0) == 0 and name and ident is not None and str(ident) != NO_TOPIC_ID:
            found[str(name)] = str(ident)
    return found
