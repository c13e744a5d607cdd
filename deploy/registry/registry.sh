#!/usr/bin/env bash
# A local Schema Registry with Confluent's REST API: Apicurio Registry (in-memory
# storage, H2), built from Maven Central's io.apicurio:apicurio-registry-app by the
# Quarkus build of deploy/registry/pom.xml, and run from its fast-jar on loopback.
#   registry.sh start   build once (cached), start on a free port, wait until the
#                       Confluent-compatible API answers; prints its URL
#   registry.sh stop    stop it (SIGTERM, then wait)
#   registry.sh status  print the URL when it is up
#   registry.sh build   only the build (what `start` does first when needed; one at
#                       a time: a second waits for the first and uses what it built)
# The URL is the one SIZER_SCHEMA_REGISTRY_URL takes: http://127.0.0.1:PORT/apis/ccompat/v6.
# REGISTRY_HOME (default .registry in the project) holds the log, pid and port,
# REGISTRY_BUILD (default .registry/build) the build, shared by every home;
# REGISTRY_MAVEN_HOME (default ~/.cache/sizer/apache-maven-3.9.9, kept across clones as
# ~/.m2 is) Maven 3.9 when `mvn` is older;
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

# Maven 3.9's resolver collects a dependency tree with its POMs downloaded in parallel
# (the bf collector); 3.8's fetches them one at a time, and a cold build is ~1,200
# round trips to Maven Central. With an older `mvn` on PATH, Maven $maven_version is
# fetched once into $maven_home as the Maven Wrapper does: its distribution from Maven
# Central (one download), checked against the SHA-512 Maven Central publishes for it.
# MAVEN_OPTS reaches the build (e.g. -Dmaven.repo.local=DIR).
maven_version=3.9.9
maven_sha512=a555254d6b53d267965a3404ecb14e53c3827c09c3b94b5678835887ab404556bfaf78dcfe03ba76fa2508649dca8531c74bca4d5846513522404d48e8c4ac8b
maven_url="${REGISTRY_MAVEN_REPO:-https://repo.maven.apache.org/maven2}/org/apache/maven/apache-maven/$maven_version/apache-maven-$maven_version-bin.tar.gz"
maven_home="${REGISTRY_MAVEN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sizer/apache-maven-$maven_version}"

maven() {
  local found
  found="$(mvn -v 2>/dev/null | sed -e 's/\x1b\[[0-9;]*m//g' -n -e 's/^Apache Maven \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
  if [[ -n "$found" ]] && (( ${found% *} > 3 || (${found% *} == 3 && ${found#* } >= 9) )); then
    echo mvn; return 0
  fi
  if [[ ! -x "$maven_home/bin/mvn" ]]; then
    # into a directory of its own, renamed into place whole: another checkout fetching
    # at the same time keeps its own, and the first rename wins
    mkdir -p "$(dirname "$maven_home")"
    local fetched; fetched="$(mktemp -d "$maven_home.XXXXXX")"
    if ! curl -fsSL --retry 3 -o "$fetched/maven.tar.gz" "$maven_url"; then
      rm -rf "$fetched"
      echo "Schema Registry: could not download Maven $maven_version from $maven_url" >&2
      exit 1
    fi
    if [[ "$(sha512sum "$fetched/maven.tar.gz" | cut -d' ' -f1)" != "$maven_sha512" ]]; then
      rm -rf "$fetched"
      echo "Schema Registry: $maven_url does not have the SHA-512 Maven Central publishes for it" >&2
      exit 1
    fi
    mkdir "$fetched/maven"
    tar xzf "$fetched/maven.tar.gz" -C "$fetched/maven" --strip-components=1
    mv -T "$fetched/maven" "$maven_home" 2>/dev/null || true
    rm -rf "$fetched"
  fi
  echo "$maven_home/bin/mvn"
}

built() { [[ -f "$app/quarkus-run.jar" && "$(cat "$build/.complete" 2>/dev/null)" == "$(fingerprint)" ]]; }

build_app() {
  built && return 0
  # one build at a time: a `start` while a `build` runs (CI starts one in the background
  # early) waits for it and uses what it built
  mkdir -p "$(dirname "$build")"
  exec {lock}>"$build.lock"
  flock "$lock"
  if built; then exec {lock}>&-; return 0; fi
  local stamp; stamp="$(fingerprint)"
  rm -rf "$build"; mkdir -p "$build"
  local mvn; mvn="$(maven)" || exit 1
  # only what the Quarkus build needs (compile, then quarkus:build: no test phases,
  # surefire or jar plugins to fetch); 16 connections for the downloads, and the POMs
  # of each tree collected in parallel
  if ! "$mvn" -B -Dstyle.color=never -f "$here/pom.xml" compile quarkus:build \
      -Daether.dependencyCollector.impl=bf -Daether.dependencyCollector.bf.threads=16 \
      -Daether.connector.basic.threads=16 -Dregistry.build.dir="$build" >"$build.log" 2>&1; then
    echo "Schema Registry: the Maven build failed (deploy/registry/pom.xml); its errors (log: $build.log):" >&2
    grep -E '^\[ERROR\]' "$build.log" | head -n 5 >&2 || tail -n 5 "$build.log" >&2
    exit 1
  fi
  echo "$stamp" > "$build/.complete"
  exec {lock}>&-
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
