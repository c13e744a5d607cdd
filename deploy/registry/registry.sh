#!/usr/bin/env bash
# A local Schema Registry with Confluent's REST API: Apicurio Registry (in-memory
# storage, H2), built from Maven Central's io.apicurio:apicurio-registry-app by the
# Quarkus build of deploy/registry/pom.xml, and run from its fast-jar on loopback.
#   registry.sh start   build once (cached), start on a free port, wait until the
#                       Confluent-compatible API answers; prints its URL
#   registry.sh stop    stop it (SIGTERM, then wait)
#   registry.sh status  print the URL when it is up
#   registry.sh build   only the build (what `start` does first when needed)
# The URL is the one SIZER_SCHEMA_REGISTRY_URL takes: http://127.0.0.1:PORT/apis/ccompat/v6.
# REGISTRY_HOME (default .registry in the project) holds the log, pid and port,
# REGISTRY_BUILD (default .registry/build) the build, shared by every home;
# REGISTRY_PORT fixes the port (default: a free one); REGISTRY_START_TIMEOUT_S (120)
# how long `start` waits; REGISTRY_JAVA_HOME the JDK (default: java on PATH, 17+).
# Storage is in memory: every start begins empty.
#
# Why 2.4.2.Final: of the Apicurio releases Maven Central serves here, it is the newest
# whose modules all resolve (3.3.x lacks apicurio-registry-schema-util-provider and
# -schema-util-json, 2.5/2.6 lack -schema-util-provider and -utils-import-export, 3.0.9
# its parent POM). Two substitutions, both in the pom: everit's JSON Schema library
# from its Maven Central coordinates (com.github.erosb) instead of JitPack's, and the
# config-index build extension (deployment artifact not served) replaced by an empty
# list of run-time-changeable settings (src/main/java).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
home="${REGISTRY_HOME:-$root/.registry}"
build="${REGISTRY_BUILD:-$root/.registry/build}"
app="$build/quarkus-app"
pidfile="$home/registry.pid"
portfile="$home/registry.port"
start_timeout_s="${REGISTRY_START_TIMEOUT_S:-120}"
java="${REGISTRY_JAVA_HOME:+$REGISTRY_JAVA_HOME/bin/}java"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

url() { echo "http://127.0.0.1:$(cat "$portfile")/apis/ccompat/v6"; }

# the build's inputs: a change to any of them builds again
fingerprint() { cat "$here/pom.xml" "$here"/src/main/resources/* "$here"/src/main/java/streams/sizer/registry/* | sha256sum | cut -c1-16; }

build_app() {
  local stamp; stamp="$(fingerprint)"
  [[ -f "$app/quarkus-run.jar" && "$(cat "$build/.complete" 2>/dev/null)" == "$stamp" ]] && return 0
  rm -rf "$build"; mkdir -p "$build"
  if ! mvn -B -Dstyle.color=never -f "$here/pom.xml" package -DskipTests \
      -Dregistry.build.dir="$build" >"$build.log" 2>&1; then
    echo "Schema Registry: the Maven build failed (deploy/registry/pom.xml); its errors (log: $build.log):" >&2
    grep -E '^\[ERROR\]' "$build.log" | head -n 5 >&2 || tail -n 5 "$build.log" >&2
    exit 1
  fi
  echo "$stamp" > "$build/.complete"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

answers() { curl -fsS -o /dev/null --max-time 2 "$(url)/subjects" 2>/dev/null; }

launch() {
  echo "${REGISTRY_PORT:-$(free_port)}" > "$portfile"
  # the registry outlives this script: it keeps none of the caller's descriptors beyond
  # its own three (a `flock LOCK registry.sh start` would otherwise hold LOCK until it stops)
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd="${fd##*/}"
      if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec nohup "$java" -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$(cat "$portfile")" \
      -Dquarkus.log.console.enable=true -Dquarkus.log.level=WARN \
      -jar "$app/quarkus-run.jar" >"$home/registry.log" 2>&1 </dev/null
  ) &
  echo $! > "$pidfile"
}

wait_started() {
  local deadline=$((SECONDS + start_timeout_s))
  until answers; do
    if ! running; then
      echo "Schema Registry exited during start-up; last lines of $home/registry.log:" >&2
      tail -n 20 "$home/registry.log" >&2 || true
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      echo "Schema Registry did not answer on $(url) within $start_timeout_s s (log: $home/registry.log);" \
           "still running, pid $(cat "$pidfile")" >&2
      exit 1
    fi
    sleep 0.25
  done
}

start() {
  mkdir -p "$home"
  if running && answers; then url; return 0; fi
  build_app
  running || launch
  wait_started
  url
}

stop() {
  if ! running; then rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid"
  for _ in $(seq 1 80); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.25
  done
  echo "Schema Registry did not stop within 20 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  build) build_app ;;
  status)
    if running && answers; then url; else echo "not running" >&2; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
