"""Where and how every Kafka client of the product talks to Kafka. Not part of
the sizing config hash: these settings move no number in any decision.

`ConnectionSettings.client(role)` is the one Kafka client configuration: every
aiokafka producer, consumer and admin client the product opens takes its
keyword arguments from it, and the faust app its `broker_credentials`, so
security (PLAINTEXT, SSL with mTLS, SASL_PLAINTEXT, SASL_SSL with PLAIN or
SCRAM-SHA-256/512) is set once. Secrets come from the environment or from a
file (a mounted secret) and are held as `SecretStr`: never printed, logged or
hashed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import CredentialsMissing
from streams.kafka.topics import LOCAL_REPLICATION, Replication

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

LOCAL_BROKER = "127.0.0.1:19092"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_bootstrap() -> str:
    """`KAFKA_BOOTSTRAP_SERVERS` when set, else the project's local broker."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or LOCAL_BROKER


class ConnectionSettings(BaseSettings):
    """Where the product's Kafka is and how to talk to it, env prefix `SIZER_`: the
    brokers, the security, the worker group's id, the topic names and their files.
    The worker's own tuning is `worker.settings.WorkerSettings`, which extends these."""

    # an empty variable (`SIZER_SSL_CAFILE=`) is unset, as in a shell
    model_config = SettingsConfigDict(env_prefix="SIZER_", frozen=True, extra="forbid", env_ignore_empty=True)

    bootstrap: str = Field(default_factory=default_bootstrap)
    app_id: str = Field("sizer", min_length=1)
    topic_prefix: str = ""
    topics_file: Path = PROJECT_ROOT / "topics" / "topics.toml"
    acls_file: Path = PROJECT_ROOT / "topics" / "acls.toml"
    # copies of every topic and changelog the product creates, and the topics'
    # min.insync.replicas (`topics.Replication`); the defaults suit one local broker
    replication_factor: int = Field(LOCAL_REPLICATION.factor, ge=1)
    min_insync_replicas: int = Field(LOCAL_REPLICATION.min_insync, ge=1)

    # Security (DESIGN.md, "Security"): one configuration for every client.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None  # None: the system's trusted CAs
    ssl_certfile: Path | None = None  # a client certificate (mTLS)
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    ssl_check_hostname: bool = True
    client_id_prefix: str = Field("sizer", min_length=1)

    @model_validator(mode="after")
    def _replication_coherent(self) -> "ConnectionSettings":
        self.replication  # noqa: B018 - raises ValueError naming the setting
        return self

    @property
    def replication(self) -> Replication:
        """Every topic's and changelog's replication (SIZER_REPLICATION_FACTOR, SIZER_MIN_INSYNC_REPLICAS)."""
        return Replication(self.replication_factor, self.min_insync_replicas)

    @model_validator(mode="after")
    def _bootstrap_well_formed(self) -> "ConnectionSettings":
        for address in self.bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap: {address.strip()!r} is not HOST:PORT (a comma-separated list of them)")
        return self

    @model_validator(mode="after")
    def _security_complete(self) -> "ConnectionSettings":
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"sasl_mechanism: required with security_protocol {self.security_protocol}")
            if not self.sasl_username:
                raise ValueError(f"sasl_username: required with security_protocol {self.security_protocol}")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("sasl_password: required (SIZER_SASL_PASSWORD or SIZER_SASL_PASSWORD_FILE)")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password or self.sasl_password_file:
            raise ValueError(f"sasl_*: set, but security_protocol {self.security_protocol} does not use SASL")
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("sasl_password: give SIZER_SASL_PASSWORD or SIZER_SASL_PASSWORD_FILE, not both")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile,
                 "sasl_password_file": self.sasl_password_file, "ssl_key_password_file": self.ssl_key_password_file}
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if not tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise ValueError(f"ssl_*: set, but security_protocol {self.security_protocol} does not use TLS")
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None) and self.ssl_certfile is None:
            raise ValueError("ssl_certfile: required with ssl_keyfile (a client key needs its certificate)")
        return self

    def _secret(self, value: SecretStr | None, path: Path | None) -> str | None:
        if value is not None:
            return value.get_secret_value()
        if path is not None:
            return path.read_text().strip()
        return None

    def ssl_context(self) -> Any:
        """The TLS context of every client (None without TLS): the server verified
        against `ssl_cafile` (or the system's CAs), hostname checked unless turned
        off, and the client certificate presented when given (mTLS)."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            password=self._secret(self.ssl_key_password, self.ssl_key_password_file),
        )
        context.check_hostname = self.ssl_check_hostname
        return context

    @property
    def principal(self) -> str:
        """Who the broker takes these settings for, as its ACLs name it: `User:<SASL
        user>`; with TLS client certificates, the certificate's subject; else
        `User:ANONYMOUS`."""
        if self.security_protocol.startswith("SASL_") and self.sasl_username:
            return f"User:{self.sasl_username}"
        if self.security_protocol == "SSL" and self.ssl_certfile is not None:
            return f"the subject of {self.ssl_certfile}"
        return "User:ANONYMOUS"

    def client_id(self, role: str) -> str:
        """`client.id` of a role, so a broker operator can tell the clients apart:
        `sizer-worker-<app_id>`, `sizer-audit`, `sizer-topics`, ..."""
        return f"{self.client_id_prefix}-{role}"

    def client(self, role: str) -> dict[str, Any]:
        """Keyword arguments for an aiokafka producer, consumer or admin client of `role`:
        bootstrap servers, client id and security. The one Kafka client configuration."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap, "client_id": self.client_id(role),
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self._secret(self.sasl_password, self.sasl_password_file))
        return options

    def for_role(self, role: str) -> "ClientConfig":
        """The client configuration of `role`, to hand to code that opens Kafka clients."""
        return ClientConfig(self, role)

    async def connection_error(self, timeout_s: float = 15.0) -> BaseException | None:
        """Why a client of these settings cannot talk to the brokers: one connection to
        each bootstrap address, as the clients open them (TLS, SASL), and one request on
        it. aiokafka reports a failed bootstrap without its cause; this finds it. Returns
        the first address's error, None when one address answered."""
        import asyncio

        from aiokafka.conn import create_conn
        from aiokafka.errors import KafkaConnectionError
        from aiokafka.protocol.metadata import MetadataRequest

        options = self.client("probe")
        options.pop("bootstrap_servers")
        first: BaseException | None = None
        lacking = {"SSL": "SASL credentials", "SASL_PLAINTEXT": "TLS"}.get(self.security_protocol,
                                                                          "TLS or SASL credentials")

        def missing(exc: BaseException) -> BaseException:
            # connected, then dropped at the first request: the broker wanted what we did not send
            if self.security_protocol == "SASL_SSL":
                return exc
            return CredentialsMissing(f"the broker closed the connection of a client without {lacking} "
                                      f"(security_protocol {self.security_protocol})")

        for address in self.bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000),
                                                          **options), timeout_s)
            except KafkaConnectionError as exc:
                first = first or missing(exc)
                continue
            except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - the cause is the result
                first = first or exc
                continue
            try:
                await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
                return None
            except KafkaConnectionError as exc:
                first = first or missing(exc)
            except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001
                first = first or exc
            finally:
                conn.close()
        return first

    def faust_credentials(self) -> Any:
        """The same security as faust's `broker_credentials` (None for PLAINTEXT)."""
        import faust

        if self.security_protocol == "PLAINTEXT":
            return None
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        return faust.SASLCredentials(
            username=self.sasl_username, password=self._secret(self.sasl_password, self.sasl_password_file),
            ssl_context=self.ssl_context(), mechanism=self.sasl_mechanism)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """One role's Kafka client configuration: what every function that opens an
    aiokafka producer, consumer or admin client takes instead of a bootstrap string."""

    settings: ConnectionSettings
    role: str

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def options(self, **extra: Any) -> dict[str, Any]:
        """aiokafka keyword arguments: `ConnectionSettings.client(role)` plus `extra`."""
        return {**self.settings.client(self.role), **extra}

    def __repr__(self) -> str:  # never the settings' secrets, even masked
        return f"ClientConfig({self.role!r}, {self.settings.bootstrap!r}, {self.settings.security_protocol})"
