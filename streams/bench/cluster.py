"""The local three-node cluster (`deploy/broker/cluster.sh`) from Python: for `make
chaos`, the recovery benchmark and the broker tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from streams.ports import free_ports

CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "broker" / "cluster.sh"


class Cluster:
    """deploy/broker/cluster.sh with its environment (KAFKA_CLUSTER_HOME, its ports);
    nodes 1 to 3, which are also their node ids."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.ports = [int(port) for port in env.get("KAFKA_CLUSTER_PORTS", "19101 19102 19103").split()]
        self.bootstrap = ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @classmethod
    def at(cls, home: Path | None = None, fresh_ports: bool = False) -> "Cluster":
        """The cluster in `home` (default: the project's .kafka-cluster) on its default
        ports, or on free ones."""
        env = dict(os.environ)
        if home is not None:
            env["KAFKA_CLUSTER_HOME"] = str(home)
        if fresh_ports:
            ports = free_ports(6)
            env["KAFKA_CLUSTER_PORTS"] = " ".join(map(str, ports[:3]))
            env["KAFKA_CLUSTER_CONTROLLER_PORTS"] = " ".join(map(str, ports[3:]))
        return cls(env)

    def run(self, *args: str) -> str:
        done = subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def start(self, node: int | None = None) -> None:
        """Start every node not running (or `node`) and wait until it has started; when
        that fails, the nodes it launched are stopped again (cluster.sh gives up on a node
        slow to answer but leaves it running)."""
        nodes = [str(node)] if node else []
        try:
            self.run("start", *nodes)
        except RuntimeError:
            subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", *nodes], env=self.env, capture_output=True)
            raise

    def stop(self, node: int | None = None) -> None:
        self.run("stop", *([str(node)] if node else []))

    def kill(self, node: int) -> None:
        """SIGKILL one node: a lost broker."""
        self.run("kill", str(node))
