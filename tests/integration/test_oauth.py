"""OAUTHBEARER on the real broker: the secured broker of broker.sh with Kafka's own JWT
validator (OAuthBearerValidatorCallbackHandler) reading the JWKS of a token issuer this
module starts (an OIDC token endpoint granting client credentials, RS256 JWTs). The
product's client gets its token from the endpoint; a valid one is accepted, an expired
one and one for another audience are refused in one line, as is a wrong client secret."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

jwt = pytest.importorskip("jwt")
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from tests.integration.harness import ROOT, SIZER, Broker  # noqa: E402

pytestmark = pytest.mark.broker

AUDIENCE = "kafka"
# client id -> (secret, subject, audience, lifetime in seconds)
CLIENTS = {
    "sizer-setup": ("setup-secret", "admin", AUDIENCE, 600),
    "expired": ("expired-secret", "admin", AUDIENCE, -120),
    "elsewhere": ("elsewhere-secret", "admin", "payments", 600),
}


class Issuer:
    """An OIDC token endpoint (client_credentials, client_secret_basic) and its JWKS file."""

    def __init__(self, home: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = home / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [{**public, "kid": "test-key", "use": "sig", "alg": "RS256"}]}))
        self.granted: list[str] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
                client, _, secret = base64.b64decode(encoded).decode().partition(":") if scheme == "Basic" else ("", "", "")
                known = CLIENTS.get(urllib.parse.unquote(client))
                if form.get("grant_type") != ["client_credentials"] or known is None or \
                        known[0] != urllib.parse.unquote(secret):
                    return self.answer(401, {"error": "invalid_client", "error_description": "unknown client or secret"})
                _, subject, audience, lifetime = known
                now = int(time.time())
                token = jwt.encode({"sub": subject, "aud": audience, "iat": now - 300, "exp": now + lifetime,
                                    "iss": "test-issuer", "scope": " ".join(form.get("scope", []))},
                                   issuer.key, algorithm="RS256", headers={"kid": "test-key"})
                issuer.granted.append(client)
                self.answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": max(lifetime, 1)})

            def answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def oauth_broker(tmp_path_factory):
    home = tmp_path_factory.mktemp("kafka-oauth")
    issuer = Issuer(tmp_path_factory.mktemp("issuer"))
    broker = Broker(home, security="sasl_ssl", KAFKA_OAUTH_JWKS=str(issuer.jwks), KAFKA_OAUTH_AUDIENCE=AUDIENCE)
    broker.start()
    try:
        yield broker, issuer
    finally:
        broker.stop()
        issuer.close()


def sizer_as(oauth_broker, client: str, *args: str, secret: str | None = None) -> subprocess.CompletedProcess:
    broker, issuer = oauth_broker
    secret_file = broker.home / f"{client}.secret"
    secret_file.write_text((secret or CLIENTS[client][0]) + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIZER_", "SIZING_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_SECURITY_PROTOCOL="SASL_SSL",
               KAFKA_SASL_MECHANISM="OAUTHBEARER", SIZER_SSL_CAFILE=str(broker.home / "tls" / "ca.pem"),
               SIZER_SASL_OAUTH_TOKEN_ENDPOINT=issuer.endpoint, SIZER_SASL_OAUTH_CLIENT_ID=client,
               SIZER_SASL_OAUTH_CLIENT_SECRET_FILE=str(secret_file), SIZER_SASL_OAUTH_SCOPE="kafka",
               SIZER_TOPIC_PREFIX=f"oauth-{client}-")
    return subprocess.run([SIZER, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_valid_token_from_the_token_endpoint_is_accepted(oauth_broker):
    done = sizer_as(oauth_broker, "sizer-setup", "topics", "apply")
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout and "oauth-sizer-setup-signals" in done.stdout, done.stdout
    assert "sizer-setup" in oauth_broker[1].granted
    assert sizer_as(oauth_broker, "sizer-setup", "topics", "apply", "--check").returncode == 0


def test_an_expired_token_is_refused_in_one_line(oauth_broker):
    done = sizer_as(oauth_broker, "expired", "topics", "apply")
    line = one_line(done)
    assert done.returncode == 4, done.stderr
    assert "OAUTHBEARER" in line and "refused" in line and "expired" in line and "client expired" in line, line


def test_a_token_for_another_audience_is_refused_in_one_line(oauth_broker):
    done = sizer_as(oauth_broker, "elsewhere", "topics", "apply")
    line = one_line(done)
    assert done.returncode == 4, done.stderr
    assert "OAUTHBEARER" in line and "refused" in line and "aud=payments" in line, line


def test_a_wrong_client_secret_is_refused_by_the_token_endpoint_in_one_line(oauth_broker):
    done = sizer_as(oauth_broker, "sizer-setup", "topics", "apply", secret="not-the-secret")
    line = one_line(done)
    assert done.returncode == 4, done.stderr
    assert "token endpoint refused client sizer-setup" in line and "invalid_client" in line, line
    assert "not-the-secret" not in done.stderr + done.stdout
