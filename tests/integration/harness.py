"""Running the real thing for integration tests: the project's own Kafka broker,
per-test topics and app ids, `sizer worker` subprocesses, and waiting on Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from aiokafka.errors import KafkaConnectionError

from streams.kafka.io import Record, end_offsets, publish, read_topic, wait_consumed
from streams.kafka.settings import ClientConfig, ConnectionSettings
from streams.worker.settings import WorkerSettings
from streams.kafka.topics import Replication, TopicSet, apply, load_topics
from streams.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]
BROKER_SCRIPT = ROOT / "deploy" / "broker" / "broker.sh"
SIZER = str(Path(sys.executable).with_name("sizer"))


def kafka_version() -> str:
    """The Kafka release the test broker runs: KAFKA_VERSION, else deploy/pom.xml's
    default (what broker.sh starts)."""
    import re

    pom = (ROOT / "deploy" / "pom.xml").read_text()
    return os.environ.get("KAFKA_VERSION") or re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)


class Broker:
    """The project's KRaft broker on its own ports and data directory, for one test session."""

    def __init__(self, home: Path, security: str = "plaintext", **extra: str) -> None:
        """`extra`: more of broker.sh's variables (KAFKA_OAUTH_JWKS, ...)."""
        self.home = home
        self.port, controller_port, internal_port = free_ports(3)  # one reservation: never one port twice
        self.env = {**os.environ, "KAFKA_HOME": str(home), "KAFKA_PORT": str(self.port),
                    "KAFKA_CONTROLLER_PORT": str(controller_port), "KAFKA_INTERNAL_PORT": str(internal_port),
                    "KAFKA_SECURITY": security, **extra}
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        done = subprocess.run(["bash", str(BROKER_SCRIPT), "start"], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            # `start` gives up on a broker slow to answer but leaves it running: nothing of this
            # test's may outlive it
            self.stop()
            raise RuntimeError(f"the Kafka broker did not start:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        subprocess.run(["bash", str(BROKER_SCRIPT), "stop"], env=self.env, capture_output=True, text=True)


@dataclass
class Deployment:
    """One test's topics and app id on a broker."""

    bootstrap: str
    prefix: str
    app_id: str
    workdir: Path
    topics: TopicSet = field(init=False)
    # every topic's and changelog's replication: the harness's own env, unless given
    replication: Replication | None = None
    # the workers made for this deployment, for the data directory each takes by default
    made: list["Worker"] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.replication is None:
            # the replication of SIZER_REPLICATION_FACTOR / SIZER_MIN_INSYNC_REPLICAS, as the workers read it
            self.replication = ConnectionSettings(bootstrap=self.bootstrap).replication
        self.topics = load_topics(ROOT / "topics" / "topics.toml", self.prefix, replication=self.replication)

    @property
    def client(self) -> ClientConfig:
        """The tests' own Kafka client configuration (PLAINTEXT to the test broker)."""
        return WorkerSettings(bootstrap=self.bootstrap).for_role("test")

    @classmethod
    def create(cls, bootstrap: str, workdir: Path, replication: Replication | None = None) -> "Deployment":
        """This test's topics from the spec, at `replication` (default: the env's), as
        its workers' changelogs."""
        tag = uuid.uuid4().hex[:10]
        deployment = cls(bootstrap, f"t{tag}-", f"sizer-test-{tag}", workdir, replication)
        asyncio.run(apply(deployment.client, deployment.topics))
        return deployment

    def env(self, **extra: str) -> dict[str, str]:
        assert self.replication is not None
        return {**os.environ, "SIZER_TOPIC_PREFIX": self.prefix, "SIZER_APP_ID": self.app_id,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "SIZER_REPLICATION_FACTOR": str(self.replication.factor),
                "SIZER_MIN_INSYNC_REPLICAS": str(self.replication.min_insync), **extra}

    def publish(self, entries: Iterable[tuple[str, Any]], keys: dict[int, bytes | None] | None = None) -> int:
        return asyncio.run(publish(self.client, self.topics, list(entries), keys))

    def publish_over(self, entries: list[tuple[str, Any]], seconds: float, chunks: int = 40) -> "Publisher":
        """Publish `entries` in order, in `chunks` spread over about `seconds`, from a
        background thread: an upstream that keeps producing while a test breaks things,
        and waits for the broker when it cannot reach it."""
        return Publisher(self, entries, seconds, chunks)

    def read(self, role: str, isolation_level: str = "read_committed", since: dict[int, int] | None = None
             ) -> list[Record]:
        """The committed records of `role`, from the beginning or from the offsets `since`
        (partition: offset, as `end_offsets` gave them)."""
        spec = self.topics[role]
        return asyncio.run(read_topic(self.client, spec.name, spec.partitions, isolation_level, since=since))

    def run_demo_session(self) -> list[Record]:
        """Publish the demo session and wait for a decision on every one of its signals."""
        from streams import demo_session

        session = list(demo_session.session())
        self.publish(session)
        return self.wait_for("decisions", sum(1 for role, _ in session if role == "signals"))

    def end_offsets(self, role: str) -> dict[int, int]:
        return asyncio.run(end_offsets(self.client, self.topics[role].name, self.topics[role].partitions))

    def wait_for(self, role: str, count: int, timeout_s: float = 60.0, since: dict[int, int] | None = None
                 ) -> list[Record]:
        """Poll `role` until it holds at least `count` committed records (from the
        offsets `since`, when given)."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self.read(role, since=since)
            if len(records) >= count:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topics.name(role)} has {len(records)} records, expected {count}")
            time.sleep(0.3)

    def wait_consumed(self, role: str, timeout_s: float = 60.0) -> None:
        """Wait until the worker group has committed every offset of `role` as of now."""
        asyncio.run(wait_consumed(self.client, self.app_id, self.topics[role].name,
                                  self.topics[role].partitions, timeout_s))

    def audit(self, *args: str, prefix: str | None = None) -> tuple[int, dict[str, Any], str]:
        """Run `sizer audit --json`; (exit code, report, stderr)."""
        import json

        env = self.env(**({"SIZER_TOPIC_PREFIX": prefix} if prefix else {}))
        done = subprocess.run([SIZER, "audit", "--json", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"audit printed no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.returncode, report, done.stderr

    def worker(self, *args: str, **env: str) -> "Worker":
        return Worker(self, list(args), env)


class Publisher(threading.Thread):
    """See `Deployment.publish_over`; `join` raises what made it stop early."""

    def __init__(self, deployment: Deployment, entries: list[tuple[str, Any]], seconds: float, chunks: int) -> None:
        super().__init__(name="publisher", daemon=True)
        self.deployment, self.entries, self.pause_s = deployment, entries, seconds / chunks
        self.size = max(1, -(-len(entries) // chunks))
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for start in range(0, len(self.entries), self.size):
                deadline = time.monotonic() + 120
                while True:
                    try:
                        self.deployment.publish(self.entries[start:start + self.size])
                        break
                    except KafkaConnectionError:  # no broker to bootstrap from: nothing was sent
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise RuntimeError("the publisher stopped early") from self.error


class Worker:
    """A `sizer worker` subprocess with its own web port, data dir and log file."""

    def __init__(self, deployment: Deployment, args: list[str], env: dict[str, str]) -> None:
        self.deployment = deployment
        self.web_port = free_port()
        self.log_path = deployment.workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        # each worker its own data directory, as each pod its own volume (a worker refuses one
        # another holds): `data` unless a worker not yet ended has it (a restart reuses it)
        self.data_dir = env.pop("SIZER_DATA_DIR", None) or self.free_data_dir(deployment)
        deployment.made.append(self)
        self.args = args
        self.env = deployment.env(SIZER_WEB_PORT=str(self.web_port), SIZER_DATA_DIR=self.data_dir, **env)
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def free_data_dir(deployment: Deployment) -> str:
        taken = {worker.data_dir for worker in deployment.made
                 if worker.process is None or worker.process.poll() is None}
        return next(path for n in range(1, len(taken) + 2)
                    if (path := str(deployment.workdir / ("data" if n == 1 else f"data-{n}"))) not in taken)

    def start(self, ready_timeout_s: float = 90.0) -> "Worker":
        self.spawn()
        self.wait_ready(ready_timeout_s)
        return self

    def spawn(self) -> "Worker":
        """Start the process and return at once."""
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([SIZER, "worker", *self.args], env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=self.deployment.workdir)
        return self

    def health(self, check: str) -> tuple[int, dict[str, Any]] | None:
        """(HTTP status, body) of /health/<check> ("live" or "ready"); None while nothing answers."""
        import json
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health/{check}", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError:
            return None

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until /health/ready says 200: tables recovered, partitions assigned, instruments caught up."""
        deadline = time.monotonic() + timeout_s
        while (answer := self.health("ready")) is None or answer[0] != 200:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout_s} s ({answer}):\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 60.0, occurrences: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while self.log().count(text) < occurrences:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker log has no {text!r} after {timeout_s} s:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """Graceful stop (SIGTERM), as an operator would."""
        return self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> int:
        return self._end(signal.SIGKILL, 30.0)

    def _end(self, sig: int, timeout_s: float) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


def decisions_by_signal(records: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        decision = record.json()
        result.setdefault(decision["signal_id"], []).append(decision)
    return result


def eventually(check: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout_s} s")
        time.sleep(0.3)
