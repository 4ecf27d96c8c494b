#!/usr/bin/env bash
# Run a throwaway single-node OpenSearch on 127.0.0.1 for tests and CI.
#
#   scripts/opensearch.sh start    fetch (once), configure and start the node; prints its URL
#   scripts/opensearch.sh stop     stop the node started by `start`
#   scripts/opensearch.sh status   "running ..." (exit 0) or "stopped" (exit 3)
#   scripts/opensearch.sh url      print the URL (the running node's, else the one start would use)
#
# Everything comes from Maven Central through `mvn` (the only route to OpenSearch this
# machine has): the integration-test distribution
#   org.opensearch.distribution.integ-test-zip:opensearch:<version>:zip
# holds the server but only the transport-netty4 module, so the modules we rely on
# (analysis-common for the language analyzers such as `english`, lang-painless, ...)
# are assembled from their published jars (org.opensearch.plugin:*), with the plugin
# descriptor and security policy the full distribution would carry.
#
# Environment (all optional):
#   OPENSEARCH_VERSION        2.19.6   newest 2.19.x on Maven Central
#   OPENSEARCH_PORT           9200     HTTP port; transport uses PORT+100..PORT+200
#   OPENSEARCH_HEAP           512m     -Xms/-Xmx
#   OPENSEARCH_MODULES        "lang-painless analysis-common mapper-extras reindex parent-join"
#                             modules to add (see module_info for the known ones)
#   OPENSEARCH_START_TIMEOUT  120      seconds to wait for a yellow cluster
#   OPENSEARCH_KEEP_DATA      0        1 keeps indices across stop/start; by default a
#                                      start that launches a node begins with no data, so
#                                      indices left by older code (old mappings, modules
#                                      since removed) cannot break or skew a test run
#   OPENSEARCH_JAVA_HOME      auto     a JDK 11..23 (2.19 needs the SecurityManager, gone in 24+)
#   OPENSEARCH_USER           opensearch  account the node runs as when we are root
#   PRISM_CACHE_DIR           ~/.cache/prism   downloads go to $PRISM_CACHE_DIR/opensearch
#   PRISM_RUN_DIR             /tmp/prism-services  node home, config, data, logs, pid
#                             under $PRISM_RUN_DIR/opensearch
set -euo pipefail
# Whatever the caller's umask, the node's own account must be able to reach what we create.
umask 022

VERSION="${OPENSEARCH_VERSION:-2.19.6}"
PORT="${OPENSEARCH_PORT:-9200}"
HEAP="${OPENSEARCH_HEAP:-512m}"
MODULES="${OPENSEARCH_MODULES-lang-painless analysis-common mapper-extras reindex parent-join}"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-120}"
KEEP_DATA="${OPENSEARCH_KEEP_DATA:-0}"
RUN_AS="${OPENSEARCH_USER:-opensearch}"
CACHE_DIR="${PRISM_CACHE_DIR:-$HOME/.cache/prism}/opensearch/$VERSION"
RUN_DIR="${PRISM_RUN_DIR:-/tmp/prism-services}/opensearch"
HOME_DIR="$RUN_DIR/home"     # unpacked distribution + modules
CONF_DIR="$RUN_DIR/config"   # regenerated on every start
DATA_DIR="$RUN_DIR/data"     # emptied on each launch unless OPENSEARCH_KEEP_DATA=1
LOG_DIR="$RUN_DIR/logs"
PID_FILE="$RUN_DIR/opensearch.pid"
URL_FILE="$RUN_DIR/opensearch.url"  # where the running node listens
URL="http://127.0.0.1:$PORT"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
# Bump when the assembled layout changes, so an existing home is rebuilt.
LAYOUT_REV=1

log() { echo "opensearch.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- module catalogue ---------------------------------------------------------------
# name -> "artifactId|plugin class|extended plugins|description". The *-client artifacts
# are the module jars themselves, published under that name for the old transport client.
module_info() {
  case "$1" in
    lang-painless)     echo "lang-painless|org.opensearch.painless.PainlessPlugin||An easy, safe and fast scripting language for OpenSearch" ;;
    analysis-common)   echo "analysis-common|org.opensearch.analysis.common.CommonAnalysisPlugin|lang-painless|Adds built in analyzers to OpenSearch." ;;
    mapper-extras)     echo "mapper-extras-client|org.opensearch.index.mapper.MapperExtrasPlugin||Adds advanced field mappers." ;;
    reindex)           echo "reindex-client|org.opensearch.index.reindex.ReindexPlugin||The Reindex module adds APIs to reindex from one index to another or update documents in place." ;;
    parent-join)       echo "parent-join-client|org.opensearch.join.ParentJoinPlugin||This module adds the support parent-child queries and aggregations" ;;
    lang-mustache)     echo "lang-mustache-client|org.opensearch.script.mustache.MustachePlugin||Mustache scripting integration for OpenSearch" ;;
    aggs-matrix-stats) echo "aggs-matrix-stats-client|org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin||Adds aggregations whose input are a list of numeric fields and output includes a matrix." ;;
    percolator)        echo "percolator-client|org.opensearch.percolator.PercolatorPlugin||Percolator module adds capability to index queries and query these queries by specifying documents" ;;
    rank-eval)         echo "rank-eval-client|org.opensearch.index.rankeval.RankEvalPlugin||The Rank Eval module adds APIs to evaluate ranking quality." ;;
    ingest-common)     echo "ingest-common|org.opensearch.ingest.common.IngestCommonPlugin|lang-painless|Module for ingest processors that do not require additional security permissions or have large dependencies and resources" ;;
    *) return 1 ;;
  esac
}

# The grants each module's plugin-security.policy carries upstream (none for the others).
module_policy() {
  case "$1" in
    lang-painless) cat <<'EOF'
grant {
  // needed to generate runtime classes
  permission java.lang.RuntimePermission "createClassLoader";
  // needed to find the classloader to load whitelisted classes from
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF
      ;;
    reindex) cat <<'EOF'
grant {
  // reindex opens socket connections using the rest client
  permission java.net.SocketPermission "*", "connect";
};
grant codeBase "${codebase.opensearch-rest-client}" {
  permission java.net.NetPermission "getProxySelector";
};
grant codeBase "${codebase.httpasyncclient}" {
  permission java.net.NetPermission "getProxySelector";
};
EOF
      ;;
    lang-mustache) cat <<'EOF'
grant {
  permission java.lang.RuntimePermission "accessDeclaredMembers";
};
EOF
      ;;
  esac
}

# --- helpers ------------------------------------------------------------------------
need_tool() {
  # Install a missing Debian package when we can (root + apt); otherwise say what's missing.
  local tool="$1" pkg="$2"
  command -v "$tool" >/dev/null 2>&1 && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing $pkg for $tool"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  fi
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install $pkg)"
}

mvn_q() {
  # Quiet unless it fails: then show what Maven said.
  local out rc=0
  out="$(mktemp)"
  mvn -B -Dstyle.color=never "$@" >"$out" 2>&1 || rc=$?
  ((rc == 0)) || grep -E 'ERROR|BUILD' "$out" | head -n 20 >&2
  rm -f "$out"
  return "$rc"
}

java_major() {  # prints the feature version of a JDK home, e.g. 17
  "$1/bin/java" -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java\.specification\.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p' | head -n1
}

find_java() {
  # OpenSearch 2.19 runs under the SecurityManager: JDK 24+ refuses to start it
  # (Temurin 25 is on this machine), so pick the newest JDK in 11..23.
  if [[ -n "${OPENSEARCH_JAVA_HOME:-}" ]]; then
    local v
    v="$(java_major "$OPENSEARCH_JAVA_HOME")"
    [[ -n "$v" && "$v" -ge 11 && "$v" -le 23 ]] \
      || die "OPENSEARCH_JAVA_HOME=$OPENSEARCH_JAVA_HOME is Java '${v:-?}': OpenSearch $VERSION needs 11..23"
    echo "$OPENSEARCH_JAVA_HOME"
    return
  fi
  local cand best="" best_v=0 v
  local -a cands=()
  [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME")
  if command -v java >/dev/null 2>&1; then
    cands+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  cands+=(/usr/lib/jvm/* /opt/java/* /opt/jdk*)
  for cand in "${cands[@]}"; do
    [[ -x "$cand/bin/java" ]] || continue
    v="$(java_major "$cand")"
    [[ -n "$v" && "$v" -ge 11 && "$v" -le 23 && "$v" -gt "$best_v" ]] && { best="$cand"; best_v="$v"; }
  done
  if [[ -z "$best" && $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "no JDK 11..23 found: installing openjdk-17-jre-headless"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    best="$(dirname "$(dirname "$(readlink -f /usr/lib/jvm/java-17-openjdk-*/bin/java)")")"
  fi
  [[ -n "$best" ]] || die "need a JDK 11..23 (set OPENSEARCH_JAVA_HOME)"
  echo "$best"
}

http_get() {  # http_get PATH -> body on stdout, non-zero unless HTTP 2xx
  curl -fsS --max-time 10 "$URL$1" 2>/dev/null
}

alive() {  # a zombie (exited, not yet reaped by whoever adopted it) counts as dead
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)"
  [[ -n "$state" && "$state" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

running_pid() {
  # Prints the pid from the pid file if that process is still our OpenSearch node.
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "org.opensearch.bootstrap.OpenSearch" || return 1
  echo "$pid"
}

healthy() {
  local body
  body="$(http_get "/_cluster/health?wait_for_status=yellow&timeout=1s")" || return 1
  [[ "$body" == *'"status":"green"'* || "$body" == *'"status":"yellow"'* ]]
}

# --- fetch & assemble ---------------------------------------------------------------
fetch_dist() {
  # Downloads once into the cache; a partial download never reaches the final name.
  local zip="$CACHE_DIR/opensearch-$VERSION.zip" tmp
  [[ -s "$zip" ]] && return 0
  need_tool mvn maven
  mkdir -p "$CACHE_DIR"
  tmp="$(mktemp -d "$CACHE_DIR/.dl.XXXXXX")"
  log "fetching org.opensearch.distribution.integ-test-zip:opensearch:$VERSION:zip from Maven Central"
  mvn_q "$DEP_PLUGIN:copy" -Dartifact="org.opensearch.distribution.integ-test-zip:opensearch:$VERSION:zip" \
    -DoutputDirectory="$tmp" || { rm -rf "$tmp"; die "could not fetch OpenSearch $VERSION"; }
  mv "$tmp/opensearch-$VERSION.zip" "$zip"
  rm -rf "$tmp"
}

fetch_module() {
  # Resolves one module jar plus its runtime dependencies into $CACHE_DIR/modules/NAME.
  local name="$1" artifact dir tmp
  artifact="$(module_info "$name" | cut -d'|' -f1)"
  dir="$CACHE_DIR/modules/$name"
  [[ -f "$dir/.complete" ]] && return 0
  need_tool mvn maven
  mkdir -p "$CACHE_DIR/modules"
  tmp="$(mktemp -d "$CACHE_DIR/modules/.dl.XXXXXX")"
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.prism</groupId><artifactId>opensearch-module-$name</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.opensearch.plugin</groupId><artifactId>$artifact</artifactId><version>$VERSION</version>
      <!-- The server and its libraries are already in lib/ (painless-spi depends on it). -->
      <exclusions><exclusion><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId></exclusion></exclusions>
    </dependency>
  </dependencies>
</project>
EOF
  log "fetching module $name (org.opensearch.plugin:$artifact:$VERSION)"
  mvn_q -f "$tmp/pom.xml" "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
    -DoutputDirectory="$tmp/jars" || { rm -rf "$tmp"; die "could not fetch module $name"; }
  rm -rf "$dir"
  mv "$tmp/jars" "$dir"
  rm -rf "$tmp"
  touch "$dir/.complete"
}

install_module() {
  # Copies a cached module into the node home with the descriptor and policy that
  # OpenSearch's PluginsService expects of every module directory.
  local name="$1" info artifact classname extended description dest jar base
  info="$(module_info "$name")"
  IFS='|' read -r artifact classname extended description <<<"$info"
  dest="$HOME_DIR/modules/$name"
  mkdir -p "$dest"
  for jar in "$CACHE_DIR/modules/$name"/*.jar; do
    base="$(basename "$jar")"
    # Drop what the server already ships in lib/ (jar hell otherwise): match on the
    # artifact name, i.e. the file name without its -<version>.jar suffix.
    if compgen -G "$HOME_DIR/lib/${base%-[0-9]*}-[0-9]*.jar" >/dev/null; then continue; fi
    # Module jars are installed under the module's own name, as the distribution does.
    [[ "$base" == "$artifact-$VERSION.jar" ]] && base="$name-$VERSION.jar"
    cp "$jar" "$dest/$base"
  done
  cat >"$dest/plugin-descriptor.properties" <<EOF
description=$description
version=$VERSION
name=$name
classname=$classname
java.version=11
opensearch.version=$VERSION
custom.foldername=
extended.plugins=$extended
has.native.controller=false
EOF
  local policy
  policy="$(module_policy "$name")"
  [[ -z "$policy" ]] || printf '%s\n' "$policy" >"$dest/plugin-security.policy"
}

assemble_home() {
  # Rebuilds $HOME_DIR only when version, module list or layout changed.
  local stamp="$VERSION|$MODULES|$LAYOUT_REV" name ext
  if [[ -f "$HOME_DIR/.prism-stamp" && "$(cat "$HOME_DIR/.prism-stamp")" == "$stamp" ]]; then
    return 0
  fi
  for name in $MODULES; do
    module_info "$name" >/dev/null || die "unknown module '$name' in OPENSEARCH_MODULES"
    ext="$(module_info "$name" | cut -d'|' -f3)"
    for dep in ${ext//,/ }; do
      [[ " $MODULES " == *" $dep "* ]] || die "module $name needs $dep in OPENSEARCH_MODULES"
    done
  done
  fetch_dist
  for name in $MODULES; do fetch_module "$name"; done
  need_tool unzip unzip
  log "unpacking OpenSearch $VERSION into $HOME_DIR"
  local tmp
  tmp="$(mktemp -d "$RUN_DIR/.unpack.XXXXXX")"
  unzip -q "$CACHE_DIR/opensearch-$VERSION.zip" -d "$tmp"
  rm -rf "$HOME_DIR"
  mv "$tmp/opensearch-$VERSION" "$HOME_DIR"
  rm -rf "$tmp"
  for name in $MODULES; do install_module "$name"; done
  echo "$stamp" >"$HOME_DIR/.prism-stamp"
}

write_config() {
  rm -rf "$CONF_DIR"
  [[ "$KEEP_DATA" == 1 ]] || rm -rf "$DATA_DIR"
  rm -rf "$LOG_DIR"  # logs describe one launch: a failure report must not show older runs
  mkdir -p "$CONF_DIR/jvm.options.d" "$DATA_DIR" "$LOG_DIR"
  # The node runs in the foreground of a detached process: drop the console appender so
  # stdout.log keeps only launcher/JVM messages, not a second copy of the server log.
  grep -v '^rootLogger.appenderRef.console.ref' "$HOME_DIR/config/log4j2.properties" \
    >"$CONF_DIR/log4j2.properties"
  # Keep GC logs, crash files and heap dumps in the runtime dirs rather than relative
  # to the working directory.
  sed -e "s#file=logs/gc.log#file=$LOG_DIR/gc.log#" \
      -e "s#filecount=32,filesize=64m#filecount=4,filesize=16m#" \
      -e "s#-XX:ErrorFile=logs/#-XX:ErrorFile=$LOG_DIR/#" \
      -e "s#-XX:HeapDumpPath=data#-XX:HeapDumpPath=$LOG_DIR#" \
      "$HOME_DIR/config/jvm.options" >"$CONF_DIR/jvm.options"
  # jvm.options.d is read after jvm.options, so this wins over its -Xms1g/-Xmx1g.
  printf -- '-Xms%s\n-Xmx%s\n' "$HEAP" "$HEAP" >"$CONF_DIR/jvm.options.d/prism.options"
  cat >"$CONF_DIR/opensearch.yml" <<EOF
# Generated by scripts/opensearch.sh on every start: edit the script, not this file.
cluster.name: prism-test
node.name: prism-node-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: $PORT
transport.port: $((PORT + 100))-$((PORT + 200))
path.data: $DATA_DIR
path.logs: $LOG_DIR
# A nearly full disk must not turn indices read-only or block shard allocation.
cluster.routing.allocation.disk.threshold_enabled: false
# No mmap: a small vm.max_map_count (65530 here, unchangeable in containers) is then harmless.
node.store.allow_mmap: false
bootstrap.memory_lock: false
# The integ-test distribution has no security plugin, so HTTP is plain and unauthenticated.
EOF
}

# --- commands -----------------------------------------------------------------------
prepare_user() {
  # OpenSearch refuses to run as root: run it as a system account owning the runtime dir.
  if ! id -u "$RUN_AS" >/dev/null 2>&1; then
    log "creating system user $RUN_AS"
    local group=(--user-group)
    getent group "$RUN_AS" >/dev/null && group=(--gid "$RUN_AS")
    useradd --system "${group[@]}" --no-create-home --home-dir "$RUN_DIR" \
      --shell /usr/sbin/nologin "$RUN_AS"
  fi
  chown -R "$RUN_AS:$RUN_AS" "$RUN_DIR"
}

launch() {
  # Detached from our session (setsid) so the node outlives the shell that started it;
  # every step execs, so $! ends up being the node's JVM. 9>&-: the node must not
  # inherit the start/stop lock.
  local java_home="$1"
  local -a as_user=()
  if [[ $EUID -eq 0 ]]; then
    as_user=(setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups --)
  fi
  cd "$RUN_DIR"
  env -u JAVA_TOOL_OPTIONS -u JAVA_OPTS -u JAVA_HOME HOME="$RUN_DIR" \
    OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_PATH_CONF="$CONF_DIR" OPENSEARCH_TMPDIR="$RUN_DIR/tmp" \
    setsid nohup "${as_user[@]}" "$HOME_DIR/bin/opensearch" \
    </dev/null >"$LOG_DIR/stdout.log" 2>&1 9>&- &
  echo $!
}

cmd_start() {
  mkdir -p "$RUN_DIR"
  # One start/stop at a time (parallel test workers may all call start).
  exec 9>"$RUN_DIR/.lock"
  flock 9

  if running_pid >/dev/null; then
    local running_url
    running_url="$(cat "$URL_FILE" 2>/dev/null || true)"
    [[ "$running_url" == "$URL" ]] \
      || die "a node from $RUN_DIR already runs at ${running_url:-?}: stop it first"
    if wait_healthy "$(running_pid)"; then echo "$URL"; return 0; fi
    die "node (pid $(running_pid)) is running but not healthy; see $LOG_DIR"
  fi
  rm -f "$PID_FILE"
  port_open && die "port $PORT is already in use by another process (set OPENSEARCH_PORT)"

  need_tool curl curl
  local java_home t0=$SECONDS
  java_home="$(find_java)"
  assemble_home
  write_config
  mkdir -p "$RUN_DIR/tmp"
  [[ $EUID -eq 0 ]] && prepare_user
  log "starting OpenSearch $VERSION on $URL (java: $java_home, heap $HEAP, logs: $LOG_DIR)"
  local pid
  pid="$(launch "$java_home")"
  echo "$pid" >"$PID_FILE"
  echo "$URL" >"$URL_FILE"
  if ! wait_healthy "$pid"; then
    kill "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    # Show the last messages without Java stack frames.
    local f
    for f in "$LOG_DIR/stdout.log" "$LOG_DIR/prism-test.log"; do
      [[ -s "$f" ]] || continue
      log "--- last lines of $f"
      grep -vE '^\s+(at |\.\.\. [0-9]+ more)' "$f" | tail -n 25 | cut -c1-400 >&2 || true
    done
    die "OpenSearch failed to start (files under $RUN_DIR)"
  fi
  log "ready in $((SECONDS - t0))s"
  echo "$URL"
}

wait_healthy() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive "$pid" || { log "the node exited during startup"; return 1; }
    healthy && return 0
    sleep 1
  done
  log "no yellow cluster health within ${START_TIMEOUT}s"
  return 1
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock 9
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  kill "$pid"
  # OpenSearch flushes and closes shards on SIGTERM; give it a moment before SIGKILL.
  local i
  for ((i = 0; i < 60; i++)); do
    alive "$pid" || break
    sleep 0.5
  done
  if alive "$pid"; then
    log "pid $pid ignored SIGTERM for 30s: killing"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid health
  if pid="$(running_pid)"; then
    URL="$(cat "$URL_FILE" 2>/dev/null || echo "$URL")"
    health="$(http_get "/_cluster/health" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')"
    echo "running pid=$pid url=$URL health=${health:-unreachable}"
    return 0
  fi
  echo "stopped"
  return 3
}

cmd_url() {  # the running node's URL, else the one `start` would use
  if running_pid >/dev/null && [[ -s "$URL_FILE" ]]; then cat "$URL_FILE"; else echo "$URL"; fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
