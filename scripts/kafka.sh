#!/usr/bin/env bash
# Run a throwaway single-node Apache Kafka (KRaft: one process is broker and controller) on
# 127.0.0.1 for tests and CI.
#
#   scripts/kafka.sh start     fetch (once), format and start the node; prints its bootstrap
#                              address (host:port); a running node is reused
#   scripts/kafka.sh ensure    the same (the name the Makefile uses)
#   scripts/kafka.sh stop      stop the node started by `start`
#   scripts/kafka.sh status    "running ..." (exit 0) or "stopped" (exit 3)
#   scripts/kafka.sh url       the running node's address, else the one start would try first
#
# Everything comes from Maven Central through `mvn`: the broker is the jar
#   org.apache.kafka:kafka_2.13:<version>
# with its runtime dependencies, plus the slf4j 1.x binding
#   org.apache.logging.log4j:log4j-slf4j-impl
# (without a binding the broker writes no log at all), fetched with
# `mvn dependency:copy-dependencies` into $PRISM_CACHE_DIR/kafka/<version> (and ~/.m2).
# The storage is formatted by kafka.tools.StorageTool, then kafka.Kafka runs server.properties.
#
# Environment (all optional):
#   KAFKA_VERSION         4.4.0    a 4.x release on Maven Central
#   KAFKA_PORT            19092    client port; the controller listens on the next free one.
#                                  The broker binds its client port late (after the controller
#                                  is up), so a port taken meanwhile is retried on the next ones
#   KAFKA_HEAP            256m     -Xms/-Xmx
#   KAFKA_START_TIMEOUT   60       seconds to wait for the broker to answer
#   KAFKA_JAVA_HOME       auto     a JDK 17 or newer
#   PRISM_CACHE_DIR       ~/.cache/prism   jars go to $PRISM_CACHE_DIR/kafka/<version>
#   KAFKA_KEEP_DATA       0        1 keeps the storage (topics, messages) across stop/start;
#                                  by default a start that launches a node begins empty
#   PRISM_RUN_DIR         /tmp/prism-services   config, data, logs, pid under .../kafka
set -euo pipefail
umask 022

VERSION="${KAFKA_VERSION:-4.4.0}"
PORT="${KAFKA_PORT:-19092}"
HEAP="${KAFKA_HEAP:-256m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KEEP_DATA="${KAFKA_KEEP_DATA:-0}"
LOG4J_VERSION="2.24.3"
CACHE_DIR="${PRISM_CACHE_DIR:-$HOME/.cache/prism}/kafka/$VERSION"
RUN_DIR="${PRISM_RUN_DIR:-/tmp/prism-services}/kafka"
CONF_DIR="$RUN_DIR/config"
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/logs"
PID_FILE="$RUN_DIR/kafka.pid"
ADDR_FILE="$RUN_DIR/kafka.address"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
PORT_TRIES=5

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_tool() {
  local tool="$1" pkg="$2"
  command -v "$tool" >/dev/null 2>&1 && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing $pkg for $tool"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  fi
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install $pkg)"
}

mvn_q() {
  local out rc=0
  out="$(mktemp)"
  mvn -B -Dstyle.color=never "$@" >"$out" 2>&1 || rc=$?
  ((rc == 0)) || grep -E 'ERROR|BUILD' "$out" | head -n 20 >&2
  rm -f "$out"
  return "$rc"
}

java_major() {
  "$1/bin/java" -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java\.specification\.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p' | head -n1
}

find_java() {
  if [[ -n "${KAFKA_JAVA_HOME:-}" ]]; then
    local v
    v="$(java_major "$KAFKA_JAVA_HOME")"
    [[ -n "$v" && "$v" -ge 17 ]] || die "KAFKA_JAVA_HOME=$KAFKA_JAVA_HOME is Java '${v:-?}': Kafka 4 needs 17+"
    echo "$KAFKA_JAVA_HOME"
    return
  fi
  local cand v
  local -a cands=()
  [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME")
  if command -v java >/dev/null 2>&1; then
    cands+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  cands+=(/usr/lib/jvm/* /opt/java/* /opt/jdk*)
  for cand in "${cands[@]}"; do
    [[ -x "$cand/bin/java" ]] || continue
    v="$(java_major "$cand")"
    [[ -n "$v" && "$v" -ge 17 ]] && { echo "$cand"; return; }
  done
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "no JDK 17+ found: installing openjdk-17-jre-headless"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    dirname "$(dirname "$(readlink -f /usr/lib/jvm/java-17-openjdk-*/bin/java)")"
    return
  fi
  die "need a JDK 17+ (set KAFKA_JAVA_HOME)"
}

alive() {
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)"
  [[ -n "$state" && "$state" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $CONF_DIR" || return 1
  echo "$pid"
}

# --- fetch --------------------------------------------------------------------------
fetch_jars() {
  [[ -f "$CACHE_DIR/.complete" ]] && return 0
  need_tool mvn maven
  mkdir -p "$CACHE_DIR"
  local tmp
  tmp="$(mktemp -d "$CACHE_DIR/.dl.XXXXXX")"
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.prism</groupId><artifactId>kafka-broker</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  log "fetching org.apache.kafka:kafka_2.13:$VERSION and its dependencies from Maven Central"
  mvn_q -f "$tmp/pom.xml" "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
    -DoutputDirectory="$tmp/libs" || { rm -rf "$tmp"; die "could not fetch Kafka $VERSION"; }
  rm -rf "$CACHE_DIR/libs"
  mv "$tmp/libs" "$CACHE_DIR/libs"
  rm -rf "$tmp"
  touch "$CACHE_DIR/.complete"
}

# --- configure and run --------------------------------------------------------------
write_config() {  # write_config CLIENT_PORT CONTROLLER_PORT
  local client="$1" controller="$2"
  rm -rf "$CONF_DIR" "$LOG_DIR"
  [[ "$KEEP_DATA" == 1 ]] || rm -rf "$DATA_DIR"
  mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR"
  cat >"$CONF_DIR/server.properties" <<EOF
# Generated by scripts/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$client,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$client
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
# The log cleaner's 128 MiB dedupe buffer is most of a small heap: a test node compacts little.
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
log.retention.hours=2
EOF
  cat >"$CONF_DIR/log4j2.properties" <<EOF
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $LOG_DIR/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.kafka-server.name = kafka.server.KafkaRaftServer
logger.kafka-server.level = INFO
logger.org-apache-kafka.name = org.apache.kafka
logger.org-apache-kafka.level = WARN
EOF
}

java_cmd() {  # java_cmd JAVA_HOME MAIN ARGS...
  local java_home="$1"
  shift
  env -u JAVA_TOOL_OPTIONS -u JAVA_OPTS "$java_home/bin/java" "-Xms$HEAP" "-Xmx$HEAP" \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$CONF_DIR/log4j2.properties" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$CACHE_DIR/libs/*" "$@"
}

free_port() {  # the first port from $1 that nothing answers on
  local p="$1"
  while port_open "$p"; do p=$((p + 1)); done
  echo "$p"
}

launch() {  # launch JAVA_HOME CLIENT_PORT -> pid; waits until the broker answers or fails
  local java_home="$1" client="$2" controller
  controller="$(free_port $((client + 1)))"
  write_config "$client" "$controller"
  # Kept storage (KAFKA_KEEP_DATA=1) is formatted already, with its own cluster id.
  [[ -f "$DATA_DIR/meta.properties" ]] \
    || java_cmd "$java_home" kafka.tools.StorageTool format --ignore-formatted \
    -t "$(java_cmd "$java_home" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
    -c "$CONF_DIR/server.properties" >"$LOG_DIR/format.log" 2>&1 \
    || { cat "$LOG_DIR/format.log" >&2; die "kafka.tools.StorageTool format failed"; }
  cd "$RUN_DIR"
  # Detached (setsid) so the node outlives the shell that started it; every step execs, so
  # $! is the JVM. 9>&-: the node must not inherit the start/stop lock.
  env -u JAVA_TOOL_OPTIONS -u JAVA_OPTS setsid nohup "$java_home/bin/java" "-Xms$HEAP" "-Xmx$HEAP" \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$CONF_DIR/log4j2.properties" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$CACHE_DIR/libs/*" kafka.Kafka "$CONF_DIR/server.properties" \
    </dev/null >"$LOG_DIR/stdout.log" 2>&1 9>&- &
  echo $!
}

wait_ready() {  # wait_ready PID PORT: 0 ready, 1 died, 2 timed out, 3 port clash
  local pid="$1" port="$2" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! alive "$pid"; then
      grep -qiE "BindException|Address already in use" "$LOG_DIR/stdout.log" "$LOG_DIR/server.log" 2>/dev/null \
        && return 3
      return 1
    fi
    if port_open "$port" && grep -q "Kafka Server started" "$LOG_DIR/server.log" 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  return 2
}

cmd_start() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock 9
  local pid
  if pid="$(running_pid)"; then
    local addr
    addr="$(cat "$ADDR_FILE")"
    port_open "${addr##*:}" || die "node (pid $pid) runs but does not answer on $addr; see $LOG_DIR"
    echo "$addr"
    return 0
  fi
  rm -f "$PID_FILE" "$ADDR_FILE"
  local java_home t0=$SECONDS try port rc
  java_home="$(find_java)"
  fetch_jars
  port="$PORT"
  for ((try = 1; try <= PORT_TRIES; try++)); do
    port="$(free_port "$port")"
    log "starting Kafka $VERSION on 127.0.0.1:$port (java: $java_home, heap $HEAP, logs: $LOG_DIR)"
    pid="$(launch "$java_home" "$port")"
    echo "$pid" >"$PID_FILE"
    rc=0
    wait_ready "$pid" "$port" || rc=$?
    if ((rc == 0)); then
      echo "127.0.0.1:$port" >"$ADDR_FILE"
      log "ready in $((SECONDS - t0))s"
      echo "127.0.0.1:$port"
      return 0
    fi
    kill "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    if ((rc == 3)); then
      log "port $port was taken while the node started: trying the next one"
      port=$((port + 2))
      continue
    fi
    break
  done
  local f
  for f in "$LOG_DIR/stdout.log" "$LOG_DIR/server.log"; do
    [[ -s "$f" ]] || continue
    log "--- last lines of $f"
    grep -vE '^\s+(at |\.\.\. [0-9]+ more)' "$f" | tail -n 25 | cut -c1-400 >&2 || true
  done
  die "Kafka failed to start (files under $RUN_DIR)"
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock 9
  local pid i
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE" "$ADDR_FILE"
    log "not running"
    return 0
  fi
  kill "$pid"
  for ((i = 0; i < 60; i++)); do
    alive "$pid" || break
    sleep 0.5
  done
  if alive "$pid"; then
    log "pid $pid ignored SIGTERM for 30s: killing"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$ADDR_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    echo "running pid=$pid address=$(cat "$ADDR_FILE" 2>/dev/null || echo '?')"
    return 0
  fi
  echo "stopped"
  return 3
}

cmd_url() {
  if running_pid >/dev/null && [[ -s "$ADDR_FILE" ]]; then cat "$ADDR_FILE"; else echo "127.0.0.1:$PORT"; fi
}

case "${1:-}" in
  start | ensure) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) echo "usage: $0 start|ensure|stop|status|url" >&2; exit 2 ;;
esac
