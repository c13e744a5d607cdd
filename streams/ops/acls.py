"""ACLs as code: `topics/acls.toml` names each principal of the product and what
it may do on the broker; `apply_acls` creates what is missing and reports every
ACL on the broker that the file does not grant: any ACL of a principal the file
names, and any ALLOW, of any principal (`User:*` included), on a resource of the
product (`product_resources`: its topics, its tables' changelogs, its groups and
transactional ids, whatever the file names, and its principals as the `User`
resource of delegation tokens), or any ALLOW of a cluster-wide power
(`CLUSTER_POWERS`: whoever may alter the cluster may grant itself anything).

The admin calls (DescribeAcls, CreateAcls) go through kafka-python's
`KafkaAdminClient` (aiokafka's admin client has none), configured from the same
`ConnectionSettings.client(role)` as every other client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import AclMismatch, ConfigError, KafkaUnavailable, read_toml
from streams.kafka.topics import TopicSet
from streams.wire.roles import ROLES
from streams.text import counted

if TYPE_CHECKING:
    from streams.kafka.settings import ConnectionSettings

# Kafka's operation names, as written in the file (case-insensitive there).
OPERATIONS = ("All", "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
              "DescribeConfigs", "AlterConfigs", "IdempotentWrite")
# RESOURCE of an entry: (Kafka resource type, pattern type)
RESOURCES = {
    "topic": ("TOPIC", "LITERAL"), "topic-prefix": ("TOPIC", "PREFIXED"),
    "group": ("GROUP", "LITERAL"), "group-prefix": ("GROUP", "PREFIXED"),
    "transactional-id": ("TRANSACTIONAL_ID", "LITERAL"),
    "transactional-id-prefix": ("TRANSACTIONAL_ID", "PREFIXED"),
    "cluster": ("CLUSTER", "LITERAL"),
}
_SPELLING = {
    "TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactional-id", "CLUSTER": "cluster",
    "USER": "user",
}
# The operations on the cluster that reach every resource of the product: Alter creates
# and deletes ACLs, AlterConfigs changes the brokers' settings, ClusterAction is a
# broker's own (replication, leadership). Create, Describe, DescribeConfigs and
# IdempotentWrite are what any client of a shared cluster may hold.
CLUSTER_POWERS = frozenset({"All", "Alter", "AlterConfigs", "ClusterAction"})


@dataclass(frozen=True, slots=True, order=True)
class AclEntry:
    """One ALLOW ACL from any host: the wanted ones and the broker's are compared as values."""

    principal: str  # "User:sizer-worker"
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    pattern: str  # LITERAL or PREFIXED
    name: str
    operation: str  # as in OPERATIONS
    permission: str = "ALLOW"
    host: str = "*"

    def __str__(self) -> str:
        where = _SPELLING.get(self.resource_type, self.resource_type.lower())
        if self.pattern == "PREFIXED":
            where += "-prefix"
        resource = where if self.resource_type == "CLUSTER" else f"{where}:{self.name}"
        extra = "" if (self.permission, self.host) == ("ALLOW", "*") else f" ({self.permission} from {self.host})"
        return f"{self.principal} {self.operation} {resource}{extra}"


@dataclass(frozen=True, slots=True)
class Principal:
    key: str  # the table name in the file: worker, auditor, ...
    user: str
    acls: tuple[AclEntry, ...]


def load_acls(path: Path, topics: TopicSet, app_id: str) -> list[Principal]:
    """Read `path` and expand its placeholders: `{signals}` ... `{config}` (the topic
    names of `topics`, prefix included), `{topics}` (each topic) and
    `{app_id}`. Raises ConfigError naming the principal and the entry at fault."""
    data = read_toml(path, "ACL file")
    names = {role: topics.name(role) for role in ROLES}
    principals = []
    for key, entry in (data.get("principals") or {}).items():
        where = f"ACL file {path}: principals.{key}"
        user = entry.get("user")
        if not isinstance(user, str) or not user:
            raise ConfigError(f"{where}.user: required (the SASL user name)")
        allow = entry.get("allow")
        if not isinstance(allow, list) or not all(isinstance(item, str) for item in allow):
            raise ConfigError(f"{where}.allow: a list of \"OPERATIONS RESOURCE\" strings")
        acls: list[AclEntry] = []
        for item in allow:
            acls += _parse(item, f"User:{user}", names, app_id, f"{where}.allow {item!r}")
        principals.append(Principal(key, user, tuple(sorted(set(acls)))))
    if not principals:
        raise ConfigError(f"ACL file {path}: no [principals.*] table")
    return principals


def _parse(item: str, principal: str, names: dict[str, str], app_id: str, where: str) -> list[AclEntry]:
    parts = item.split()
    if len(parts) != 2:
        raise ConfigError(f"{where}: must be \"OPERATIONS RESOURCE\", e.g. \"Read topic:{{signals}}\"")
    operations, resource = parts
    kind, _, name = resource.partition(":")
    if kind not in RESOURCES:
        raise ConfigError(f"{where}: resource must be one of {', '.join(RESOURCES)}")
    resource_type, pattern = RESOURCES[kind]
    if resource_type == "CLUSTER":
        if name:
            raise ConfigError(f"{where}: the cluster resource has no name")
        name = "kafka-cluster"
    elif not name:
        raise ConfigError(f"{where}: {kind} needs a name ({kind}:NAME)")
    known = {op.lower(): op for op in OPERATIONS}
    ops = []
    for op in operations.split(","):
        if op.lower() not in known:
            raise ConfigError(f"{where}: unknown operation {op!r} (one of {', '.join(OPERATIONS)})")
        ops.append(known[op.lower()])
    expanded = [name.replace("{topics}", names[role]) for role in ROLES] if "{topics}" in name else [name]
    result = []
    for one in expanded:
        try:
            one = one.format(app_id=app_id, **names)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{where}: unknown placeholder {exc} (use {{app_id}}, {{topics}} or a topic role "
                              f"such as {{signals}})") from None
        result += [AclEntry(principal, resource_type, pattern, one, op) for op in ops]
    return result


@dataclass(frozen=True, slots=True)
class Resources:
    """The product's resources of one type: exact names and name prefixes."""

    names: frozenset[str]
    prefixes: frozenset[str]

    def touched_by(self, entry: AclEntry) -> bool:
        """Whether an ACL's resource pattern (literal, `*`, or prefixed) covers any of them."""
        if entry.pattern == "LITERAL":
            return entry.name == "*" or entry.name in self.names or any(
                entry.name.startswith(prefix) for prefix in self.prefixes)
        if entry.pattern == "PREFIXED":
            return any(name.startswith(entry.name) for name in self.names) or any(
                prefix.startswith(entry.name) or entry.name.startswith(prefix) for prefix in self.prefixes)
        return True  # a pattern type this code does not know: shown rather than trusted


def product_resources(principals: list[Principal], topics: TopicSet, app_id: str) -> dict[str, Resources]:
    """Resource type -> the product's resources: every topic of `topics`, the group
    `app_id`, the transactional ids `<app_id>-...`, every topic, group and
    transactional id (or prefix) the ACL file names (the tables' changelogs, the
    execution engine's group), and each principal the file names as a `User`
    resource (CreateTokens on it makes a delegation token that authenticates as that
    principal). The cluster resource is not the product's: `unmade_grants` reports
    only `CLUSTER_POWERS` there."""
    users = {name for principal in principals for name in (f"User:{principal.user}", principal.user)}
    names: dict[str, set[str]] = {"TOPIC": {topics.name(role) for role in ROLES}, "GROUP": {app_id},
                                  "TRANSACTIONAL_ID": set(), "USER": users}
    prefixes: dict[str, set[str]] = {"TOPIC": set(), "GROUP": set(), "TRANSACTIONAL_ID": {f"{app_id}-"},
                                     "USER": set()}
    for principal in principals:
        for entry in principal.acls:
            if entry.resource_type in names:
                (prefixes if entry.pattern == "PREFIXED" else names)[entry.resource_type].add(entry.name)
    return {kind: Resources(frozenset(names[kind]), frozenset(prefixes[kind])) for kind in names}


def unmade_grants(held: set[AclEntry], principals: list[Principal], resources: dict[str, Resources]
                  ) -> list[AclEntry]:
    """Every ACL on the broker the file does not make: of a principal the file names,
    any it does not grant; of any other principal, each ALLOW on a product resource
    and each ALLOW of a cluster-wide power (`CLUSTER_POWERS`)."""
    wanted = {entry for principal in principals for entry in principal.acls}
    named = {f"User:{principal.user}" for principal in principals}

    def reaches_product(entry: AclEntry) -> bool:
        if entry.permission != "ALLOW":
            return False
        if entry.resource_type == "CLUSTER":
            return entry.operation in CLUSTER_POWERS
        return entry.resource_type in resources and resources[entry.resource_type].touched_by(entry)

    return sorted(entry for entry in held - wanted if entry.principal in named or reaches_product(entry))


def _to_kafka(entry: AclEntry) -> Any:
    from kafka.admin import (ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern,
                             ResourceType)

    operation = ACLOperation[re.sub(r"(?<!^)([A-Z])", r"_\1", entry.operation).upper()]
    return ACL(entry.principal, entry.host, operation, ACLPermissionType[entry.permission],
               ResourcePattern(ResourceType[entry.resource_type], entry.name,
                               ACLResourcePatternType[entry.pattern]))


def _from_kafka(acl: Any) -> AclEntry:
    words = acl.operation.name.split("_")
    operation = "".join(word.capitalize() for word in words)
    return AclEntry(acl.principal, acl.resource_pattern.resource_type.name, acl.resource_pattern.pattern_type.name,
                    acl.resource_pattern.resource_name, operation, acl.permission_type.name, acl.host)


def _admin(kafka: "ConnectionSettings") -> Any:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**kafka.kafka_python_client("acls"), request_timeout_ms=30_000)


def _refused(exc: BaseException, kafka: "ConnectionSettings") -> KafkaUnavailable:
    """kafka-python's errors as ours, one line naming the cause."""
    import asyncio

    from kafka import errors

    from streams.errors import kafka_error

    where = kafka.bootstrap
    if isinstance(exc, errors.SecurityDisabledError):
        return KafkaUnavailable(f"the broker at {where} has no authorizer: there are no ACLs to apply")
    if isinstance(exc, errors.ClusterAuthorizationFailedError):
        return KafkaUnavailable(f"not authorized at {where}: user {kafka.sasl_username or 'ANONYMOUS'} may not "
                                f"describe or create ACLs (run `sizer acls apply` as a super user)")
    if isinstance(exc, (errors.SaslAuthenticationFailedError, errors.AuthenticationFailedError)):
        return KafkaUnavailable(f"authentication failed at {where}: {exc}")
    # No broker answered: kafka-python, like aiokafka, does not say why; find out.
    cause = asyncio.run(kafka.connection_error())
    return kafka_error(cause or exc, where)


def apply_acls(kafka: "ConnectionSettings", principals: list[Principal], resources: dict[str, Resources],
               create: bool = True) -> list[str]:
    """Create the ACLs of `principals` that the broker lacks (when `create`) and verify
    that each principal holds exactly those, and that no other principal holds an
    ALLOW on the product's `resources` (`product_resources`) or a cluster-wide
    power (`CLUSTER_POWERS`). Returns one line per
    ACL created and one per principal verified. Raises AclMismatch naming every ACL
    that is missing (with `create=False`, or refused) or that the broker holds
    beyond the file, and KafkaUnavailable (one line) when the broker cannot be
    reached or refuses us."""
    from kafka import errors
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePatternFilter, ResourceType)

    try:
        admin = _admin(kafka)
    except errors.KafkaError as exc:
        raise _refused(exc, kafka) from exc
    report: list[str] = []
    problems: list[str] = []
    try:
        # every ACL the broker holds, of every principal (raises the broker's error)
        found, _ = admin.describe_acls(ACLFilter(
            None, None, ACLOperation.ANY, ACLPermissionType.ANY,
            ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
        held_all = {_from_kafka(acl) for acl in found}
        for principal in principals:
            wanted = set(principal.acls)
            held = {entry for entry in held_all if entry.principal == f"User:{principal.user}"}
            missing = sorted(wanted - held)
            if missing and create:
                result = admin.create_acls([_to_kafka(entry) for entry in missing])
                failed = {_from_kafka(acl): err for acl, err in result.get("failed", [])}
                for entry in missing:
                    if entry in failed:
                        problems.append(f"{entry}: could not be created: {failed[entry]}")
                    else:
                        report.append(f"created {entry}")
            elif missing:
                problems += [f"{entry}: missing on the broker (run `sizer acls apply`)" for entry in missing]
            report.append(f"ok {principal.key} (User:{principal.user}): {counted(len(wanted), 'ACL')}")
        problems += [f"{entry}: on the broker, not in the ACL file"
                     for entry in unmade_grants(held_all, principals, resources)]
        report.append("ok no other principal holds a grant on the product's topics, groups, transactional ids or "
                      "principals, or a cluster-wide power")
    except errors.KafkaError as exc:
        raise _refused(exc, kafka) from exc
    finally:
        admin.close()
    if problems:
        raise AclMismatch("ACLs differ from the ACL file:\n  " + "\n  ".join(problems))
    return report
