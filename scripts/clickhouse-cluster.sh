#!/usr/bin/env bash
# A ClickHouse cluster on 127.0.0.1 for tests and by-hand checks: one ZooKeeper and three
# ClickHouse servers, shard 1 = replicas a and b, shard 2 = replica c.
#
#   scripts/clickhouse-cluster.sh up     DIR [member...]   # start what is not running (all by default)
#   scripts/clickhouse-cluster.sh down   DIR [member...]   # SIGTERM by recorded PID, wait for exit
#   scripts/clickhouse-cluster.sh status DIR               # each member up/down; exit 1 if any is down
#
# Members: zk, a, b, c. Everything lives under DIR (configs, data, logs, PIDs); the servers are
# started directly, no systemd. `up` prints the settings for the service on stdout
# (CLICKHOUSE_HOSTS=..., CLICKHOUSE_CLUSTER=..., and the same hosts with shard 2 over HTTPS with
# the test CA that signed every member's certificate) and also writes them to DIR/cluster.env;
# messages go to stderr. A member killed with SIGKILL comes back with `up DIR <member>`.
#
# Settings (read on the first `up` of a DIR, then kept in DIR/ports.env):
#   CLICKHOUSE_CLUSTER_BASE_PORT  default 18000. Ports: ZooKeeper BASE+181; member i (a=1, b=2,
#                                 c=3): TCP BASE+100i, interserver BASE+100i+9, HTTP BASE+100i+23,
#                                 HTTPS BASE+100i+43 (so a = 18100/18109/18123/18143). One cluster needs BASE..BASE+399;
#                                 the default block stays clear of 8123/9000 and of the 20000-32009
#                                 range tests/api/own_clickhouse.rs draws from.
#   CLICKHOUSE_CLUSTER            cluster name in <remote_servers>, default events_cluster.
#   CLICKHOUSE_CLUSTER_ZK_SESSION_TIMEOUT_MS
#                                 default 5000 (ClickHouse's own default is 30000). A replica
#                                 restarted after SIGKILL cannot rejoin until its old ZooKeeper
#                                 session expires, so tests want it short.
#
# Ports go in the XML, never on the command line: with --tcp_port given there, 18.16 flips
# system.clusters.is_local to 0 a few seconds after start and ON CLUSTER DDL stops finding itself.
set -euo pipefail

say() { echo "clickhouse-cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

CH_CONFIG="${CLICKHOUSE_CONFIG:-/etc/clickhouse-server/config.xml}"
MEMBERS=(zk a b c)
CH_MEMBERS=(a b c)
# Longest wait for one member to answer after start, or to exit after SIGTERM.
WAIT_SECONDS=120

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- layout ---------------------------------------------------------------------------------

load_settings() {
  ENV_FILE="$DIR/cluster.env"
  if [ -f "$DIR/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
    if [ -n "${CLICKHOUSE_CLUSTER_BASE_PORT:-}" ] && [ "$CLICKHOUSE_CLUSTER_BASE_PORT" != "$BASE" ]; then
      die "$DIR was set up with base port $BASE, not $CLICKHOUSE_CLUSTER_BASE_PORT; use another DIR or 'down' and remove it"
    fi
  else
    BASE="${CLICKHOUSE_CLUSTER_BASE_PORT:-18000}"
    CLUSTER="${CLICKHOUSE_CLUSTER:-events_cluster}"
    SESSION_MS="${CLICKHOUSE_CLUSTER_ZK_SESSION_TIMEOUT_MS:-5000}"
  fi
  case "$BASE" in '' | *[!0-9]*) die "CLICKHOUSE_CLUSTER_BASE_PORT must be a number" ;; esac
  if [ "$BASE" -lt 1024 ] || [ "$BASE" -gt 65100 ]; then die "CLICKHOUSE_CLUSTER_BASE_PORT must be in 1024..65100"; fi
  case "$CLUSTER" in '' | *[!A-Za-z0-9_]*) die "CLICKHOUSE_CLUSTER must be letters, digits, _" ;; esac
  ZK_PORT=$((BASE + 181))
}

index_of() { case "$1" in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac; }
shard_of() { case "$1" in a | b) echo 1 ;; c) echo 2 ;; esac; }
tcp_port() { echo $((BASE + 100 * $(index_of "$1"))); }
http_port() { echo $(($(tcp_port "$1") + 23)); }
https_port() { echo $(($(tcp_port "$1") + 43)); }
interserver_port() { echo $(($(tcp_port "$1") + 9)); }

hosts_setting() {
  echo "127.0.0.1:$(http_port a),127.0.0.1:$(http_port b);127.0.0.1:$(http_port c)"
}

# The same hosts with shard 2's replica reached over HTTPS (a test CA's certificate).
hosts_https_setting() {
  echo "127.0.0.1:$(http_port a),127.0.0.1:$(http_port b);https://localhost:$(https_port c)"
}

# A test CA and a certificate for localhost and 127.0.0.1 every member serves HTTPS with.
tls_material() {
  local t="$DIR/tls"
  [ -f "$t/server.crt" ] && [ -f "$t/dh.pem" ] && return 0
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=event-ingest cluster test CA" \
    -keyout "$t/ca.key" -out "$t/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$t/server.key" \
    -out "$t/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "extendedKeyUsage=serverAuth" >"$t/server.ext"
  openssl x509 -req -days 3650 -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" \
    -CAcreateserial -extfile "$t/server.ext" -out "$t/server.crt" 2>/dev/null
  openssl dhparam -dsaparam -out "$t/dh.pem" 2048 2>/dev/null
  chmod 644 "$t"/*.key
}

# --- processes ------------------------------------------------------------------------------

pid_of() { cat "$DIR/$1/pid" 2>/dev/null || true; }

# Running, not a zombie (PID 1 in a container may never reap), and really ours: its command
# line names the member's folder, so a recycled PID is not mistaken for the member.
alive() {
  local pid stat
  pid="$(pid_of "$1")"
  [ -n "$pid" ] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  case "${stat##*) }" in Z*) return 1 ;; esac
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/$1/"
}

# `srvr`, not `ruok`: ZooKeeper answers `imok` while it is still loading its data and closing
# every session, and a ClickHouse 18.16 with replicated tables that starts then exits. The read
# is bounded: a command that reaches ZooKeeper while it is still starting can fail inside it
# (a NullPointerException closing the socket) and leave the socket open, unanswered, for good.
zk_ok() {
  (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf srvr >&3 && timeout 3 cat <&3) 2>/dev/null |
    grep -q '^Mode: '
}

ch_ok() { curl -fsS --max-time 2 "http://127.0.0.1:$(http_port "$1")/ping" >/dev/null 2>&1; }

# The server answers and its ZooKeeper session is open: ON CLUSTER DDL and replicated inserts work.
ch_zk_ok() {
  curl -fsS --max-time 3 "http://127.0.0.1:$(http_port "$1")/" \
    --data-binary "SELECT count() FROM system.zookeeper WHERE path = '/'" >/dev/null 2>&1
}

answering() {
  if [ "$1" = zk ]; then zk_ok; else ch_ok "$1"; fi
}

wait_until() { # seconds member predicate...
  local seconds="$1" member="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$deadline" ]; do
    "$@" && return 0
    # Just after the launch the pid is still the forked shell, not yet the server (whose
    # command line `alive` checks): on a loaded machine that lasts a moment, so a member
    # counts as dead only when it is still not alive a second later.
    alive "$member" || { sleep 1; alive "$member"; } || return 1
    sleep 0.2
  done
  return 1
}

# --- ZooKeeper ------------------------------------------------------------------------------

install_packages() {
  local need=()
  [ -f /usr/share/java/zookeeper.jar ] && [ -f /usr/share/java/slf4j-simple.jar ] || need+=(zookeeper)
  command -v clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server clickhouse-client)
  command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
  [ "${#need[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    die "missing ${need[*]}: install them (Debian: sudo apt-get install ${need[*]}) and re-run"
  fi
}

write_zk_config() {
  local d="$DIR/zk"
  mkdir -p "$d/data"
  # tickTime 500 ms lets ClickHouse's short session timeout through: ZooKeeper grants sessions
  # between 2 and 20 ticks unless told otherwise, so the bounds are set explicitly.
  cat >"$d/zoo.cfg" <<EOF
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
dataDir=$d/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
}

start_zk() {
  local d="$DIR/zk"
  write_zk_config
  # Heap capped: the JVM would otherwise reserve a quarter of the machine. forceSync=no: no
  # fsync per transaction (a test cluster on a shared disk); a process kill still loses
  # nothing, only a machine crash could.
  nohup java -Xms32m -Xmx256m -XX:+UseSerialGC -Dzookeeper.forceSync=no \
    -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$d/zoo.cfg" \
    >"$d/zk.log" 2>&1 &
  echo $! >"$d/pid"
}

# --- ClickHouse -----------------------------------------------------------------------------

write_ch_config() {
  local m="$1" d="$DIR/$1"
  mkdir -p "$d/config.d" "$d/data/tmp" "$d/data/user_files" "$d/data/format_schemas" "$d/log"
  cp "$CH_CONFIG" "$d/config.xml"
  cp "$(dirname "$CH_CONFIG")/users.xml" "$d/users.xml"
  cat >"$d/config.d/10-local.xml" <<EOF
<?xml version="1.0"?>
<!-- Member $m: its own ports, folders and logs. Generated by scripts/clickhouse-cluster.sh. -->
<yandex>
    <listen_host replace="replace">127.0.0.1</listen_host>
    <http_port>$(http_port "$m")</http_port>
    <https_port>$(https_port "$m")</https_port>
    <openSSL>
        <server>
            <certificateFile>$DIR/tls/server.crt</certificateFile>
            <privateKeyFile>$DIR/tls/server.key</privateKeyFile>
            <dhParamsFile>$DIR/tls/dh.pem</dhParamsFile>
        </server>
    </openSSL>
    <tcp_port>$(tcp_port "$m")</tcp_port>
    <interserver_http_port>$(interserver_port "$m")</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>$d/data/</path>
    <tmp_path>$d/data/tmp/</tmp_path>
    <user_files_path>$d/data/user_files/</user_files_path>
    <format_schema_path>$d/data/format_schemas/</format_schema_path>
    <logger>
        <level>information</level>
        <log>$d/log/server.log</log>
        <errorlog>$d/log/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <!-- Caches are allocated on demand, but three servers on one small machine keep them small. -->
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
EOF
  cat >"$d/config.d/20-cluster.xml" <<EOF
<?xml version="1.0"?>
<!-- The cluster as every member sees it. Generated by scripts/clickhouse-cluster.sh. -->
<yandex>
    <zookeeper replace="replace">
        <node>
            <host>127.0.0.1</host>
            <port>$ZK_PORT</port>
        </node>
        <session_timeout_ms>$SESSION_MS</session_timeout_ms>
    </zookeeper>
    <remote_servers replace="replace">
        <$CLUSTER>
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>$(tcp_port a)</port></replica>
                <replica><host>127.0.0.1</host><port>$(tcp_port b)</port></replica>
            </shard>
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>$(tcp_port c)</port></replica>
            </shard>
        </$CLUSTER>
    </remote_servers>
    <macros replace="replace">
        <cluster>$CLUSTER</cluster>
        <shard>$(shard_of "$m")</shard>
        <replica>$m</replica>
    </macros>
</yandex>
EOF
}

start_ch() {
  local m="$1" d="$DIR/$1"
  write_ch_config "$m"
  nohup clickhouse-server --config-file="$d/config.xml" >"$d/log/stdout.log" 2>&1 &
  echo $! >"$d/pid"
}

# --- commands -------------------------------------------------------------------------------

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ports_of() {
  if [ "$1" = zk ]; then echo "$ZK_PORT"; else echo "$(tcp_port "$1") $(interserver_port "$1") $(http_port "$1") $(https_port "$1")"; fi
}

# Starts a member that is not running (after checking its ports are free); returns at once.
launch_member() {
  local m="$1" p
  alive "$m" && return 0
  for p in $(ports_of "$m"); do
    port_taken "$p" && die "port $p (for $m) is taken by another process; pick another CLICKHOUSE_CLUSTER_BASE_PORT"
  done
  if [ "$m" = zk ]; then start_zk; else start_ch "$m"; fi
  LAUNCHED+=("$m")
}

# Waits until a member answers; on failure shows its last log entries and exits.
await_member() {
  local m="$1"
  if ! wait_until "$WAIT_SECONDS" "$m" answering "$m"; then
    say "$m did not answer; last log lines:"
    # Log entries only (they start with a date), not the stack traces between them.
    if [ "$m" = zk ]; then
      tail -n 20 "$DIR/zk/zk.log" >&2 2>/dev/null || true
    else
      grep -hE '^[0-9]{4}\.[0-9]{2}\.[0-9]{2} ' "$DIR/$m/log/server.err.log" 2>/dev/null | tail -n 5 | cut -c1-400 >&2 || true
    fi
    exit 1
  fi
  case " ${LAUNCHED[*]} " in *" $m "*) say "$m up (pid $(pid_of "$m"))" ;; esac
}

# SIGTERM to each (ClickHouse takes seconds to shut down, so all are signalled first, then
# waited for together); SIGKILL for any still running after WAIT_SECONDS.
stop_members() {
  local m pid signalled=()
  for m in "$@"; do
    if alive "$m"; then
      kill "$(pid_of "$m")" 2>/dev/null || true
      signalled+=("$m")
    else
      rm -f "$DIR/$m/pid"
    fi
  done
  local deadline=$((SECONDS + WAIT_SECONDS))
  for m in "${signalled[@]}"; do
    while alive "$m" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$m"; then
      pid="$(pid_of "$m")"
      say "$m (pid $pid) ignored SIGTERM for ${WAIT_SECONDS}s; sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$m/pid"
    say "$m down"
  done
}

selected() { # members named on the command line, in cluster order, or all
  local want=("$@") m w
  if [ "${#want[@]}" -eq 0 ]; then
    echo "${MEMBERS[@]}"
    return
  fi
  for w in "${want[@]}"; do
    case " ${MEMBERS[*]} " in *" $w "*) ;; *) die "unknown member '$w' (members: ${MEMBERS[*]})" ;; esac
  done
  for m in "${MEMBERS[@]}"; do
    for w in "${want[@]}"; do [ "$m" = "$w" ] && echo -n "$m "; done
  done
  echo
}

cmd_up() {
  local members m
  members="$(selected "$@")"
  install_packages
  mkdir -p "$DIR"
  tls_material
  if [ ! -f "$DIR/ports.env" ]; then
    printf 'BASE=%s\nCLUSTER=%s\nSESSION_MS=%s\n' "$BASE" "$CLUSTER" "$SESSION_MS" >"$DIR/ports.env"
  fi
  # ZooKeeper first and ready (a server with replicated tables exits when it cannot reach it),
  # then the ClickHouse servers together.
  LAUNCHED=()
  case " $members " in *" zk "*) launch_member zk && await_member zk ;; esac
  local servers=()
  for m in $members; do [ "$m" = zk ] || servers+=("$m"); done
  if [ "${#servers[@]}" -gt 0 ] && ! alive zk; then
    say "warning: ZooKeeper is down; ClickHouse 18.16 exits at start while it holds replicated tables and cannot reach ZooKeeper"
  fi
  for m in "${servers[@]}"; do launch_member "$m"; done
  for m in "${servers[@]}"; do await_member "$m"; done
  # Usable means every running server holds a ZooKeeper session, not only that it answers.
  if alive zk; then
    for m in "${CH_MEMBERS[@]}"; do
      alive "$m" || continue
      wait_until "$WAIT_SECONDS" "$m" ch_zk_ok "$m" || die "$m answers but cannot reach ZooKeeper on $ZK_PORT"
    done
  fi
  printf 'CLICKHOUSE_HOSTS=%s\nCLICKHOUSE_CLUSTER=%s\nCLICKHOUSE_HOSTS_HTTPS=%s\nCLICKHOUSE_CA_FILE=%s\n' \
    "$(hosts_setting)" "$CLUSTER" "$(hosts_https_setting)" "$DIR/tls/ca.crt" | tee "$ENV_FILE"
}

cmd_down() {
  local members m servers=() zk=()
  members="$(selected "$@")"
  # ClickHouse first, ZooKeeper last: servers stopping with ZooKeeper gone wait on it.
  for m in $members; do
    if [ "$m" = zk ]; then zk=(zk); else servers+=("$m"); fi
  done
  [ "${#servers[@]}" -eq 0 ] || stop_members "${servers[@]}"
  [ "${#zk[@]}" -eq 0 ] || stop_members zk
}

cmd_status() {
  local m state all=0 extra
  for m in "${MEMBERS[@]}"; do
    if alive "$m" && answering "$m"; then state=up; else state=down; all=1; fi
    if [ "$m" = zk ]; then
      extra="zookeeper          port $ZK_PORT"
    else
      extra="shard $(shard_of "$m") replica $m  http $(http_port "$m") tcp $(tcp_port "$m") interserver $(interserver_port "$m")"
    fi
    printf '%-3s %-5s pid %-8s %s\n' "$m" "$state" "$(pid_of "$m")" "$extra"
  done
  printf 'CLICKHOUSE_HOSTS=%s\nCLICKHOUSE_CLUSTER=%s\n' "$(hosts_setting)" "$CLUSTER"
  return "$all"
}

[ $# -ge 2 ] || usage
CMD="$1"
DIR="$2"
shift 2
[ "$CMD" = up ] && { mkdir -p "$DIR" || die "cannot create $DIR"; }
if [ -d "$DIR" ]; then DIR="$(cd "$DIR" && pwd)"; else DIR="$(pwd)/${DIR#./}"; fi
load_settings
case "$CMD" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status ;;
  *) usage ;;
esac
