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
from typing import Any, Literal, Mapping

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.errors import ConfigError, CredentialsMissing
from streams.kafka.topics import LOCAL_REPLICATION, Replication

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

LOCAL_BROKER = "127.0.0.1:19092"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# The standard Kafka client variables a platform sets, and the setting each one gives when
# its SIZER_* variable is unset. Both set to different values: start-up stops, naming both.
STANDARD_VARIABLES = {
    "KAFKA_BOOTSTRAP_SERVERS": "bootstrap",
    "KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "KAFKA_SASL_MECHANISM": "sasl_mechanism",
}


def standard_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{setting: value} from the STANDARD_VARIABLES set in `environ` (default os.environ), values
    of protocol and mechanism upper-cased as Kafka reads them. Raises ConfigError when one
    disagrees with the SIZER_* variable of its setting."""
    environ = os.environ if environ is None else environ
    values = {}
    for variable, field in STANDARD_VARIABLES.items():
        value = (environ.get(variable) or "").strip()
        if not value:
            continue
        if field != "bootstrap":
            value = value.upper()
        own = (environ.get(f"SIZER_{field.upper()}") or "").strip()
        if own and (own if field == "bootstrap" else own.upper()) != value:
            raise ConfigError(f"{variable}={value} and SIZER_{field.upper()}={own} disagree: "
                              f"the sizer's setting is SIZER_{field.upper()}; unset one or make them equal")
        values[field] = value
    return values


def setting_source(settings: "ConnectionSettings", field: str, environ: Mapping[str, str] | None = None) -> str:
    """Where `field` of `settings` came from: an environment variable, a flag, or the default."""
    environ = os.environ if environ is None else environ
    if field not in settings.model_fields_set:
        return "default"
    if environ.get(f"SIZER_{field.upper()}"):
        return f"environment SIZER_{field.upper()}"
    for variable, standard in STANDARD_VARIABLES.items():
        if standard == field and environ.get(variable):
            return f"environment {variable}"
    return "command line"


class _StandardVariables(PydanticBaseSettingsSource):
    """KAFKA_BOOTSTRAP_SERVERS and friends, below the SIZER_* variables."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return standard_variables().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return standard_variables()


class ConnectionSettings(BaseSettings):
    """Where the product's Kafka is and how to talk to it, env prefix `SIZER_`: the
    brokers, the security, the worker group's id, the topic names and their files.
    The worker's own tuning is `worker.settings.WorkerSettings`, which extends these."""

    # an empty variable (`SIZER_SSL_CAFILE=`) is unset, as in a shell
    model_config = SettingsConfigDict(env_prefix="SIZER_", frozen=True, extra="forbid", env_ignore_empty=True)

    bootstrap: str = LOCAL_BROKER
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
    # OAUTHBEARER: an OIDC token endpoint's client credentials, or AWS MSK IAM
    sasl_oauth_method: Literal["oidc", "aws-msk-iam"] = "oidc"
    sasl_oauth_token_endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    sasl_oauth_client_id: str | None = None
    sasl_oauth_client_secret: SecretStr | None = None
    sasl_oauth_client_secret_file: Path | None = None
    sasl_oauth_scope: str | None = None
    sasl_aws_region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    # GSSAPI (Kerberos): the ticket from the environment's credential cache or keytab
    # (KRB5CCNAME, KRB5_CLIENT_KTNAME), the broker's service principal <name>/<host>
    sasl_kerberos_service_name: str = Field("kafka", min_length=1)
    sasl_kerberos_domain_name: str | None = None
    client_id_prefix: str = Field("sizer", min_length=1)
    # A Schema Registry (Confluent's REST API; `kafka.schema_registry`): set, the product
    # registers its JSON Schemas under <topic>-value, writes its outputs in the Confluent
    # wire format and reads its inputs in it ("confluent") or as plain JSON ("json")
    schema_registry_url: str | None = Field(None, pattern=r"^https?://\S+$")
    schema_registry_inputs: Literal["confluent", "json"] = "confluent"
    # HTTP basic authentication to it (Confluent Cloud's API key and secret): never in
    # the URL, which `sizer config` prints and every registry error names
    schema_registry_username: str | None = Field(None, min_length=1)
    schema_registry_password: SecretStr | None = None
    schema_registry_password_file: Path | None = None
    schema_registry_cafile: Path | None = None  # https: the CA that signed its certificate; None: the system's
    # each request to it, connecting included: at start-up, and when an input's schema id
    # is looked up (a batch waits on that lookup)
    schema_registry_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    _token_source: Any = PrivateAttr(None)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        return init_settings, env_settings, _StandardVariables(settings_cls), dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _replication_coherent(self) -> "ConnectionSettings":
        self.replication  # noqa: B018 - raises ValueError naming the setting
        return self

    @property
    def replication(self) -> Replication:
        """Every topic's and changelog's replication (SIZER_REPLICATION_FACTOR, SIZER_MIN_INSYNC_REPLICAS)."""
        return Replication(self.replication_factor, self.min_insync_replicas)

    @model_validator(mode="after")
    def _registry_coherent(self) -> "ConnectionSettings":
        given = {"schema_registry_inputs", "schema_registry_username", "schema_registry_password",
                 "schema_registry_password_file", "schema_registry_cafile", "schema_registry_timeout_s"} & {name for name in self.model_fields_set
                                                     if getattr(self, name) is not None}
        if self.schema_registry_url is None and given:
            raise ValueError(f"{min(given)}: set, but schema_registry_url is not (no Schema Registry)")
        if self.schema_registry_url is not None and "@" in self.schema_registry_url.split("/")[2]:
            raise ValueError("schema_registry_url: no credentials in the URL (they would be printed and logged): "
                             "give SIZER_SCHEMA_REGISTRY_USERNAME and SIZER_SCHEMA_REGISTRY_PASSWORD(_FILE)")
        password = self.schema_registry_password, self.schema_registry_password_file
        if all(item is not None for item in password):
            raise ValueError("schema_registry_password: give SIZER_SCHEMA_REGISTRY_PASSWORD or "
                             "SIZER_SCHEMA_REGISTRY_PASSWORD_FILE, not both")
        if (self.schema_registry_username is None) != all(item is None for item in password):
            raise ValueError("schema_registry_username: basic authentication needs both the username and the "
                             "password (SIZER_SCHEMA_REGISTRY_PASSWORD or _FILE)")
        for name in ("schema_registry_password_file", "schema_registry_cafile"):
            if getattr(self, name) is not None and not getattr(self, name).is_file():
                raise ValueError(f"{name}: no such file: {getattr(self, name)}")
        if self.schema_registry_cafile is not None and not str(self.schema_registry_url).startswith("https://"):
            raise ValueError("schema_registry_cafile: set, but schema_registry_url is not https")
        return self

    def schema_registry_ssl(self) -> Any:
        """The TLS context the Schema Registry's certificate is verified with (None: the
        system's trusted CAs, or plain http)."""
        if self.schema_registry_cafile is None:
            return None
        import ssl

        return ssl.create_default_context(cafile=str(self.schema_registry_cafile))

    def schema_registry_auth(self) -> tuple[str, str] | None:
        """(username, password) for the Schema Registry's basic authentication; None: none."""
        if self.schema_registry_username is None:
            return None
        password = self._secret(self.schema_registry_password, self.schema_registry_password_file)
        return self.schema_registry_username, password or ""

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
        mechanism = self.sasl_mechanism
        password = self.sasl_password is not None or self.sasl_password_file is not None
        oauth = {name: getattr(self, name) for name in (
            "sasl_oauth_token_endpoint", "sasl_oauth_client_id", "sasl_oauth_client_secret",
            "sasl_oauth_client_secret_file", "sasl_oauth_scope", "sasl_aws_region") if getattr(self, name)}
        if not sasl and (mechanism or self.sasl_username or password or oauth):
            raise ValueError(f"sasl_*: set, but security_protocol {self.security_protocol} does not use SASL")
        if sasl and mechanism is None:
            raise ValueError(f"sasl_mechanism: required with security_protocol {self.security_protocol}")
        if mechanism in PASSWORD_MECHANISMS:
            if not self.sasl_username:
                raise ValueError(f"sasl_username: required with security_protocol {self.security_protocol}")
            if not password:
                raise ValueError("sasl_password: required (SIZER_SASL_PASSWORD or SIZER_SASL_PASSWORD_FILE)")
        elif mechanism is not None and (self.sasl_username or password):
            raise ValueError(f"sasl_username, sasl_password: not used with sasl_mechanism {mechanism} "
                             "(the principal comes from the token or the Kerberos ticket)")
        if mechanism != "OAUTHBEARER" and oauth:
            raise ValueError(f"sasl_oauth_*, sasl_aws_region: set, but sasl_mechanism is {mechanism}, not OAUTHBEARER")
        if mechanism == "OAUTHBEARER":
            self._oauth_complete(oauth)
        if mechanism == "GSSAPI":
            try:
                import gssapi  # noqa: F401 - aiokafka's Kerberos needs it
            except ImportError:
                raise ValueError("sasl_mechanism GSSAPI: needs the gssapi package and the system's Kerberos "
                                 "libraries (pip install 'sizer[kerberos]')") from None
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("sasl_password: give SIZER_SASL_PASSWORD or SIZER_SASL_PASSWORD_FILE, not both")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile,
                 "sasl_password_file": self.sasl_password_file, "ssl_key_password_file": self.ssl_key_password_file,
                 "sasl_oauth_client_secret_file": self.sasl_oauth_client_secret_file}
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if not tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise ValueError(f"ssl_*: set, but security_protocol {self.security_protocol} does not use TLS")
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None) and self.ssl_certfile is None:
            raise ValueError("ssl_certfile: required with ssl_keyfile (a client key needs its certificate)")
        return self

    def _oauth_complete(self, given: dict[str, Any]) -> None:
        if self.sasl_oauth_method == "aws-msk-iam":
            if not self.sasl_aws_region:
                raise ValueError("sasl_aws_region: required with sasl_oauth_method aws-msk-iam")
            extra = sorted(set(given) - {"sasl_aws_region"})
            if extra:
                raise ValueError(f"{', '.join(extra)}: not used with sasl_oauth_method aws-msk-iam")
            from streams.kafka.oauth import msk_signer

            try:
                msk_signer()
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            return
        for name in ("sasl_oauth_token_endpoint", "sasl_oauth_client_id"):
            if name not in given:
                raise ValueError(f"{name}: required with sasl_mechanism OAUTHBEARER (sasl_oauth_method oidc)")
        if self.sasl_oauth_client_secret is None and self.sasl_oauth_client_secret_file is None:
            raise ValueError("sasl_oauth_client_secret: required (SIZER_SASL_OAUTH_CLIENT_SECRET or "
                             "SIZER_SASL_OAUTH_CLIENT_SECRET_FILE)")
        if self.sasl_oauth_client_secret is not None and self.sasl_oauth_client_secret_file is not None:
            raise ValueError("sasl_oauth_client_secret: give SIZER_SASL_OAUTH_CLIENT_SECRET or "
                             "SIZER_SASL_OAUTH_CLIENT_SECRET_FILE, not both")
        if "sasl_aws_region" in given:
            raise ValueError("sasl_aws_region: not used with sasl_oauth_method oidc")

    def token_source(self) -> Any:
        """The OAUTHBEARER token source of these settings (one per settings object, so every
        client shares its cached token); None for other mechanisms."""
        if self.sasl_mechanism != "OAUTHBEARER":
            return None
        cached = self._token_source
        if cached is None:
            from streams.kafka import oauth

            if self.sasl_oauth_method == "aws-msk-iam":
                cached = oauth.MskIam(self.sasl_aws_region)
            else:
                cached = oauth.ClientCredentials(
                    self.sasl_oauth_token_endpoint, self.sasl_oauth_client_id,
                    lambda: self._secret(self.sasl_oauth_client_secret, self.sasl_oauth_client_secret_file),
                    self.sasl_oauth_scope)
            self._token_source = cached
        return cached

    def refused(self) -> str | None:
        """What these settings presented, for the line saying the broker refused to
        authenticate it: the OAUTHBEARER token's origin and claims; None otherwise."""
        source = self.token_source()
        if source is None:
            return None
        from streams.kafka.oauth import refusal

        return refusal(source)

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
        if self.sasl_mechanism in PASSWORD_MECHANISMS:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self._secret(self.sasl_password, self.sasl_password_file))
        elif self.sasl_mechanism == "OAUTHBEARER":
            from streams.kafka.oauth import AiokafkaTokens

            options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=AiokafkaTokens(self.token_source()))
        elif self.sasl_mechanism == "GSSAPI":
            options.update(sasl_mechanism="GSSAPI", sasl_kerberos_service_name=self.sasl_kerberos_service_name,
                           sasl_kerberos_domain_name=self.sasl_kerberos_domain_name)
        return options

    def kafka_python_client(self, role: str) -> dict[str, Any]:
        """`client(role)` for kafka-python's clients (the ACL admin): the same settings, the
        token source behind kafka-python's synchronous provider."""
        options = self.client(role)
        if self.sasl_mechanism == "OAUTHBEARER":
            from streams.kafka.oauth import kafka_python_tokens

            options["sasl_oauth_token_provider"] = kafka_python_tokens(self.token_source())
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
        if self.sasl_mechanism == "OAUTHBEARER":
            from streams.kafka.oauth import AiokafkaTokens

            return faust.OAuthCredentials(oauth_cb=AiokafkaTokens(self.token_source()), ssl_context=self.ssl_context())
        if self.sasl_mechanism == "GSSAPI":
            return faust.GSSAPICredentials(kerberos_service_name=self.sasl_kerberos_service_name,
                                           kerberos_domain_name=self.sasl_kerberos_domain_name,
                                           ssl_context=self.ssl_context())
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
