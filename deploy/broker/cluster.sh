#!/usr/bin/env bash
# A local three-node Apache Kafka cluster (KAFKA_VERSION: 3.9.x or 4.x) in KRaft mode on loopback, from the
# same jars as deploy/broker/broker.sh, whose functions run each node: every node is
# broker and controller (a quorum of three), topics default to replication 3 with
# min.insync.replicas 2, and so do the transaction log and the offsets topic.
#   cluster.sh start [N]   start every node not running (or node N), wait until all answer
#   cluster.sh stop [N]    stop every node (or node N) cleanly
#   cluster.sh kill N      SIGKILL node N (a lost broker, for fault tests)
#   cluster.sh status      print the bootstrap addresses when every node is up
#   cluster.sh pid N       print node N's process id
# KAFKA_CLUSTER_HOME (default .kafka-cluster) holds one directory per node;
# KAFKA_CLUSTER_PORTS / KAFKA_CLUSTER_CONTROLLER_PORTS (three each, space-separated;
# default 19101-19103 and 19111-19113, apart from broker.sh's 19092-19095) the ports;
# KAFKA_CLUSTER_HEAP each node's java heap flags (default -Xms128m -Xmx512m);
# KAFKA_BROKER_SESSION_TIMEOUT_MS how soon a lost broker is fenced (3000 here).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cluster_home="${KAFKA_CLUSTER_HOME:-$root/.kafka-cluster}"
read -r -a ports <<< "${KAFKA_CLUSTER_PORTS:-19101 19102 19103}"
read -r -a controller_ports <<< "${KAFKA_CLUSTER_CONTROLLER_PORTS:-19111 19112 19113}"
nodes=(1 2 3)
if [[ ${#ports[@]} -ne 3 || ${#controller_ports[@]} -ne 3 ]]; then
  echo "KAFKA_CLUSTER_PORTS and KAFKA_CLUSTER_CONTROLLER_PORTS: three ports each" >&2; exit 2
fi
voters=""
for n in "${nodes[@]}"; do voters="${voters:+$voters,}$n@127.0.0.1:${controller_ports[$((n - 1))]}"; done
bootstrap=""
for n in "${nodes[@]}"; do bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:${ports[$((n - 1))]}"; done

# Run broker.sh's function $2 for node $1, in a subshell with that node's settings.
on_node() {
  local n="$1" action="$2"
  (
    export KAFKA_SECURITY=plaintext KAFKA_HOME="$cluster_home/node$n" KAFKA_NODE_ID="$n"
    export KAFKA_PORT="${ports[$((n - 1))]}" KAFKA_CONTROLLER_PORT="${controller_ports[$((n - 1))]}"
    export KAFKA_QUORUM_VOTERS="$voters" KAFKA_CLUSTER_ID="$(cat "$cluster_home/cluster.id" 2>/dev/null || true)"
    export KAFKA_REPLICATION=3 KAFKA_MIN_ISR=2 KAFKA_HEAP="${KAFKA_CLUSTER_HEAP:--Xms128m -Xmx512m}"
    # a lost broker's leaderships move after 3 s, not Kafka's 9 (the 5 s target of a broker loss)
    export KAFKA_BROKER_SESSION_TIMEOUT_MS="${KAFKA_BROKER_SESSION_TIMEOUT_MS:-3000}"
    # shellcheck source=broker.sh
    source "$here/broker.sh"
    "$action"
  )
}

cluster_id() {
  mkdir -p "$cluster_home"
  [[ -f "$cluster_home/cluster.id" ]] && return 0
  (
    export KAFKA_HOME="$cluster_home/node1"
    # shellcheck source=broker.sh
    source "$here/broker.sh"
    resolve_jars
    java_run kafka.tools.StorageTool random-uuid 2>/dev/null > "$cluster_home/cluster.id"
  )
}

is_running() { on_node "$1" running; }

pick() { if [[ -n "${1:-}" ]]; then check_node "$1"; echo "$1"; else echo "${nodes[@]}"; fi; }

check_node() { [[ "$1" =~ ^[123]$ ]] || { echo "node: 1, 2 or 3, not $1" >&2; exit 2; }; }

start() {
  on_node 1 check_waits
  cluster_id
  local n launched=()
  for n in $(pick "${1:-}"); do
    if ! is_running "$n"; then on_node "$n" launch; launched+=("$n"); fi
  done
  # a node's broker starts once a quorum of controllers is up: launch all, then wait
  for n in "${launched[@]}"; do on_node "$n" wait_started; done
  echo "$bootstrap"
}

stop() {
  local n
  # all at once: a node stopping last, alone, waits for a quorum that is gone
  for n in $(pick "${1:-}"); do on_node "$n" stop & done
  wait
}

status() {
  local n down=()
  for n in "${nodes[@]}"; do
    if ! is_running "$n" || ! on_node "$n" answers; then down+=("$n"); fi
  done
  if [[ ${#down[@]} -gt 0 ]]; then echo "not running: node ${down[*]}" >&2; exit 1; fi
  echo "$bootstrap"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  kill) check_node "${2:-}"; is_running "$2" && kill -KILL "$(cat "$cluster_home/node$2/broker.pid")"; true ;;
  pid) check_node "${2:-}"; cat "$cluster_home/node$2/broker.pid" ;;
  status) status ;;
  *) echo "usage: $0 start [N]|stop [N]|kill N|status|pid N" >&2; exit 2 ;;
esac
