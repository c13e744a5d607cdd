"""The project's exceptions. A rejected signal is a decision, never an exception:
these are for bad configuration, unusable input files, a broker that cannot be
reached or refuses us, and bugs.

    SizerError
    ├── ConfigError        bad configuration (exit 2)
    │   ├── GroupInstanceTaken another worker joined the group under this one's group.instance.id
    │   └── CommitFormMixed    this worker commits otherwise than its group (guarantee, transactions)
    ├── TopicMismatch      a topic differs from its spec (exit 3)
    │   └── TopicRecreated an input topic was deleted and recreated under the worker group (exit 3)
    ├── KafkaUnavailable   the broker cannot be reached, or refuses us (exit 4)
    │   └── CredentialsMissing  it wants TLS or SASL that the client does not use
    ├── RegistryUnavailable the Schema Registry cannot be reached, or refuses us (exit 4)
    ├── AclMismatch        an ACL on the broker differs from topics/acls.toml (exit 3)
    └── InvalidMessage     an input that cannot be admitted (dead-lettered)
"""

from typing import Any


class SizerError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(SizerError):
    """The configuration is unusable; the message names the field and the rule."""


class GroupInstanceTaken(ConfigError):
    """Another worker joined the group under this worker's group.instance.id
    (SIZER_GROUP_INSTANCE_ID), and the broker fenced this one (FENCED_INSTANCE_ID)."""

    def __init__(self, group: str, instance_id: str) -> None:
        super().__init__(f"another worker joined group {group} with group.instance.id {instance_id} "
                         "(SIZER_GROUP_INSTANCE_ID): each worker needs its own")
        self.group = group
        self.instance_id = instance_id


class CommitFormMixed(ConfigError):
    """This worker commits in another form than the workers of its group: another
    SIZER_PROCESSING_GUARANTEE or SIZER_TRANSACTIONS. The forms do not fence each
    other (a per-partition transaction is fenced by its transactional id, a per-worker
    one by the group's generation), so a group runs one form only."""

    def __init__(self, group: str, own: str, group_form: str) -> None:
        super().__init__(f"the workers of group {group} run {group_form}, this one {own}: the two do not fence "
                         "each other's commits; stop every worker of the group to change either setting")
        self.group = group
        self.own = own
        self.group_form = group_form


# Every code an InvalidMessage (and so a dead letter) can carry.
INPUT_ERROR_CODES = ("NULL_VALUE", "INVALID_JSON", "NOT_AN_OBJECT", "MISSING_FIELD", "INVALID_FIELD",
                     "KEY_MISMATCH", "WRONG_PARTITION", "UNKNOWN_PORTFOLIO", "FUTURE_TIMESTAMP",
                     "PROCESSING_ERROR", "SCHEMA_ID", "SCHEMA_REGISTRY_UNAVAILABLE")


class InvalidMessage(SizerError):
    """An input message cannot be decoded or validated.

    `code` is a bounded SCREAMING_SNAKE category (for metrics and dead letters),
    `detail` names the field and the rule."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class RegistryUnavailable(SizerError):
    """The Schema Registry (SIZER_SCHEMA_REGISTRY_URL) cannot be reached or refuses a request."""


class TopicMismatch(SizerError):
    """A topic exists on the broker with a partition count or config that differs from its spec."""


def read_toml(path: Any, what: str) -> dict[str, Any]:
    """A TOML file (the config, topics and ACL files) as data. Raises ConfigError
    naming `what` and the path: missing, unreadable (a directory) or not TOML."""
    import tomllib
    from pathlib import Path

    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:  # a directory, unreadable, ...
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def field_errors(error: Any, whole: str) -> list[tuple[str, str, str]]:
    """A pydantic ValidationError as (field path, rule, error type) triples, in
    order; `whole` names the object itself when an error has no field. The one
    place pydantic's wording is turned into ours."""
    rows = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or whole
        rows.append((field, item["msg"].removeprefix("Value error, "), item["type"]))
    return rows


class KafkaUnavailable(SizerError):
    """The broker cannot be reached, or it refuses us (authentication, TLS, authorization)."""


class CredentialsMissing(KafkaUnavailable):
    """The broker accepted the connection and closed it: it requires TLS or SASL that the client does not use."""


class AclMismatch(SizerError):
    """ACLs on the broker differ from topics/acls.toml (missing ones that could not be made, or extra ones)."""


# Kafka's own bound on a record's timestamp (the producer's, or the journal's
# "timestamp"), which it checks before the sizer's `max_future_skew_s` can judge
# anything: the record is refused whole (InvalidTimestampError), never stored.
RECORD_TIMESTAMP_RULE = (
    "Kafka refuses a record stamped more than message.timestamp.after.max.ms ahead of the broker's clock "
    "(Kafka 4.x: 1 hour by default; 3.9: no limit by default; broker default log.message.timestamp.after.max.ms) "
    "or more than message.timestamp.before.max.ms behind it (no limit by default)")


def own_clock() -> str:
    """What a refused record timestamp says of this machine's clock: a client stamps every
    record it sends without one (the worker's decisions, orders, dead letters, changelogs
    and configuration records; `sizer control`) with it, so a clock ahead of the broker's
    by more than the bound has every send refused."""
    import datetime
    import time

    # time.time(), as the Kafka client reads it to stamp a record
    now = datetime.datetime.fromtimestamp(time.time(), datetime.timezone.utc).isoformat(timespec="seconds")
    now = now.replace("+00:00", "Z")
    return f" (a record sent without one is stamped by this machine's clock, now {now}: is it ahead of the broker's?)"


def kafka_error(exc: BaseException, bootstrap: str | None = None, refused: str | None = None) -> KafkaUnavailable:
    """A foreign Kafka, TLS or socket error as ours, with one line naming the cause.
    `refused`: what the client presented, said when the broker refused to authenticate it."""
    import ssl

    from aiokafka import errors

    where = f" at {bootstrap}" if bootstrap else ""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, CredentialsMissing):
        return KafkaUnavailable(f"authentication required{where}: {exc}")
    if isinstance(exc, ssl.SSLError) or isinstance(cause, ssl.SSLError):
        error = exc if isinstance(exc, ssl.SSLError) else cause
        reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or error
        if isinstance(error, ssl.SSLCertVerificationError):
            return KafkaUnavailable(f"TLS verification failed{where}: {reason} (SIZER_SSL_CAFILE names the CA "
                                    f"that signed the broker's certificate)")
        return KafkaUnavailable(f"TLS handshake failed{where}: {reason}")
    if isinstance(exc, (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError,
                        errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError)):
        return KafkaUnavailable(f"authentication failed{where}: " + (f"{refused}: " if refused else "") + str(exc))
    if isinstance(exc, (errors.TopicAuthorizationFailedError, errors.GroupAuthorizationFailedError,
                        errors.TransactionalIdAuthorizationFailed, errors.ClusterAuthorizationFailedError)):
        return KafkaUnavailable(f"not authorized{where}: {exc}")
    if isinstance(exc, errors.InvalidTimestampError):
        return KafkaUnavailable(f"the broker{where} refused a record's timestamp{own_clock()}: {RECORD_TIMESTAMP_RULE}")
    if isinstance(exc, (errors.KafkaConnectionError, OSError, TimeoutError)):
        return KafkaUnavailable(f"cannot reach the Kafka broker{where}: {exc}")
    return KafkaUnavailable(f"Kafka error{where}: {type(exc).__name__}: {exc}")


class TopicRecreated(TopicMismatch):
    """An input topic is not the one the worker's stored positions were taken on (deleted and recreated)."""


def exit_code(error: SizerError) -> int:
    """The documented exit code of an error's class (docs: operating, "Exit codes")."""
    for kind, code in ((ConfigError, 2), (TopicMismatch, 3), (AclMismatch, 3), (KafkaUnavailable, 4),
                       (RegistryUnavailable, 4)):
        if isinstance(error, kind):
            return code
    return 1
