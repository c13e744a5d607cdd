"""The worker's settings: the connection (`kafka.settings.ConnectionSettings`) and
the worker's own tuning (guarantee, state store, web server, commit and fetch
timing, batch size, health and metrics), env prefix `SIZER_`. Not part of the
sizing config hash: these settings move no number in any decision.

Every command loads these whole (`load_settings`), so one environment serves the
worker and the commands alike and a mistyped `SIZER_*` variable stops any of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from streams.errors import ConfigError, field_errors
from streams.kafka.settings import STANDARD_VARIABLES, ConnectionSettings


# Kafka's rule for a group.instance.id (org.apache.kafka.common.internals.Topic.validate)
INSTANCE_ID = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class WorkerSettings(ConnectionSettings):
    """The connection settings and the worker's tuning, env prefix `SIZER_`."""

    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    # under exactly-once: one transactional producer per worker, one transaction per
    # commit, fenced by the consumer group's generation (KIP-447,
    # `faust_compat.worker_transactions`), or one per input partition, each fencing the
    # partition's previous owner by its transactional id (faust's scheme). A group runs
    # one form (`faust_compat.membership.CommitFormAssignor`)
    transactions: Literal["per_worker", "per_partition"] = "per_worker"
    store: str = "rocksdb://"  # faust backs it with rocksdict (the rocksdict extra)
    # the most memory the write buffers of all local stores hold together (one RocksDB
    # WriteBufferManager, `faust_compat.stores`); 0: each database's own buffers only
    store_write_buffer_mb: int = Field(0, ge=0, le=65536)
    data_dir: Path = Path(".sizer-data")
    web_port: int = Field(6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    standby_replicas: int = Field(0, ge=0)
    commit_interval_s: float = Field(0.5, gt=0, allow_inf_nan=False)
    # under exactly-once, a batch's transaction is committed as soon as the batch is
    # done and nothing more was waiting (a fetch shorter than batch_max), at most once
    # per this interval; 0 turns it off (commits on commit_interval_s only)
    eager_commit_floor_s: float = Field(0.02, ge=0, allow_inf_nan=False)
    # the most the worker's fetch waits at the broker for new records (Kafka's
    # fetch.max.wait.ms; faust fixes 1,500). It bounds how long a fetch that left out
    # a partition with unconsumed records holds that partition's next records back
    # (`faust_compat.transport.ShortFetchWaitThread`); an idle worker sends about
    # 1000 / this fetches a second.
    fetch_max_wait_ms: int = Field(20, ge=1, le=60_000)
    # Kafka's group.instance.id: a stable name per worker (the StatefulSet's pod name)
    # makes it a static member, whose restart inside session_timeout_s moves no
    # partition; unset, every start joins as a new member and partitions move twice
    # (Kafka's own rule for it, as for a topic name: the Java client refuses any other at
    # start-up, the broker takes it as it comes)
    group_instance_id: str | None = None
    # how long the group waits for a silent worker (killed, or restarting as a static
    # member) before its partitions move
    session_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    heartbeat_interval_s: float = Field(3.0, gt=0, allow_inf_nan=False)
    # the most a stop (SIGTERM) may take: batch, last commit, checkpoint; then the
    # process exits whatever is under way (the pod's termination grace is longer)
    shutdown_timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    metrics_portfolio_limit: int = Field(1000, ge=1)
    # only registered portfolios are admitted (`worker.registry`): on in production
    # deployments (the chart), off for the demo and a first try
    require_registration: bool = False
    lag_interval_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    # at most this many inputs per fetch, handled as one batch: one lock, one state
    # write per portfolio, one wait for the sends (2,000 measured fastest in `make
    # bench`, against 500, 1,000 and 4,000)
    batch_max: int = Field(2000, ge=1)
    # how often to look for partitions whose delivery stopped short of the fetch
    stall_interval_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    # /health/live turns false once a batch has run this long without finishing
    liveness_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    # text (the default) or one JSON object a line (streams.logs)
    log_format: Literal["text", "json"] = "text"

    @field_validator("group_instance_id")
    @classmethod
    def _kafka_instance_id(cls, value: str | None) -> str | None:
        if value is not None and (not INSTANCE_ID.fullmatch(value) or value in (".", "..")):
            raise ValueError(f"must be 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-' (Kafka's rule for "
                             f"group.instance.id), not '.' or '..', not {value[:60]!r}"
                             + (f" ({len(value)} characters)" if len(value) > 60 else ""))
        return value

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> "WorkerSettings":
        # the group drops a member silent for session_timeout_s: one that heartbeats less
        # often is dropped between heartbeats and the group rebalances for ever
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError(f"heartbeat_interval_s: must be below session_timeout_s ({self.session_timeout_s:g} s; "
                             f"a third of it is usual), not {self.heartbeat_interval_s:g}")
        return self

    @model_validator(mode="after")
    def _worker_transaction_within_its_timeout(self) -> "WorkerSettings":
        # a per-worker transaction times out after session_timeout_s (so that a paused
        # worker's is aborted about when its partitions move), and lasts a commit interval
        # and the batch under way: one committed no sooner was aborted by the broker, the
        # worker exited (70, its sends refused: ProducerFenced) under a steady stream
        if (self.processing_guarantee == "exactly_once" and self.transactions == "per_worker"
                and self.commit_interval_s > self.session_timeout_s / 2):
            raise ValueError(f"commit_interval_s: must be at most half of session_timeout_s "
                             f"({self.session_timeout_s:g} s) under exactly-once with per_worker transactions "
                             f"(SIZER_TRANSACTIONS), whose timeout it is; not {self.commit_interval_s:g}")
        return self

    @model_validator(mode="after")
    def _registry_lookup_within_liveness(self) -> "WorkerSettings":
        # a batch waits on the lookup of a schema id it does not know: one that may wait
        # longer than liveness allows a batch would have the pod restarted for a slow registry
        # (without a registry there is no lookup, and the timeout is not set)
        if self.schema_registry_url is not None and self.schema_registry_timeout_s >= self.liveness_timeout_s:
            raise ValueError(f"schema_registry_timeout_s: must be below liveness_timeout_s "
                             f"({self.liveness_timeout_s:g} s), not {self.schema_registry_timeout_s:g}")
        return self


def load_settings(**overrides: object) -> WorkerSettings:
    """Build the settings; explicit overrides (e.g. `--bootstrap`) beat the environment.
    Raises ConfigError naming each bad field and its rule, or an unknown SIZER_* variable."""
    from streams.config import check_environment

    check_environment("SIZER_", WorkerSettings)
    values = {key: value for key, value in overrides.items() if value is not None}
    try:
        return WorkerSettings(**values)
    except ValidationError as exc:
        # a bad value from a standard variable (KAFKA_SASL_MECHANISM) names it and the sizer's setting
        standard = {field: variable for variable, field in STANDARD_VARIABLES.items()
                    if os.environ.get(variable) and not os.environ.get(f"SIZER_{field.upper()}")}
        lines = ["invalid Kafka settings (SIZER_* environment or flags):"]
        lines += [_line(field, rule) + (f" (from {standard[field]}; the sizer's setting is SIZER_{field.upper()})"
                                        if field in standard else "")
                  for field, rule, _ in field_errors(exc, "settings")]
        raise ConfigError("\n".join(lines)) from exc


def _line(field: str, rule: str) -> str:
    """One error line: a rule across fields (a model validator's) names its field itself."""
    if field == "settings" and rule.split(":", 1)[0] in WorkerSettings.model_fields:
        return f"  {rule}"
    return f"  {field}: {rule}"
