#!/usr/bin/env bash
# A local single-node Apache Kafka 3.9 broker in KRaft mode (combined broker and
# controller on loopback), run from the jars Maven resolves with deploy/pom.xml.
#   broker.sh start   resolve jars, format storage, start, wait until it answers
#   broker.sh stop    stop it cleanly (SIGTERM, then wait for the controlled shutdown)
#   broker.sh status  print the bootstrap address when it is up
# KAFKA_HOME (default .kafka in the project) holds config, data, log and pid;
# KAFKA_LIBS (default .kafka/libs) the jars; KAFKA_PORT / KAFKA_CONTROLLER_PORT the ports.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
home="${KAFKA_HOME:-$root/.kafka}"
libs="${KAFKA_LIBS:-$root/.kafka/libs}"
port="${KAFKA_PORT:-19092}"
controller_port="${KAFKA_CONTROLLER_PORT:-19093}"
bootstrap="127.0.0.1:$port"
pidfile="$home/broker.pid"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

resolve_jars() {
  if [[ ! -f "$libs/.complete" ]]; then
    mkdir -p "$libs"
    mvn -q -B -Dstyle.color=never -f "$here/../pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >&2
    touch "$libs/.complete"
  fi
}

write_config() {
  mkdir -p "$home/data"
  cat > "$home/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$home/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
PROPS
  cat > "$home/log4j.properties" <<PROPS
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$home/broker.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
PROPS
}

java_run() {
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$home/log4j.properties" \
    -cp "$libs/*" "$@"
}

start() {
  if running; then echo "$bootstrap"; return 0; fi
  resolve_jars
  write_config
  if [[ ! -f "$home/data/meta.properties" ]]; then
    java_run kafka.tools.StorageTool format --standalone -t "$(java_run kafka.tools.StorageTool random-uuid)" \
      -c "$home/server.properties" >/dev/null 2>"$home/format.err" \
      || java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
           -c "$home/server.properties" >/dev/null
  fi
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$home/log4j.properties" \
    -cp "$libs/*" kafka.Kafka "$home/server.properties" \
    >"$home/broker.out" 2>&1 </dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 240); do
    if answers && grep -q "Kafka Server started" "$home/broker.log" 2>/dev/null; then
      echo "$bootstrap"; return 0
    fi
    if ! running; then
      echo "broker exited during start-up; last lines of $home/broker.out and broker.log:" >&2
      tail -n 20 "$home/broker.out" "$home/broker.log" >&2 || true
      exit 1
    fi
    sleep 0.25
  done
  echo "broker did not answer on $bootstrap within 60 s (log: $home/broker.log)" >&2
  exit 1
}

stop() {
  if ! running; then rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.25
  done
  echo "broker did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && answers; then echo "$bootstrap"; else echo "not running" >&2; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
