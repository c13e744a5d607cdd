#!/usr/bin/env bash
# A local single-node Apache Kafka broker in KRaft mode (combined broker and
# controller on loopback), run from the jars Maven resolves with deploy/pom.xml.
#   broker.sh start   resolve jars, format storage, start, wait until it answers a
#                     metadata request (Ready.java, whatever the broker logs through)
#   broker.sh stop    stop it cleanly (SIGTERM, then wait for the controlled shutdown)
#   broker.sh status  print the bootstrap address when it is up
#   broker.sh run     format if needed and run in the foreground (containers)
#   broker.sh resolve check KAFKA_VERSION and resolve its jars; print the release
# KAFKA_VERSION (default the kafka.version of deploy/pom.xml, 3.9.x) picks the
# Kafka release: 3.9 (logging through reload4j) and 4.x (log4j2) alike. Each
# version has its own jars (KAFKA_LIBS, default .kafka/libs/<version>) and its own
# data directory ($home/data/<version>), so switching versions mixes neither.
# KAFKA_HOME (default .kafka in the project) holds config, data, log and pid;
# KAFKA_PORT / KAFKA_CONTROLLER_PORT the ports; KAFKA_START_TIMEOUT_S (120) how long
# `start` waits for the broker to answer; KAFKA_STOP_WAIT_S (60) how long `start` waits
# for a previous broker still stopping (its process, or whatever still answers on the
# port) to be gone before it starts a new one, saying so, or gives up in one line.
#
# deploy/broker/cluster.sh sources this file for its functions and runs one node of a
# replicated cluster per KAFKA_HOME, with KAFKA_NODE_ID, KAFKA_QUORUM_VOTERS (the
# controllers, id@host:port,...), KAFKA_CLUSTER_ID (every node formatted with it),
# KAFKA_REPLICATION / KAFKA_MIN_ISR (defaults and internal topics; 1 and 1 here),
# KAFKA_BROKER_SESSION_TIMEOUT_MS (how soon a lost broker's leaderships move; 9000)
# and KAFKA_HEAP (java heap flags).
#
# KAFKA_SECURITY=sasl_ssl starts the same broker secured (default home .kafka-secured,
# ports 19094/19095, so both can run side by side):
#   - one SASL_SSL listener for clients and between brokers, SCRAM-SHA-512 only;
#   - TLS from a CA made at first start with the JDK's keytool: $home/tls/ca.pem is
#     what clients trust (SIZER_SSL_CAFILE); the broker's certificate names
#     127.0.0.1, localhost and KAFKA_ADVERTISED_HOST;
#   - the controller listener is TLS with client certificates (the broker's own,
#     principal User:CN=broker), so nothing reaches it anonymously;
#   - SCRAM users created once the broker first answers, through the admin API
#     (kafka-configs --add-config-file, on a loopback TLS listener as the broker's own
#     certificate: no password on any command line), one per principal of
#     topics/acls.toml plus `admin`, each with a random password in
#     $home/secrets/<user>.password (mode 600); $home/clients/<user>.env holds the
#     SIZER_* settings of that user;
#   - the StandardAuthorizer, nothing allowed without an ACL; super users are admin
#     (`sizer acls apply` runs as admin) and the broker itself (User:CN=broker, on
#     the controller and internal listeners, which take only its certificate).
# KAFKA_OAUTH_JWKS (sasl_ssl only), a JWKS file, adds OAUTHBEARER to the SASL_SSL listener:
#   tokens are JWTs signed by a key of that file, with audience KAFKA_OAUTH_AUDIENCE (default
#   kafka), checked by Kafka's own validator (OAuthBearerValidatorCallbackHandler); the
#   principal is the token's `sub`. The tests start a token issuer and write its JWKS there.
# KAFKA_SCRAM_USERS overrides the list of users; KAFKA_LISTEN_HOST (default
# 127.0.0.1) the address listened on; KAFKA_ADVERTISED_HOST the one advertised;
# KAFKA_INTERNAL_PORT the loopback TLS listener's port (sasl_ssl; default 19096);
# KAFKA_SECRETS_EXPORT names a directory whose <user>/ subdirectories (one volume per
# client container) each receive that user's password and the CA, owned by
# KAFKA_SECRETS_UID: a container gets its own principal's secret and no other.
# Everything the broker writes under its home (data, metadata log with the SCRAM
# verifiers, secrets, TLS keys) is readable by its owner only (umask 077).
set -euo pipefail
# owner-only: the log segments, the metadata log (SCRAM verifiers), secrets and keys
umask 077
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
security="${KAFKA_SECURITY:-plaintext}"
case "$security" in
  plaintext) default_home="$root/.kafka"; default_port=19092; default_controller_port=19093 ;;
  sasl_ssl) default_home="$root/.kafka-secured"; default_port=19094; default_controller_port=19095 ;;
  *) echo "KAFKA_SECURITY: plaintext or sasl_ssl, not $security" >&2; exit 2 ;;
esac
home="${KAFKA_HOME:-$default_home}"
pom_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/../pom.xml")"
if [[ -n "${KAFKA_LIBS:-}" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
  # jars given (a Kafka image's libs): their version, whatever KAFKA_VERSION says
  jar="$(compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" | grep -v -e -test -e -sources | head -n 1)"
  version="${jar##*/kafka_2.13-}"; version="${version%.jar}"
  version_setting="KAFKA_LIBS ($KAFKA_LIBS)"
else
  version="${KAFKA_VERSION:-$pom_version}"
  version_setting=KAFKA_VERSION
fi
# `stop` needs no release (the pid file is the home's): a stop is never refused
if [[ "${1:-}" != stop ]]; then
  if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "KAFKA_VERSION: a Kafka release such as $pom_version, not '$version'" >&2; exit 2
  fi
  # the releases the product supports and is tested on (README, docs/pages/production-kafka.md):
  # an older one may start and pass some tests, which would say nothing of it
  if [[ ! "$version" =~ ^(3\.9|4\.[0-9]+)\. ]]; then
    echo "$version_setting: a supported Kafka release, 3.9.x or 4.x (such as $pom_version), not $version" >&2; exit 2
  fi
fi
libs="${KAFKA_LIBS:-$root/.kafka/libs/$version}"
data="$home/data/$version"
start_timeout_s="${KAFKA_START_TIMEOUT_S:-120}"
stop_wait_s="${KAFKA_STOP_WAIT_S:-60}"
port="${KAFKA_PORT:-$default_port}"
controller_port="${KAFKA_CONTROLLER_PORT:-$default_controller_port}"
# sasl_ssl: a loopback TLS listener with client certificates, between brokers and for
# creating the SCRAM users (the broker's own certificate, CN=broker, is a super user)
internal_port="${KAFKA_INTERNAL_PORT:-$((default_controller_port + 1))}"
listen_host="${KAFKA_LISTEN_HOST:-127.0.0.1}"
advertised_host="${KAFKA_ADVERTISED_HOST:-127.0.0.1}"
scram_users="${KAFKA_SCRAM_USERS:-admin sizer-worker signal-producer execution-engine operator auditor sizer-setup}"
bootstrap="$advertised_host:$port"
pidfile="$home/broker.pid"
# the pid of a broker `stop` has asked to exit, until it has
stopping_file="$home/broker.stopping"
# the SCRAM users live in the KRaft metadata of one release's data directory: made once per data directory
scram_done="$data/.scram-users-created"
node_id="${KAFKA_NODE_ID:-1}"
quorum_voters="${KAFKA_QUORUM_VOTERS:-$node_id@127.0.0.1:$controller_port}"
cluster_id="${KAFKA_CLUSTER_ID:-}"
replication="${KAFKA_REPLICATION:-1}"
min_isr="${KAFKA_MIN_ISR:-1}"
# how long the controller waits for a silent broker before it fences it and moves its
# leaderships (Kafka's default 9 s); the heartbeat a third of it, at most Kafka's 2 s
broker_session_ms="${KAFKA_BROKER_SESSION_TIMEOUT_MS:-9000}"
read -r -a heap <<< "${KAFKA_HEAP:--Xms256m -Xmx1g}"

# The pid file names a live process that is this home's broker: a pid file left by a
# broker that died unseen (a reboot, a SIGKILL) may name an unrelated process by now,
# which must be neither reported as the broker nor signalled by `stop`.
running() { [[ -f "$pidfile" ]] && is_broker "$(cat "$pidfile")"; }

# Process $1 runs kafka.Kafka on this home's server.properties (its command line:
# /proc on Linux, ps elsewhere).
is_broker() {
  local pid="$1" args=() i
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    mapfile -d '' args < "/proc/$pid/cmdline" 2>/dev/null || return 1
  else
    read -r -a args <<< "$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
  fi
  for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    if [[ "${args[i]}" == kafka.Kafka ]]; then
      [[ "${args[i + 1]}" == "$home/server.properties" || "${args[i + 1]}" -ef "$home/server.properties" ]]
      return
    fi
  done
  return 1
}

# The process `launch` started (its pid in the pid file) is still alive: until it has
# exec'd Java it is a subshell of this script, not yet recognisable as a broker.
launched_alive() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() { (exec 3<>"/dev/tcp/$advertised_host/$port") 2>/dev/null; }

resolve_jars() {
  # a KAFKA_LIBS given with the jars already in it (a Kafka image's libs) needs no Maven
  if [[ -n "${KAFKA_LIBS:-}" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then return 0; fi
  if [[ ! -f "$libs/.complete" ]]; then
    rm -rf "$libs"; mkdir -p "$libs"
    # Kafka 4 logs through log4j2, 3.x through log4j 1 (reload4j): deploy/pom.xml's profiles
    local logging=()
    (( ${version%%.*} >= 4 )) && logging=(-Dkafka.logging=log4j2)
    if ! mvn -q -B -Dstyle.color=never -f "$here/../pom.xml" dependency:copy-dependencies \
        -Dkafka.version="$version" "${logging[@]}" \
        -DoutputDirectory="$libs" -DincludeScope=runtime >"$libs.mvn.log" 2>&1; then
      rm -rf "$libs"
      # Maven Central answered that the release is not there (now, or at an earlier attempt it cached)
      if grep -q -E "(Could not find artifact org\.apache\.kafka:kafka_2\.13:jar:$version |org\.apache\.kafka:kafka_2\.13:jar:$version was not found)" "$libs.mvn.log"; then
        echo "Kafka $version: no such release on Maven Central (org.apache.kafka:kafka_2.13:$version; KAFKA_VERSION)" >&2
      else
        echo "Kafka $version: Maven could not resolve its jars, offline or Maven Central out of reach?" \
             "($(grep -m 1 -o '\[ERROR\] .\{1,200\}' "$libs.mvn.log" || echo 'no error line'); log: $libs.mvn.log)" >&2
      fi
      exit 1
    fi
    rm -f "$libs.mvn.log"
    touch "$libs/.complete"
  fi
}

# log4j2 when the jars carry it (Kafka 4), else log4j 1 (reload4j, Kafka 3.x)
log4j2() { compgen -G "$libs/log4j-core-*.jar" >/dev/null; }

log_options() {
  if log4j2; then echo "-Dlog4j2.configurationFile=$home/log4j2.properties"
  else echo "-Dlog4j.configuration=file:$home/log4j.properties"; fi
}

# A CA, the broker's key and certificate signed by it (server and client use:
# the broker presents it to the controller listener too), and a truststore.
make_tls() {
  local tls="$home/tls"
  [[ -f "$tls/broker.p12" ]] && return 0
  mkdir -p "$tls"; chmod 700 "$tls"
  local pass; pass="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  printf '%s' "$pass" > "$tls/store.password"
  local kt=(keytool -noprompt -storetype PKCS12 -storepass "$pass" -keypass "$pass")
  "${kt[@]}" -genkeypair -alias ca -dname "CN=sizer local CA" -keyalg RSA -keysize 2048 -validity 3650 \
    -ext bc:c -ext KU=keyCertSign,cRLSign -keystore "$tls/ca.p12" >/dev/null 2>&1
  keytool -exportcert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$pass" -file "$tls/ca.pem" >/dev/null 2>&1
  "${kt[@]}" -genkeypair -alias broker -dname "CN=broker" -keyalg RSA -keysize 2048 -validity 3650 \
    -keystore "$tls/broker.p12" >/dev/null 2>&1
  keytool -certreq -alias broker -keystore "$tls/broker.p12" -storepass "$pass" -file "$tls/broker.csr" >/dev/null 2>&1
  local san="IP:127.0.0.1,DNS:localhost,DNS:kafka"
  [[ "$advertised_host" =~ ^[0-9.]+$ ]] && san="$san,IP:$advertised_host" || san="$san,DNS:$advertised_host"
  keytool -gencert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$pass" -validity 3650 \
    -ext "SAN=$san" -ext EKU=serverAuth,clientAuth -ext KU=digitalSignature,keyEncipherment \
    -infile "$tls/broker.csr" -outfile "$tls/broker.crt" >/dev/null 2>&1
  "${kt[@]}" -importcert -alias ca -file "$tls/ca.pem" -keystore "$tls/broker.p12" >/dev/null 2>&1
  "${kt[@]}" -importcert -alias broker -file "$tls/broker.crt" -keystore "$tls/broker.p12" >/dev/null 2>&1
  "${kt[@]}" -importcert -alias ca -file "$tls/ca.pem" -keystore "$tls/truststore.p12" >/dev/null 2>&1
  chmod 644 "$tls/ca.pem"
}

# One random password per SCRAM user (kept across restarts: the users are created
# at format time), and the SIZER_* settings of each.
make_secrets() {
  mkdir -p "$home/secrets" "$home/clients"; chmod 700 "$home/secrets"
  local user
  for user in $scram_users; do
    if [[ ! -f "$home/secrets/$user.password" ]]; then
      (head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$home/secrets/$user.password")
    fi
    cat > "$home/clients/$user.env" <<ENV
KAFKA_BOOTSTRAP_SERVERS=$bootstrap
SIZER_SECURITY_PROTOCOL=SASL_SSL
SIZER_SASL_MECHANISM=SCRAM-SHA-512
SIZER_SASL_USERNAME=$user
SIZER_SASL_PASSWORD_FILE=$home/secrets/$user.password
SIZER_SSL_CAFILE=$home/tls/ca.pem
ENV
  done
  # containers (docker-compose.secured.yml): each client container mounts a volume of its
  # own principal at $KAFKA_SECRETS_EXPORT/<user>, and gets that user's password and
  # the CA there, owned by KAFKA_SECRETS_UID; nothing else of this home is shared
  if [[ -n "${KAFKA_SECRETS_EXPORT:-}" ]]; then
    for user in $scram_users; do
      local out="$KAFKA_SECRETS_EXPORT/$user"
      [[ -d "$out" ]] || continue
      cp "$home/secrets/$user.password" "$out/password"
      cp "$home/tls/ca.pem" "$out/ca.pem"
      chmod 400 "$out/password"; chmod 444 "$out/ca.pem"
      if [[ -n "${KAFKA_SECRETS_UID:-}" ]]; then chown "$KAFKA_SECRETS_UID" "$out" "$out/password" "$out/ca.pem"; fi
      chmod 500 "$out"
    done
  fi
}

# The broker's key and trust stores: its listeners', and the internal admin client's
tls_stores() {
  local store; store="$(cat "$home/tls/store.password")"
  cat <<PROPS
ssl.keystore.type=PKCS12
ssl.keystore.location=$home/tls/broker.p12
ssl.keystore.password=$store
ssl.key.password=$store
ssl.truststore.type=PKCS12
ssl.truststore.location=$home/tls/truststore.p12
ssl.truststore.password=$store
PROPS
}

listener_config() {
  if [[ "$security" == plaintext ]]; then
    cat <<PROPS
listeners=PLAINTEXT://$listen_host:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://$bootstrap
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
PROPS
    return 0
  fi
  cat <<PROPS
listeners=SASL_SSL://$listen_host:$port,INTERNAL://127.0.0.1:$internal_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://$bootstrap,INTERNAL://127.0.0.1:$internal_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512${KAFKA_OAUTH_JWKS:+,OAUTHBEARER}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
$(oauth_config)
listener.name.controller.ssl.client.auth=required
listener.name.internal.ssl.client.auth=required
$(tls_stores)
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:CN=broker
PROPS
}

oauth_config() {
  [[ -n "${KAFKA_OAUTH_JWKS:-}" ]] || return 0
  cat <<PROPS
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
sasl.oauthbearer.jwks.endpoint.url=file://$KAFKA_OAUTH_JWKS
sasl.oauthbearer.expected.audience=${KAFKA_OAUTH_AUDIENCE:-kafka}
PROPS
}

# Kafka (3.9.1 and 4.x) reads OAUTHBEARER URLs only from those it is told to allow
oauth_java_options() {
  if [[ -n "${KAFKA_OAUTH_JWKS:-}" ]]; then echo "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=file://$KAFKA_OAUTH_JWKS"; fi
}

write_config() {
  mkdir -p "$data"
  # also on a home made before this script set its umask
  chmod 700 "$home" "$home/data" "$data"
  if [[ "$security" == sasl_ssl ]]; then make_tls; make_secrets; fi
  (cat > "$home/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$quorum_voters
controller.listener.names=CONTROLLER
$(listener_config)
log.dirs=$data
num.partitions=1
default.replication.factor=$replication
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=8
min.insync.replicas=$min_isr
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=$broker_session_ms
broker.heartbeat.interval.ms=$(( broker_session_ms / 3 < 2000 ? broker_session_ms / 3 : 2000 ))
auto.create.topics.enable=false
log.retention.hours=168
PROPS
  )
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
  cat > "$home/log4j2.properties" <<PROPS
appender.file.type=RollingFile
appender.file.name=file
appender.file.fileName=$home/broker.log
appender.file.filePattern=$home/broker.log.%i
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
appender.file.policies.type=Policies
appender.file.policies.size.type=SizeBasedTriggeringPolicy
appender.file.policies.size.size=20MB
appender.file.strategy.type=DefaultRolloverStrategy
appender.file.strategy.max=2
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
logger.request.name=kafka.request.logger
logger.request.level=WARN
logger.controller.name=org.apache.kafka.controller
logger.controller.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
PROPS
  # what the readiness probe connects with: the admin's own settings when secured
  (umask 077; probe_config > "$home/probe.properties")
}

probe_config() {
  if [[ "$security" == plaintext ]]; then echo "bootstrap.servers=$bootstrap"; return 0; fi
  # secured: as the broker itself, on the internal listener (the SCRAM users are made after)
  echo "bootstrap.servers=127.0.0.1:$internal_port"
  echo "security.protocol=SSL"
  tls_stores
}

# Waits until the broker answers a metadata request (Ready.java), at most
# start_timeout_s; compiled once per jar directory when a JDK is at hand, else run
# from source.
ready() {
  local classes="$libs/.probe"
  [[ -w "$libs" ]] || classes="$home/probe"
  local probe=(java -cp "$libs/*" "$here/Ready.java")
  if command -v javac >/dev/null; then
    if [[ ! -f "$classes/Ready.class" || "$here/Ready.java" -nt "$classes/Ready.class" ]]; then
      mkdir -p "$classes"
      javac -nowarn -d "$classes" -cp "$libs/*" "$here/Ready.java" >&2
    fi
    probe=(java -cp "$libs/*:$classes" Ready)
  fi
  "${probe[@]}" "$home/probe.properties" "$start_timeout_s" 2>/dev/null
}

java_run() {
  java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true "$(log_options)" -cp "$libs/*" "$@"
}

format() {
  [[ -f "$data/meta.properties" ]] && return 0
  if [[ -n "$cluster_id" ]]; then  # one node of a cluster: its voters are in the config
    java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$home/server.properties" >/dev/null
    return 0
  fi
  java_run kafka.tools.StorageTool format --standalone -t "$(java_run kafka.tools.StorageTool random-uuid)" \
    -c "$home/server.properties" >/dev/null 2>"$home/format.err" \
    || java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
         -c "$home/server.properties" >/dev/null
}

# The SCRAM users, once the broker answers on its internal listener: through the admin
# API (kafka-configs), as the broker's own certificate, each password read from a file
# (--add-config-file), never on a command line. Done once; `status` waits for it.
create_scram_users() {
  [[ "$security" == sasl_ssl && ! -f "$scram_done" ]] || return 0
  local admin_config="$home/tls/internal-client.properties"
  cat > "$admin_config" <<PROPS
security.protocol=SSL
$(tls_stores)
PROPS
  local user pids=() failed=0 config_command=kafka.admin.ConfigCommand
  (( ${version%%.*} >= 4 )) && config_command=org.apache.kafka.tools.ConfigCommand
  for user in $scram_users; do
    local file="$home/secrets/$user.scram"
    printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$(cat "$home/secrets/$user.password")" > "$file"
    java_run "$config_command" --bootstrap-server "127.0.0.1:$internal_port" \
      --command-config "$admin_config" --alter --entity-type users --entity-name "$user" \
      --add-config-file "$file" >"$home/scram-$user.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  rm -f "$home"/secrets/*.scram
  if [[ "$failed" != 0 ]]; then
    echo "creating the SCRAM users failed; see $home/scram-*.log" >&2
    return 1
  fi
  touch "$scram_done"
}

run() {
  resolve_jars
  write_config
  format
  echo $$ > "$pidfile"
  echo "$version" > "$home/broker.version"
  if [[ "$security" == sasl_ssl && ! -f "$scram_done" ]]; then
    (until (exec 3<>"/dev/tcp/127.0.0.1/$internal_port") 2>/dev/null; do sleep 0.5; done; create_scram_users) &
  fi
  # shellcheck disable=SC2046
  exec java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true "$(log_options)" $(oauth_java_options) \
    -cp "$libs/*" kafka.Kafka "$home/server.properties"
}

# Start the broker in the background and return at once (its pid in $pidfile).
launch() {
  resolve_jars
  write_config
  format
  # the broker outlives this script: it keeps none of the caller's descriptors beyond
  # its own three (a `flock LOCK broker.sh start` would otherwise hold LOCK until the
  # broker stops)
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd="${fd##*/}"
      if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    # shellcheck disable=SC2046
    exec nohup java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true "$(log_options)" $(oauth_java_options) \
      -cp "$libs/*" kafka.Kafka "$home/server.properties" >"$home/broker.out" 2>&1 </dev/null
  ) &
  echo $! > "$pidfile"
  echo "$version" > "$home/broker.version"
}

# Wait until the launched broker answers (start_timeout_s), or exit 1 saying why.
wait_started() {
  ready > "$home/probe.out" &
  local probe=$!
  while kill -0 "$probe" 2>/dev/null; do
    if ! launched_alive; then
      pkill -P "$probe" 2>/dev/null || true; kill "$probe" 2>/dev/null || true
      echo "Kafka $version broker exited during start-up; last lines of $home/broker.out and broker.log:" >&2
      tail -n 20 "$home/broker.out" "$home/broker.log" >&2 || true
      exit 1
    fi
    sleep 0.25
  done
  if wait "$probe"; then create_scram_users; return 0; fi
  echo "Kafka $version broker did not answer on $bootstrap within $start_timeout_s s" \
       "($(tail -n 1 "$home/probe.out" 2>/dev/null); log: $home/broker.log); still running, pid $(cat "$pidfile")" >&2
  exit 1
}

# A broker of this home that `stop` asked to exit and that is still up: wait until it
# has exited (at most stop_wait_s), or exit 1. Reporting it as running would hand out
# an address that goes dead a moment later.
wait_stopped() {
  [[ -f "$stopping_file" ]] || return 0
  local pid; pid="$(cat "$stopping_file")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "the previous broker (pid $pid) is still stopping: waiting up to $stop_wait_s s for it to exit" >&2
    local quarters=0
    while kill -0 "$pid" 2>/dev/null; do
      if (( quarters >= stop_wait_s * 4 )); then
        echo "the previous broker (pid $pid) is still stopping after $stop_wait_s s: start again once it has exited" >&2
        exit 1
      fi
      sleep 0.25; quarters=$((quarters + 1))
    done
  fi
  rm -f "$stopping_file"
  if ! running; then rm -f "$pidfile"; fi
}

# Something answering on our port while no broker of this home runs (a broker still
# shutting down whose pid file is gone, another checkout's broker): a new broker could
# not bind it, and the readiness probe would take the old one's answer for its own.
# Wait for the port to be free (at most stop_wait_s), or exit 1 naming it.
wait_port_free() {
  answers || return 0
  echo "$bootstrap still answers, though no broker of $home runs: waiting up to $stop_wait_s s for it to go" >&2
  local quarters=0
  while answers; do
    if (( quarters >= stop_wait_s * 4 )); then
      echo "$bootstrap is held by a process that is not the broker of $home (another checkout's broker?): stop it, or set KAFKA_PORT" >&2
      exit 1
    fi
    sleep 0.25; quarters=$((quarters + 1))
  done
}

# One `start` or `stop` of this home at a time (flock, where there is one): two
# starts at once would each launch a broker, the pid file naming one of them, and a
# stop during a start would not know the broker being launched.
lock_home() {
  command -v flock >/dev/null || return 0
  mkdir -p "$home"
  exec {home_lock}>"$home/broker.lock"
  flock "$home_lock"
}

unlock_home() { if [[ -n "${home_lock:-}" ]]; then exec {home_lock}>&-; home_lock=""; fi; }

# The waits of a start (KAFKA_START_TIMEOUT_S, KAFKA_STOP_WAIT_S): whole seconds, or exit 2 naming the setting.
# Read in base 10: bash arithmetic takes a leading 0 for octal (010 waited 8 s, and 08, no
# number at all there, made every wait's test false, so a stop wait never ended).
check_waits() {
  local setting
  for setting in "KAFKA_START_TIMEOUT_S=$start_timeout_s" "KAFKA_STOP_WAIT_S=$stop_wait_s"; do
    if [[ ! "${setting#*=}" =~ ^[0-9]{1,6}$ ]]; then
      echo "${setting%%=*}: a whole number of seconds, not '${setting#*=}'" >&2; exit 2
    fi
  done
  start_timeout_s=$((10#$start_timeout_s)); stop_wait_s=$((10#$stop_wait_s))
}

start() {
  check_waits
  lock_home
  wait_stopped
  if running; then
    local running_version; running_version="$(cat "$home/broker.version" 2>/dev/null || echo unknown)"
    if [[ "$running_version" != "$version" ]]; then
      echo "a Kafka $running_version broker is running from $home, not $version: stop it first ($0 stop)" >&2
      exit 1
    fi
    echo "$bootstrap"; return 0
  fi
  wait_port_free
  launch
  wait_started
  echo "$bootstrap"
}

# The pid file and the stopping mark, each only while it still names broker $1: a
# `start` that waited for that broker to exit may have written its successor's pid.
forget() {
  if [[ "$(cat "$pidfile" 2>/dev/null)" == "$1" ]]; then rm -f "$pidfile"; fi
  if [[ "$(cat "$stopping_file" 2>/dev/null)" == "$1" ]]; then rm -f "$stopping_file"; fi
}

stop() {
  lock_home
  if ! running; then rm -f "$pidfile" "$stopping_file"; unlock_home; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  echo "$pid" > "$stopping_file"
  kill -TERM "$pid"
  # the wait below is the stopping file's: a `start` now waits for this broker to exit, saying so
  unlock_home
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { forget "$pid"; return 0; }
    sleep 0.25
  done
  echo "broker did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  forget "$pid"
}

# sourced (cluster.sh): the functions only
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  resolve) resolve_jars; echo "$version" ;;
  run) run ;;
  status)
    if running && answers && { [[ "$security" != sasl_ssl ]] || [[ -f "$scram_done" ]]; }; then echo "$bootstrap"
    else echo "not running" >&2; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status|run|resolve" >&2; exit 2 ;;
esac
