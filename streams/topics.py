"""Topics as code: the one definition in `topics/topics.toml`, and applying it.

`apply` creates missing topics and checks existing ones; a topic that exists
with another partition count or configuration is an error, never silently used.
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from streams.errors import ConfigError, TopicMismatch

ROLES = ("signals", "fills", "instruments", "orders", "decisions", "dlq", "config")
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
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"topics file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"topics file {path} is not valid TOML: {exc}") from exc
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
    for role in ("instruments", "config"):
        if specs[role].cleanup_policy != "compact":
            raise ConfigError(f"topics file {path}: topics.{role}.cleanup_policy: must be compact")
    # One portfolio's whole state lives on one partition: its signals and fills must
    # arrive there, and its orders and decisions go to the same partition number.
    width = specs["signals"].partitions
    for role in ("fills", "orders", "decisions"):
        if specs[role].partitions != width:
            raise ConfigError(
                f"topics file {path}: topics.{role}.partitions: must equal topics.signals.partitions "
                f"({width}) so that portfolios stay co-partitioned"
            )
    return TopicSet(specs)


async def apply(bootstrap: str, topics: TopicSet, create: bool = True) -> list[str]:
    """Create missing topics (when `create`) and verify every existing one.

    Returns one line per topic saying what was done. Raises TopicMismatch naming
    every topic whose partition count or configuration differs from its spec."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        report: list[str] = []
        to_create = [spec for spec in topics if spec.name not in existing]
        if to_create and create:
            response = await admin.create_topics([
                NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=spec.configs)
                for spec in to_create
            ])
            for name, code, message in (error[:3] for error in response.topic_errors):
                if code not in (0, 36):  # 36: created meanwhile by someone else; verified below
                    raise TopicMismatch(f"{name}: could not be created: error {code} {message or ''}".strip())
            report += [f"created {spec.name} ({spec.partitions} partitions, {spec.cleanup_policy})" for spec in to_create]
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
        created = {spec.name for spec in to_create}
        report += [f"ok {spec.name}" for spec in topics if spec.name not in created]
        return report
    finally:
        await admin.close()


async def _differences(admin, topics: TopicSet, ConfigResource, ConfigResourceType) -> list[str]:
    names = [spec.name for spec in topics]
    described = {entry["topic"]: entry for entry in await admin.describe_topics(names)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            error_code, _, _, name, entries = resource[:5]
            configs[name] = {entry[0]: entry[1] for entry in entries}
    problems = []
    for spec in topics:
        partitions = len(described.get(spec.name, {}).get("partitions", []))
        if partitions != spec.partitions:
            problems.append(f"{spec.name}: {partitions} partitions on the broker, {spec.partitions} in the spec")
        for key, wanted in spec.configs.items():
            actual = configs.get(spec.name, {}).get(key)
            if actual != wanted:
                problems.append(f"{spec.name}: {key}={actual} on the broker, {wanted} in the spec")
    return problems
