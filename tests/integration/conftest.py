from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from streams.bench.cluster import Cluster
from streams.kafka.topics import Replication
from tests.integration.harness import BROKER_SCRIPT, Broker, Deployment
from tests.integration.prometheus import prometheus  # noqa: F401 - a fixture of every integration test

pytestmark = pytest.mark.broker


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.broker)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The release of the project's broker (KAFKA_VERSION), checked and its jars resolved
    once, before any test runs: a release that is no release or that Maven cannot
    resolve stops the run in one line, not as an error of every broker test."""
    if session.config.option.collectonly or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return
    if not any(item.get_closest_marker("broker") for item in session.items):
        return
    done = subprocess.run(["bash", str(BROKER_SCRIPT), "resolve"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.exit(done.stderr.strip() or f"broker.sh resolve exited {done.returncode}", returncode=4)


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory) -> str:
    """A real Apache Kafka broker: KAFKA_BOOTSTRAP_SERVERS when set, else the
    project's own KRaft broker, started once for the session and stopped after."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    """The project's three-node KRaft cluster (deploy/broker/cluster.sh), started once
    for the session and stopped after; tests that kill nodes start them again."""
    cluster = Cluster.at(tmp_path_factory.mktemp("kafka-cluster"), fresh_ports=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def replicated(cluster: Cluster, tmp_path: Path) -> Deployment:
    """This test's own topics on the cluster, replicated 3 (min.insync.replicas 2)."""
    cluster.start()  # a node an earlier test killed
    return Deployment.create(cluster.bootstrap, tmp_path, replication=Replication(3, 2))


@pytest.fixture
def deployment(bootstrap: str, tmp_path: Path) -> Deployment:
    """This test's own topics (created from the spec) and application id."""
    return Deployment.create(bootstrap, tmp_path)


@pytest.fixture
def workers_on():
    """`workers_on(deployment)(*args, **env)` starts a worker; every one is stopped after the test."""
    started = []

    def on(deployment: Deployment):
        def start(*args: str, **env: str):
            worker = deployment.worker(*args, **env).start()
            started.append(worker)
            return worker

        return start

    yield on
    for worker in started:
        if worker.alive():
            worker.kill()


@pytest.fixture
def workers(deployment: Deployment, workers_on):
    """Start workers with `workers(*args, **env)`; every one is stopped after the test."""
    return workers_on(deployment)
