"""OAUTHBEARER (OIDC client credentials, AWS MSK IAM) and GSSAPI through the one client
configuration: what each needs, refused in one line naming the setting when missing;
the token endpoint asked as RFC 6749 says and its refusals named; every client (aiokafka,
faust, kafka-python's admin) handed the same token source. The broker side of OAUTHBEARER
is tests/integration/test_oauth.py; MSK and a Kerberos KDC cannot run here."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.errors import ConfigError, KafkaUnavailable
from streams.worker.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in list(os.environ):
        if variable.startswith(("SIZER_", "KAFKA_", "AWS_")):
            monkeypatch.delenv(variable)


@pytest.fixture
def endpoint():
    """An OIDC token endpoint on loopback: client `sizer` with secret `s3cret` gets a token
    valid 60 s; anyone else gets RFC 6749's invalid_client. Records each request's form."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            client, _, secret = base64.b64decode(self.headers["Authorization"].split()[1]).decode().partition(":")
            requests.append({"form": form, "client": client})
            ok = (client, secret) == ("sizer", "s3cret")
            body = {"access_token": f"token-{len(requests)}", "expires_in": 60} if ok else \
                {"error": "invalid_client", "error_description": "bad secret"}
            data = json.dumps(body).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token", requests
    server.shutdown()


def sizer_env(monkeypatch, **settings: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"SIZER_{name.upper()}", value)


def oauth_env(monkeypatch, tmp_path, url: str, secret: str = "s3cret") -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(secret + "\n")
    sizer_env(monkeypatch, security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_endpoint=url,
              sasl_oauth_client_id="sizer", sasl_oauth_client_secret_file=str(secret_file), sasl_oauth_scope="kafka")


def test_oauthbearer_clients_share_one_cached_token_from_the_endpoint(monkeypatch, tmp_path, endpoint):
    url, requests = endpoint
    oauth_env(monkeypatch, tmp_path, url)
    settings = load_settings()
    worker, audit = settings.client("worker"), settings.client("audit")
    assert worker["sasl_mechanism"] == "OAUTHBEARER" and "sasl_plain_password" not in worker
    assert asyncio.run(worker["sasl_oauth_token_provider"].token()) == "token-1"
    assert asyncio.run(audit["sasl_oauth_token_provider"].token()) == "token-1"  # cached: 80% of 60 s
    admin = settings.kafka_python_client("acls")["sasl_oauth_token_provider"]
    from kafka.net.sasl.oauth import AbstractTokenProvider

    assert isinstance(admin, AbstractTokenProvider) and admin.token() == "token-1"
    assert settings.faust_credentials().oauth_cb.source is settings.token_source()
    assert requests == [{"form": {"grant_type": ["client_credentials"], "scope": ["kafka"]}, "client": "sizer"}]
    assert "s3cret" not in repr(settings) + repr(settings.for_role("worker"))


def test_a_refused_client_secret_is_one_line_naming_the_client_and_the_oauth_error(monkeypatch, tmp_path, endpoint):
    url, _ = endpoint
    oauth_env(monkeypatch, tmp_path, url, secret="wrong")
    with pytest.raises(KafkaUnavailable) as raised:
        load_settings().token_source().token()
    assert str(raised.value) == (f"OAUTHBEARER: the token endpoint refused client sizer at {url}: "
                                 "HTTP 401 invalid_client bad secret")


def test_an_unreachable_token_endpoint_is_one_line(monkeypatch, tmp_path):
    oauth_env(monkeypatch, tmp_path, "http://127.0.0.1:9/token")
    with pytest.raises(KafkaUnavailable) as raised:
        load_settings().token_source().token()
    assert str(raised.value).startswith("OAUTHBEARER: cannot reach the token endpoint http://127.0.0.1:9/token: ")


@pytest.mark.parametrize("missing, named", [
    ("SIZER_SASL_OAUTH_TOKEN_ENDPOINT", "sasl_oauth_token_endpoint: required with sasl_mechanism OAUTHBEARER"),
    ("SIZER_SASL_OAUTH_CLIENT_ID", "sasl_oauth_client_id: required with sasl_mechanism OAUTHBEARER"),
    ("SIZER_SASL_OAUTH_CLIENT_SECRET_FILE", "sasl_oauth_client_secret: required"),
])
def test_oauthbearer_without_what_it_needs_stops_start_up_naming_it(monkeypatch, tmp_path, missing, named):
    oauth_env(monkeypatch, tmp_path, "https://idp.example/token")
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert named in str(raised.value)


def test_a_password_with_oauthbearer_or_oauth_settings_with_scram_are_refused(monkeypatch, tmp_path):
    oauth_env(monkeypatch, tmp_path, "https://idp.example/token")
    monkeypatch.setenv("SIZER_SASL_USERNAME", "sizer-worker")
    with pytest.raises(ConfigError, match="sasl_username, sasl_password: not used with sasl_mechanism OAUTHBEARER"):
        load_settings()
    monkeypatch.delenv("SIZER_SASL_USERNAME")
    monkeypatch.setenv("SIZER_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(ConfigError, match="sasl_username: required"):
        load_settings()
    monkeypatch.setenv("SIZER_SASL_USERNAME", "u")
    monkeypatch.setenv("SIZER_SASL_PASSWORD", "p")
    with pytest.raises(ConfigError, match="sasl_oauth_\\*, sasl_aws_region: set, but sasl_mechanism is SCRAM-SHA-512"):
        load_settings()


def test_aws_msk_iam_signs_a_token_for_the_region_with_the_environment_credentials(monkeypatch):
    pytest.importorskip("aws_msk_iam_sasl_signer")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "OAUTHBEARER")
    sizer_env(monkeypatch, sasl_oauth_method="aws-msk-iam", sasl_aws_region="eu-west-1")
    settings = load_settings()
    token = asyncio.run(settings.client("worker")["sasl_oauth_token_provider"].token())
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/")
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/") and "/eu-west-1/kafka-cluster/" in \
        query["X-Amz-Credential"][0]


def test_aws_msk_iam_needs_its_region_and_no_oidc_settings(monkeypatch, tmp_path):
    sizer_env(monkeypatch, security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_method="aws-msk-iam")
    with pytest.raises(ConfigError, match="sasl_aws_region: required with sasl_oauth_method aws-msk-iam"):
        load_settings()
    monkeypatch.setenv("SIZER_SASL_AWS_REGION", "eu-west-1")
    monkeypatch.setenv("SIZER_SASL_OAUTH_CLIENT_ID", "sizer")
    with pytest.raises(ConfigError, match="sasl_oauth_client_id: not used with sasl_oauth_method aws-msk-iam"):
        load_settings()


def test_aws_msk_iam_without_its_package_names_the_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_signer(name, *args, **kwargs):
        if name == "aws_msk_iam_sasl_signer":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_signer)
    sizer_env(monkeypatch, security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
              sasl_oauth_method="aws-msk-iam", sasl_aws_region="us-east-1")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "needs the aws-msk-iam-sasl-signer-python package (pip install 'sizer[aws]')" in str(raised.value)


def test_gssapi_hands_the_kerberos_service_to_every_client_or_names_the_missing_package(monkeypatch):
    sizer_env(monkeypatch, security_protocol="SASL_SSL", sasl_mechanism="GSSAPI", sasl_kerberos_service_name="kafka-prod")
    try:
        import gssapi  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError) as raised:
            load_settings()
        assert "sasl_mechanism GSSAPI: needs the gssapi package" in str(raised.value)
        return
    settings = load_settings()
    options = settings.client("worker")
    assert (options["sasl_mechanism"], options["sasl_kerberos_service_name"]) == ("GSSAPI", "kafka-prod")
    assert settings.faust_credentials().kerberos_service_name == "kafka-prod"
