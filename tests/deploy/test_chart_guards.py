"""A chart that refuses mistakes and passes the linters an SRE runs: values.schema.json
rejects misspelt and ill-typed values at `helm template`/`install`; what renders is
clean by kube-score and by kubernetes-validate --strict on 1.30 and the newest schemas;
mTLS, NetworkPolicy, ephemeral storage, anti-affinity, JSON logs, the setup principal."""

from __future__ import annotations

import json
import subprocess
import tomllib

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT, by_kind, render

CRDS = {"ServiceMonitor", "PrometheusRule"}
REGISTRY = ["--set", "schemaRegistry.url=https://registry.example:8081/apis/ccompat/v6",
            "--set", "schemaRegistry.username=sizer-key", "--set", "schemaRegistry.existingSecret=sizer-registry",
            "--set", "schemaRegistry.caSecret=registry-ca",
            "--set-json", 'schemaRegistry.to=[{"ipBlock": {"cidr": "10.1.2.0/24"}}]']
EVERYTHING = ["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.password=worker-secret",
              "--set", "setupJob.sasl.password=setup-secret", "--set", "kafka.tls.caSecret=kafka-ca",
              "--set", "kafka.tls.clientSecret=sizer-client-tls", "--set", "kafka.tls.keyPasswordKey=password",
              "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
              "--set", "grafanaDashboard.enabled=true", *REGISTRY]
MTLS = ["--set", "kafka.securityProtocol=SSL", "--set", "kafka.tls.caSecret=kafka-ca",
        "--set", "kafka.tls.clientSecret=sizer-client-tls"]


def refused(helm: str, *args: str) -> str:
    done = subprocess.run([helm, "template", "sizer", str(CHART), *args], capture_output=True, text=True)
    assert done.returncode != 0, f"rendered: {args}"
    return done.stderr


@pytest.mark.parametrize("args, named", [
    (["--set", "kafka.securityProtcol=SASL_SSL"], "securityProtcol"),
    (["--set", "replicaCount=two"], "replicaCount"),
    (["--set", "kafka.securityProtocol=SASL_TLS"], "securityProtocol"),
    (["--set", "kafka.sasl.mechanism=SCRAM-SHA-1"], "mechanism"),
    (["--set", "logFormat=yaml"], "logFormat"),
    (["--set", "kafka.bootstrap=kafka"], "bootstrap"),
    (["--set", "sizing.preset=aggressive"], "preset"),
    (["--set", "resources.limits.memory=lots"], "memory"),
    (["--set", "extraEnv[0].name=KAFKA_HEAP_OPTS", "--set", "extraEnv[0].value=x"], "name"),
    (["--set", "setupJob.sasl.user=admin"], "user"),
    (["--set", "podAntiAffinity=sometimes"], "podAntiAffinity"),
    (["--set", "networkPolicy.enable=false"], "enable"),
    (["--set", "monitoring.job=a b"], "job"),
    (["--set", "topics.replicationFactr=3"], "replicationFactr"),
    (["--set", "topics.minInsyncReplicas=0"], "minInsyncReplicas"),
    (["--set", "requireRegistration=yes"], "requireRegistration"),
    # below the broker's group.min.session.timeout.ms (6 s by default) and the workers' 3 s heartbeat
    (["--set-json", "kafka.sessionTimeoutSeconds=2"], "sessionTimeoutSeconds"),
    # credentials in the URL would be printed by `sizer config` and named by every registry error
    (["--set", "schemaRegistry.url=https://key:secret@registry.example"], "url"),
    (["--set", "schemaRegistry.url=registry:8081"], "url"),
    (["--set", "schemaRegistry.inputs=avro"], "inputs"),
    (["--set", "schemaRegistry.user=key"], "user"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_mistaken_value_fails_naming_it(helm, args, named):
    error = refused(helm, *args)
    assert "values don't meet the specifications of the schema" in error and named in error, error


def test_the_values_file_and_every_documented_option_pass_the_schema(helm):
    render(helm, *EVERYTHING)
    render(helm, *MTLS, "--set", "networkPolicy.enabled=false", "--set", "podAntiAffinity=hard")


@pytest.mark.parametrize("version", ["1.30", "1.37"])
@pytest.mark.parametrize("args", [[], EVERYTHING, MTLS], ids=["defaults", "everything", "mtls"])
def test_what_renders_validates_strictly(helm, version, args):
    for doc in render(helm, *args):
        if doc["kind"] not in CRDS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("args", [[], EVERYTHING, MTLS], ids=["defaults", "everything", "mtls"])
def test_kube_score_finds_nothing(helm, kube_score, args):
    manifests = yaml.safe_dump_all([doc for doc in render(helm, *args) if doc["kind"] not in CRDS])
    done = subprocess.run([kube_score, "score", "--output-format", "ci", "--exit-one-on-warning", "-"],
                          input=manifests, capture_output=True, text=True)
    problems = [line for line in done.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert done.returncode == 0 and not problems, "\n".join(problems) or done.stdout + done.stderr


def test_kube_score_would_catch_a_pod_without_network_policy_or_ephemeral_storage(helm, kube_score):
    docs = [doc for doc in render(helm, "--set", "networkPolicy.enabled=false") if doc["kind"] not in CRDS]
    for doc in docs:
        if doc["kind"] == "StatefulSet":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["resources"]["limits"].pop("ephemeral-storage")
    done = subprocess.run([kube_score, "score", "--output-format", "ci", "-"], input=yaml.safe_dump_all(docs),
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "NetworkPolicy" in done.stdout and "ephemeral" in done.stdout.lower(), done.stdout


def worker_pod(kinds: dict[str, list[dict]]) -> tuple[dict, dict, dict[str, str | None]]:
    """The one worker StatefulSet's pod spec, its one container and that container's
    environment (name: value; None for a value taken from a secret)."""
    deployment, = kinds["StatefulSet"]
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    return pod, container, {item["name"]: item.get("value") for item in container["env"]}


def test_mtls_mounts_the_client_certificate_and_key_and_names_them_to_the_client(helm):
    pod, container, env = worker_pod(by_kind(render(helm, *EVERYTHING)))
    assert env["SIZER_SSL_CERTFILE"] == "/etc/sizer/tls/client.crt"
    assert env["SIZER_SSL_KEYFILE"] == "/etc/sizer/tls/client.key"
    assert env["SIZER_SSL_KEY_PASSWORD_FILE"] == "/etc/sizer/tls/client.key.password"
    assert env["SIZER_SSL_CAFILE"] == "/etc/sizer/tls/ca.crt"
    tls, = [volume for volume in pod["volumes"] if volume["name"] == "kafka-tls"]
    paths = {item["path"]: (source["secret"]["name"], item["key"]) for source in tls["projected"]["sources"]
             for item in source["secret"]["items"]}
    assert paths == {"ca.crt": ("kafka-ca", "ca.crt"), "client.crt": ("sizer-client-tls", "tls.crt"),
                     "client.key": ("sizer-client-tls", "tls.key"),
                     "client.key.password": ("sizer-client-tls", "password")}
    mount, = [mount for mount in container["volumeMounts"] if mount["name"] == "kafka-tls"]
    assert mount["mountPath"] == "/etc/sizer/tls" and mount["readOnly"] is True
    # no client certificate without TLS
    deployment, = by_kind(render(helm, "--set", "kafka.tls.clientSecret=sizer-client-tls"))["StatefulSet"]
    assert "SIZER_SSL_CERTFILE" not in json.dumps(deployment)


def test_the_network_policy_lets_in_metrics_and_out_only_kafka_and_dns(helm):
    kinds = by_kind(render(helm, "--set", "kafka.bootstrap=k1:9094\\,k2:9094\\,k3:9095",
                           "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector": {"matchLabels": '
                                         '{"kubernetes.io/metadata.name": "monitoring"}}}]'))
    policy, = kinds["NetworkPolicy"]
    deployment, = kinds["StatefulSet"]
    job, = kinds["Job"]
    for pods in (deployment, job):
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress, = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    kafka, dns = policy["spec"]["egress"]
    assert kafka["ports"] == [{"port": 9094, "protocol": "TCP"}, {"port": 9095, "protocol": "TCP"}]
    assert {port["port"] for port in dns["ports"]} == {53}


def test_workers_ask_for_ephemeral_storage_spread_over_nodes_and_log_json(helm):
    deployment, = by_kind(render(helm))["StatefulSet"]
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    assert container["resources"]["requests"]["ephemeral-storage"] and container["resources"]["limits"]["ephemeral-storage"]
    term, = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SIZER_LOG_FORMAT"] == "json"
    hard, = by_kind(render(helm, "--set", "podAntiAffinity=hard"))["StatefulSet"]
    assert hard["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    mine = by_kind(render(helm, "--set-json", 'affinity={"nodeAffinity": {}}'))["StatefulSet"][0]
    assert mine["spec"]["template"]["spec"]["affinity"] == {"nodeAffinity": {}}


def test_the_setup_job_runs_as_the_setup_principal_which_is_no_super_user(helm):
    job, = by_kind(render(helm, *EVERYTHING))["Job"]
    env = {item["name"]: item.get("value") for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SIZER_SASL_USERNAME"] == "sizer-setup"
    with (ROOT / "topics" / "acls.toml").open("rb") as handle:
        principals = tomllib.load(handle)["principals"]
    assert principals["setup"]["user"] == "sizer-setup"
    broker = (ROOT / "deploy" / "broker" / "broker.sh").read_text()
    super_users = [line for line in broker.splitlines() if line.startswith("super.users=")]
    assert super_users and "sizer-setup" not in super_users[0]


@pytest.mark.parametrize("name, value", [
    ("SIZER_SHUTDOWN_TIMEOUT_S", "shutdownTimeoutSeconds"),  # the grace would end before the worker's own stop
    ("SIZER_GROUP_INSTANCE_ID", "the pod's namespace and name"),  # every pod one static member: they fence each other
    ("SIZER_DATA_DIR", "persistence"),  # the local tables off the persistent volume
    ("SIZER_REPLICATION_FACTOR", "topics.replicationFactor"),  # the workers' changelogs unlike the Job's topics
    ("SIZER_SESSION_TIMEOUT_S", "kafka.sessionTimeoutSeconds"),
    ("SIZER_SCHEMA_REGISTRY_URL", "schemaRegistry.url"),  # the NetworkPolicy would not let the workers reach it
])
def test_extra_env_may_not_redefine_what_the_chart_sets(helm, name, value):
    # A second definition of a variable the chart sets wins in the pod (the last one does)
    # and silently undoes what the chart derives from its value: the termination grace, the
    # per-pod static membership, the volume.
    error = refused(helm, "--set", f"extraEnv[0].name={name}", "--set-string", "extraEnv[0].value=1")
    assert f"extraEnv: {name} is set by the chart" in error and value in error, error



def test_a_schema_registry_is_a_chart_value_its_password_a_mounted_secret_its_port_let_out(helm):
    kinds = by_kind(render(helm, *REGISTRY))
    pod, container, env = worker_pod(kinds)
    assert env["SIZER_SCHEMA_REGISTRY_URL"] == "https://registry.example:8081/apis/ccompat/v6"
    assert env["SIZER_SCHEMA_REGISTRY_INPUTS"] == "confluent"
    assert env["SIZER_SCHEMA_REGISTRY_USERNAME"] == "sizer-key"
    mount, = [m for m in container["volumeMounts"] if m["name"] == "schema-registry-password"]
    volume, = [v for v in pod["volumes"] if v["name"] == "schema-registry-password"]
    assert volume["secret"] == {"secretName": "sizer-registry", "items": [{"key": "password", "path": "password"}]}
    assert env["SIZER_SCHEMA_REGISTRY_PASSWORD_FILE"] == f"{mount['mountPath']}/password"
    mount, = [m for m in container["volumeMounts"] if m["name"] == "schema-registry-ca"]
    volume, = [v for v in pod["volumes"] if v["name"] == "schema-registry-ca"]
    assert volume["secret"] == {"secretName": "registry-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert env["SIZER_SCHEMA_REGISTRY_CAFILE"] == f"{mount['mountPath']}/ca.crt"
    policy, = kinds["NetworkPolicy"]
    kafka, registry, dns = policy["spec"]["egress"]
    assert registry == {"ports": [{"port": 8081, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]}
    for url, port in (("https://registry.example/apis/ccompat/v6", 443), ("http://registry:8081", 8081),
                      ("http://registry", 80)):
        policy, = by_kind(render(helm, "--set", f"schemaRegistry.url={url}"))["NetworkPolicy"]
        assert policy["spec"]["egress"][1]["ports"] == [{"port": port, "protocol": "TCP"}], url
    for doc in kinds["StatefulSet"] + kinds["NetworkPolicy"]:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    without, = by_kind(render(helm))["StatefulSet"]
    assert "SCHEMA_REGISTRY" not in json.dumps(without)


def test_registry_credentials_without_their_secret_or_url_stop_the_render(helm):
    error = refused(helm, "--set", "schemaRegistry.url=https://registry.example", "--set", "schemaRegistry.username=k")
    assert "schemaRegistry.existingSecret: required with schemaRegistry.username" in error, error
    error = refused(helm, "--set", "schemaRegistry.username=k", "--set", "schemaRegistry.existingSecret=s")
    assert "set, but schemaRegistry.url is not" in error, error
    error = refused(helm, "--set", "schemaRegistry.url=http://registry:8081", "--set", "schemaRegistry.caSecret=ca")
    assert "schemaRegistry.caSecret: set, but schemaRegistry.url is not https" in error, error
