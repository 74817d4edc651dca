#!/usr/bin/env bash
# The cluster run of `make loadtest`: event-ingest (release build) in front of the test cluster
# of scripts/clickhouse-cluster.sh (ZooKeeper and three ClickHouse 18.16 servers: shard 1 =
# replicas a and b, shard 2 = c), under oha for DURATION seconds. Reports events/s and
# inserts/s per shard (from the gateway's per-host counters), each server's CPU per stored
# row (from /proc: a shard's CPU includes its second replica's fetches and merges) and the
# gateway's CPU per event. Writes target/loadtest/cluster.md.
#
#   scripts/loadtest-cluster.sh --oha PATH     # DURATION=20 CONCURRENCY=32 EVENTS=1000 DURABILITY=disk
#
# The cluster runs in a temporary folder on ports CLUSTER_BASE_PORT (default 17400) to +399
# and is taken down at exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OHA="oha"
if [ "${1:-}" = "--oha" ]; then OHA="$2"; fi
DURATION="${DURATION:-20}"
CONCURRENCY="${CONCURRENCY:-32}"
EVENTS="${EVENTS:-1000}"
DURABILITY="${DURABILITY:-disk}"
BASE="${CLUSTER_BASE_PORT:-17400}"
OUT="target/loadtest"
mkdir -p "$OUT"
say() { echo "loadtest-cluster.sh: $*" >&2; }

DIR="$(mktemp -d /tmp/event-ingest-loadtest-cluster.XXXXXX)"
GATEWAY=""
cleanup() {
  if [ -n "$GATEWAY" ] && kill -0 "$GATEWAY" 2>/dev/null; then
    kill -TERM "$GATEWAY"
    wait "$GATEWAY" || true
  fi
  scripts/clickhouse-cluster.sh down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

CLICKHOUSE_CLUSTER_BASE_PORT="$BASE" scripts/clickhouse-cluster.sh up "$DIR" >/dev/null
# Not sourced: the host list's `;` would end the assignment.
CLICKHOUSE_HOSTS="$(sed -n 's/^CLICKHOUSE_HOSTS=//p' "$DIR/cluster.env")"
CLICKHOUSE_CLUSTER="$(sed -n 's/^CLICKHOUSE_CLUSTER=//p' "$DIR/cluster.env")"
say "cluster up: $CLICKHOUSE_HOSTS ($CLICKHOUSE_CLUSTER)"

# 200 different bodies (oha picks a line per request): distinct devices and sessions, so no
# two batches are the same block (ReplicatedMergeTree would keep only one of them).
python3 - "$EVENTS" > "$DIR/bodies.ndjson" <<'PY'
import json, random, sys, uuid
n = int(sys.argv[1])
rng = random.Random(7)
for line in range(200):
    print(json.dumps([{
        "client_time": "2026-12-01 00:00:00",
        "device_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "device_os": rng.choice(["IOS 17.1", "Android 14", "Android 13"]),
        "session": f"s{line}-{i}",
        "sequence": i,
        "event": f"event_{rng.randrange(30)}",
        "param_int": rng.randrange(100000),
        "param_str": "load",
    } for i in range(n)], separators=(",", ":")))
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
# Probes and metrics on the admin listener (in `prod` they are closed on HTTP_PORT).
ADMIN=$(free_port)
env -u HTTP_WORKERS -u BUFFER_SIZE -u BUFFER_FLUSH_MS -u BUFFER_MAX_BYTES -u RUST_LOG \
  APP_ENV=prod HTTP_HOST=127.0.0.1 HTTP_PORT="$PORT" ADMIN_PORT="$ADMIN" CLICKHOUSE_NAME=loadtest_cluster \
  CLICKHOUSE_HOSTS="$CLICKHOUSE_HOSTS" CLICKHOUSE_CLUSTER="$CLICKHOUSE_CLUSTER" \
  DURABILITY="$DURABILITY" SPOOL_DIR="$DIR/spool" \
  target/release/event-ingest 2> "$DIR/gateway.log" &
GATEWAY=$!
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$ADMIN/v1/health" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN/v1/health" >/dev/null || { tail -5 "$DIR/gateway.log"; exit 1; }

TICKS=$(getconf CLK_TCK)
cpu() { awk -v t="$TICKS" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
host_sum() { # host_sum METRIC SHARD: the sum over the shard's hosts
  curl -s "http://127.0.0.1:$ADMIN/metrics" |
    awk -v m="event_ingest_clickhouse_host_$1{shard=\"$2\"" 'index($0, m) == 1 { s += $2 } END { printf "%d", s }'
}
PIDS=("$GATEWAY" "$(cat "$DIR/a/pid")" "$(cat "$DIR/b/pid")" "$(cat "$DIR/c/pid")")
declare -A CPU0 ROWS0 INS0
for p in "${PIDS[@]}"; do CPU0[$p]=$(cpu "$p"); done
for s in 1 2; do ROWS0[$s]=$(host_sum rows_total "$s"); INS0[$s]=$(host_sum inserts_total "$s"); done
say "oha: ${DURATION}s, $CONCURRENCY connections, $EVENTS events per request"
"$OHA" --no-tui --output-format json -o "$DIR/oha.json" -z "${DURATION}s" -c "$CONCURRENCY" \
  -m POST -T application/json -Z "$DIR/bodies.ndjson" -t 30s "http://127.0.0.1:$PORT/v1/events"
# Let the lanes write what the last requests buffered.
for _ in $(seq 100); do
  [ "$(curl -s "http://127.0.0.1:$ADMIN/v1/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["buffered_events"])')" = 0 ] && break
  sleep 0.1
done
declare -A CPU1
for p in "${PIDS[@]}"; do CPU1[$p]=$(cpu "$p"); done
STORED=$(curl -s "http://$(echo "$CLICKHOUSE_HOSTS" | cut -d, -f1)/" --data-binary "SELECT count() FROM loadtest_cluster.events")
OK=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["statusCodeDistribution"].get("200", 0))' "$DIR/oha.json")
ACCEPTED=$((OK * EVENTS))

{
  echo "## Cluster run ($(date -u +%Y-%m-%d), ${DURATION} s, c=$CONCURRENCY, $EVENTS events per request, DURABILITY=$DURABILITY)"
  echo
  echo "Gateway: $ACCEPTED events acknowledged ($STORED stored through the Distributed table), $(awk -v a="$ACCEPTED" -v d="$DURATION" 'BEGIN{printf "%.0f", a/d}') events/s;" \
    "CPU $(awk -v c0="${CPU0[$GATEWAY]}" -v c1="${CPU1[$GATEWAY]}" -v a="$ACCEPTED" 'BEGIN{printf "%.2f", (c1-c0)*1e6/(a>0?a:1)}') µs per event."
  echo
  echo "| shard | rows | rows/s | inserts | inserts/s | ClickHouse CPU s (its replicas) | CPU µs per row |"
  echo "|---|---|---|---|---|---|---|"
  for s in 1 2; do
    rows=$(( $(host_sum rows_total "$s") - ROWS0[$s] ))
    ins=$(( $(host_sum inserts_total "$s") - INS0[$s] ))
    if [ "$s" = 1 ]; then members=("${PIDS[1]}" "${PIDS[2]}"); else members=("${PIDS[3]}"); fi
    secs=0
    for p in "${members[@]}"; do secs=$(awk -v s="$secs" -v a="${CPU0[$p]}" -v b="${CPU1[$p]}" 'BEGIN{printf "%.3f", s+b-a}'); done
    awk -v s="$s" -v r="$rows" -v i="$ins" -v d="$DURATION" -v c="$secs" 'BEGIN{
      printf "| %d | %d | %.0f | %d | %.2f | %.2f | %.2f |\n", s, r, r/d, i, i/d, c, c*1e6/(r>0?r:1) }'
  done
} | tee "$OUT/cluster.md"
