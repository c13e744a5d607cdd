"""The Helm chart under deploy/helm/sizer: `helm lint` passes, and what `helm
template` renders (defaults, and SASL_SSL with every option on) validates against
the Kubernetes schemas and says what an operator relies on."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import CHART, by_kind, render

KUBERNETES = "1.30"
SECURED = ["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.password=worker-secret",
           "--set", "setupJob.sasl.password=admin-secret", "--set", "kafka.tls.caSecret=kafka-ca",
           "--set", "serviceMonitor.enabled=true"]


def test_helm_lint_passes(helm):
    done = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("args", [[], SECURED], ids=["defaults", "sasl_ssl"])
def test_every_rendered_resource_validates_against_the_kubernetes_schemas(helm, args):
    docs = render(helm, *args)
    for doc in docs:
        if doc["kind"] in {"ServiceMonitor", "PrometheusRule"}:  # CRDs: no schema in Kubernetes itself
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert {doc["kind"] for doc in docs} >= {"StatefulSet", "ConfigMap", "Service", "PodDisruptionBudget", "Job"}


def test_the_validator_catches_a_broken_resource(helm):
    deployment, = by_kind(render(helm))["StatefulSet"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_workers_are_probed_non_root_limited_and_get_secrets_from_files(helm):
    kinds = by_kind(render(helm, *SECURED))
    deployment, = kinds["StatefulSet"]
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SIZER_SECURITY_PROTOCOL"] == "SASL_SSL" and env["SIZER_SASL_PASSWORD_FILE"] == "/etc/sizer/kafka/password"
    assert "worker-secret" not in yaml.safe_dump(deployment)  # only in the Secret
    assert env["SIZER_WEB_HOST"] == "0.0.0.0"  # the probes reach it from the kubelet
    secrets = {secret["metadata"]["name"]: secret for secret in kinds["Secret"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["kafka-password"]["secret"]["secretName"] in secrets
    assert volumes["sizing"]["configMap"]["name"] == kinds["ConfigMap"][0]["metadata"]["name"]
    assert container["args"] == ["worker", "--config", "/etc/sizer/sizing.toml"]
    assert 'preset = "conviction"' in kinds["ConfigMap"][0]["data"]["sizing.toml"]

    pdb, = kinds["PodDisruptionBudget"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor, = kinds["ServiceMonitor"]
    service, = kinds["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}

    job, = kinds["Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert script == "sizer topics apply --config /etc/sizer/sizing.toml && sizer acls apply"
    # the job's configuration is the workers' (a hook of its own: it runs before the release's ConfigMap exists)
    worker_config, job_config = kinds["ConfigMap"]
    assert job_config["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job_config["data"] == worker_config["data"]
    mounted, = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "sizing"]
    assert mounted["configMap"]["name"] == job_config["metadata"]["name"]
    # registration on: no producer grows the workers' state without bound
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SIZER_REQUIRE_REGISTRATION"] == "true"


def test_each_pod_mounts_only_its_own_principals_secret(helm):
    rendered = subprocess.run([helm, "template", "sizer", str(CHART), "--set", "kafka.securityProtocol=SASL_SSL",
                               "--set", "kafka.sasl.password=w", "--set", "setupJob.sasl.password=a"],
                              capture_output=True, text=True, check=True).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in docs if doc["kind"] == "Secret"}
    worker_secret, = [name for name, data in secrets.items() if "w" in data.values()]
    admin_secret, = [name for name, data in secrets.items() if "a" in data.values()]

    def mounted(kind: str) -> set[str]:
        pod, = [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] == kind]
        return {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}

    assert mounted("StatefulSet") == {worker_secret}
    assert mounted("Job") == {admin_secret}


def test_sasl_without_a_password_or_secret_does_not_render(helm):
    done = subprocess.run([helm, "template", "sizer", str(CHART), "--set", "kafka.securityProtocol=SASL_SSL"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "kafka.sasl.password" in done.stderr


def env_of(resource: dict) -> dict[str, str | None]:
    container, = resource["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value") for item in container["env"]}


@pytest.mark.parametrize("args, factor, min_isr", [
    ([], "3", "2"),
    (["--set", "topics.replicationFactor=5", "--set", "topics.minInsyncReplicas=3"], "5", "3"),
], ids=["defaults", "set"])
def test_the_topics_replication_reaches_the_setup_job_and_every_worker(helm, args, factor, min_isr):
    kinds = by_kind(render(helm, *args))
    job, = kinds["Job"]
    workers = [doc for kind in ("Deployment", "StatefulSet") for doc in kinds.get(kind, [])]
    assert workers
    for resource in [job, *workers]:
        env = env_of(resource)
        assert (env["SIZER_REPLICATION_FACTOR"], env["SIZER_MIN_INSYNC_REPLICAS"]) == (factor, min_isr)


def test_a_min_isr_above_the_replication_factor_does_not_render(helm):
    done = subprocess.run([helm, "template", "sizer", str(CHART), "--set", "topics.replicationFactor=2",
                           "--set", "topics.minInsyncReplicas=3"], capture_output=True, text=True)
    assert done.returncode != 0 and "topics.minInsyncReplicas" in done.stderr


def instance_id(container: dict, namespace: str, pod: str) -> str:
    """SIZER_GROUP_INSTANCE_ID as the kubelet sets it in pod `pod` of `namespace`: the
    downward API's fields, and `$(NAME)` replaced by a variable defined before it."""
    import re

    fields = {"metadata.namespace": namespace, "metadata.name": pod}
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            field = item["valueFrom"].get("fieldRef", {}).get("fieldPath")
            if field in fields:
                env[item["name"]] = fields[field]
        elif "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                       lambda ref: env.get(ref.group(1), ref.group(0)), item["value"])
    return env["SIZER_GROUP_INSTANCE_ID"]


def test_every_worker_pod_of_every_namespace_has_its_own_group_instance_id(helm):
    # Two releases in two namespaces on one Kafka cluster, under the same application id,
    # are one group: pods named alike would take each other's place (one stops, exit 2).
    workers, = by_kind(render(helm))["StatefulSet"]
    container, = workers["spec"]["template"]["spec"]["containers"]
    ids = {(namespace, pod): instance_id(container, namespace, pod)
           for namespace in ("desk-a", "desk-b") for pod in ("sizer-0", "sizer-1")}
    assert len(set(ids.values())) == 4, ids
    assert ids["desk-a", "sizer-0"] == "desk-a.sizer-0"


def test_workers_are_a_stateful_set_with_volumes_static_members_and_a_grace_past_their_stop(helm):
    workers, = by_kind(render(helm))["StatefulSet"]
    pod = workers["spec"]["template"]["spec"]
    container, = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    # a stable name per pod is its group.instance.id: a restart inside the session timeout moves nothing
    assert instance_id(container, "desk", "sizer-1") == instance_id(container, "desk", "sizer-1")
    # the local tables live on the pod's own volume, kept across restarts
    claim, = workers["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert env["SIZER_DATA_DIR"]["value"] == "/data"
    assert "data" not in {volume["name"] for volume in pod["volumes"]}
    # the kubelet never kills a worker that is still stopping on its own
    assert pod["terminationGracePeriodSeconds"] > float(env["SIZER_SHUTDOWN_TIMEOUT_S"]["value"])
    assert workers["spec"]["serviceName"] == by_kind(render(helm))["Service"][0]["metadata"]["name"]
