"""OAUTHBEARER tokens for every Kafka client of the product (`KafkaSettings.client`):
an OIDC token endpoint's client-credentials grant (RFC 6749 section 4.4), or AWS MSK
IAM through aws-msk-iam-sasl-signer-python. One `TokenSource` per settings object,
cached until 80% of its lifetime has passed, handed to aiokafka (async `token()`) and
to kafka-python's admin client (sync `token()`, `sizer acls`) through an adapter each.

Callers: `streams.kafka.settings` only."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol

from aiokafka.abc import AbstractTokenProvider as AiokafkaTokenProvider

from streams.errors import ConfigError, KafkaUnavailable

REFRESH_AT = 0.8  # of a token's lifetime
DEFAULT_LIFETIME_S = 300.0  # a response without expires_in


class TokenSource(Protocol):
    """Where a client's bearer token comes from."""

    def token(self) -> str:
        """A token valid now (fetched or cached). Raises KafkaUnavailable naming the cause."""
        ...

    def describe(self) -> str:
        """Where the token comes from, for error lines: never a secret."""
        ...

    def last(self) -> str | None:
        """The token handed out last, if any."""
        ...


def refusal(source: TokenSource) -> str:
    """What to say when the broker refused `source`'s token: where it came from and what
    the token claims (subject, audience, expiry); never the token."""
    token = source.last()
    said = claims(token) if token else ""
    return f"the broker refused the OAUTHBEARER token of {source.describe()}" + (f" ({said})" if said else "")


@dataclass
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str | None = None
    refresh_at: float = 0.0

    def get(self, fetch: Callable[[], tuple[str, float]]) -> str:
        """The cached token, or a new one from `fetch` -> (token, lifetime in seconds)."""
        with self.lock:
            now = time.monotonic()
            if self.token is None or now >= self.refresh_at:
                self.token, lifetime = fetch()
                self.refresh_at = now + max(lifetime, 0.0) * REFRESH_AT
            return self.token


class _Cached:
    """A token source whose tokens `_fetch` gets and `_cache` keeps."""

    _cache: _Cache

    def token(self) -> str:
        return self._cache.get(self._fetch)

    def last(self) -> str | None:
        return self._cache.token

    def _fetch(self) -> tuple[str, float]:
        raise NotImplementedError


@dataclass
class ClientCredentials(_Cached):
    """OIDC client credentials: POST grant_type=client_credentials (and `scope`) to
    `endpoint`, authenticated with HTTP Basic `client_id`:secret (client_secret_basic)."""

    endpoint: str
    client_id: str
    secret: Callable[[], str]
    scope: str | None = None
    timeout_s: float = 15.0
    _cache: _Cache = field(default_factory=_Cache, repr=False)

    def describe(self) -> str:
        return f"client {self.client_id} at {self.endpoint}"

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        basic = base64.b64encode(
            f"{urllib.parse.quote(self.client_id, safe='')}:{urllib.parse.quote(self.secret(), safe='')}".encode()
        ).decode()
        request = urllib.request.Request(
            self.endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - configured URL
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise KafkaUnavailable(f"OAUTHBEARER: the token endpoint refused {self.describe()}: "
                                   f"HTTP {exc.code} {_oauth_error(exc)}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KafkaUnavailable(f"OAUTHBEARER: cannot reach the token endpoint {self.endpoint}: {reason}") from None
        except ValueError:
            raise KafkaUnavailable(f"OAUTHBEARER: the token endpoint {self.endpoint} answered no JSON") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise KafkaUnavailable(f"OAUTHBEARER: the token endpoint {self.endpoint} answered no access_token")
        lifetime = body.get("expires_in", DEFAULT_LIFETIME_S)
        return token, float(lifetime) if isinstance(lifetime, (int, float)) else DEFAULT_LIFETIME_S


def _oauth_error(exc: urllib.error.HTTPError) -> str:
    """RFC 6749's `error` and `error_description` of a refusal, else its reason phrase."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    if isinstance(body, dict) and body.get("error"):
        return " ".join(str(body[key]) for key in ("error", "error_description") if body.get(key))
    return str(exc.reason)


@dataclass
class MskIam(_Cached):
    """AWS MSK IAM: a token signed with the AWS credentials of the environment (the
    default chain: variables, profile, web identity, instance role) for `region`."""

    region: str
    _cache: _Cache = field(default_factory=_Cache, repr=False)

    def describe(self) -> str:
        return f"AWS MSK IAM in {self.region}"

    def _fetch(self) -> tuple[str, float]:
        signer = msk_signer()
        try:
            token, expiry_ms = signer.generate_auth_token(self.region)
        except Exception as exc:  # noqa: BLE001 - botocore's errors vary; the cause is the line
            raise KafkaUnavailable(f"OAUTHBEARER: no AWS MSK IAM token for {self.region}: "
                                   f"{type(exc).__name__}: {exc}") from None
        return token, max(expiry_ms / 1000 - time.time(), 0.0)


def msk_signer():
    """aws_msk_iam_sasl_signer.MSKAuthTokenProvider, or ConfigError naming the package to install."""
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError:
        raise ConfigError("sasl_oauth_method aws-msk-iam: needs the aws-msk-iam-sasl-signer-python package "
                          "(pip install 'sizer[aws]')") from None
    return MSKAuthTokenProvider


class AiokafkaTokens(AiokafkaTokenProvider):
    """`source` for aiokafka's and faust's clients (the fetch runs in a thread)."""

    def __init__(self, source: TokenSource) -> None:
        from streams.faust_compat.oauth import install

        install()  # aiokafka must see the broker's refusal of a token as a refusal
        self.source = source

    async def token(self) -> str:
        return await asyncio.to_thread(self.source.token)


def kafka_python_tokens(source: TokenSource):
    """`source` for kafka-python's clients (`sizer acls`)."""
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class KafkaPythonTokens(AbstractTokenProvider):
        def token(self) -> str:
            return source.token()

    return KafkaPythonTokens()


def claims(token: str) -> str:
    """What a JWT says of itself (subject, audience, expiry), unverified, for the line that
    reports a refused token: '' when the token is not a JWT."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    parts = []
    if "sub" in data:
        parts.append(f"sub={data['sub']}")
    if "aud" in data:
        audience = data["aud"] if isinstance(data["aud"], list) else [data["aud"]]
        parts.append("aud=" + ",".join(str(item) for item in audience))
    if isinstance(data.get("exp"), (int, float)):
        expiry = datetime.fromtimestamp(data["exp"], timezone.utc)
        state = "expired" if data["exp"] <= time.time() else "expires"
        parts.append(f"{state} {expiry.isoformat(timespec='seconds').replace('+00:00', 'Z')}")
    return " ".join(parts)
