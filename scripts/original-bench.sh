#!/usr/bin/env bash
# The original Go service's own benchmark, reproduced: `ab -n 15000 -c 1` posting a 30-event
# body (≈ 6.6 KB) to `double` and then `direct` mode, each followed by a check that
# ClickHouse holds every acknowledged event. The original reported 1,751 requests/s
# buffered and 124 unbuffered. Usage: scripts/original-bench.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUESTS="${1:-15000}"
CH="http://${CLICKHOUSE_HOST:-127.0.0.1}:${CLICKHOUSE_PORT:-8123}"
PORT="${BENCH_HTTP_PORT:-18181}"
OUT=target/original-bench
mkdir -p "$OUT"

scripts/clickhouse.sh ensure
if ! command -v ab >/dev/null; then
  echo "installing apache2-utils (ab)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null
fi
cargo build --release --quiet

# 30 events shaped like the original service's benchmark body.
{
  printf '['
  for i in $(seq 1 30); do
    [ "$i" -gt 1 ] && printf ','
    printf '{"client_time": "2020-12-01 23:59:00","device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C%04X","device_os": "IOS 13.5.1","session": "ybuRi8mAUypxjbxQ","sequence": %d,"event": "app_start","param_int": %d,"param_str": "some text"}' "$i" "$i" "$((i * 7))"
  done
  printf ']'
} >"$OUT/payload.json"

q() { curl -fsS "$CH/" --data-binary "$1"; }
q "CREATE DATABASE IF NOT EXISTS original_bench" >/dev/null

for mode in double direct; do
  table="ab_${mode}_$(date +%s)"
  APP_ENV=prod HTTP_HOST=127.0.0.1 HTTP_PORT="$PORT" BUFFER_MODE="$mode" \
    CLICKHOUSE_NAME=original_bench CLICKHOUSE_TABLE="$table" \
    ./target/release/event-ingest 2>"$OUT/$mode.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/v1/health" >/dev/null && break; sleep 0.1; done
  ab -q -n "$REQUESTS" -c 1 -p "$OUT/payload.json" -T application/json \
    "http://127.0.0.1:$PORT/v1/events" >"$OUT/$mode.ab.txt"
  kill -TERM "$pid"
  wait "$pid" || { echo "$mode: event-ingest exited non-zero, see $OUT/$mode.log" >&2; exit 1; }
  rps=$(awk '/Requests per second/ {print $4}' "$OUT/$mode.ab.txt")
  failed=$(awk '/Failed requests/ {print $3}' "$OUT/$mode.ab.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$OUT/$mode.ab.txt")
  stored=$(q "SELECT count() FROM original_bench.$table")
  expected=$(( (REQUESTS - failed) * 30 ))
  check=$([ "$stored" = "$expected" ] && echo ok || echo MISMATCH)
  echo "$mode: $rps requests/s, p99 ${p99} ms, failed $failed, stored $stored of $expected events ($check)"
  [ "$check" = ok ] || exit 1
done
