#!/usr/bin/env bash
# Steady state at a fixed request rate (default 6,000 req/s of 30-event bodies, 180,000
# events/s, at 32 connections; RATE 0: as fast as the service answers): inserts per second,
# RSS over time, p99 and peak RSS, and, for the ClickHouse server scripts/clickhouse.sh
# started, its whole CPU (background merges included) per row stored from 10 s in to 10 s
# before the end (SECONDS a multiple of 5, above 20). The service's settings come from the
# environment (e.g. DURABILITY=memory). Needs `make loadtest` to have run once (it installs
# oha and writes the body files).
#   scripts/steady-state.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RATE="${1:-6000}"; SECS="${2:-60}"; PORT="${STEADY_PORT:-18666}"
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
BODY=target/loadtest/bodies/events_b30.json
[ -f "$BODY" ] || { echo "run 'make loadtest' first (it writes $BODY)" >&2; exit 1; }
scripts/clickhouse.sh ensure
cargo build --release --quiet

CH_URL="http://${CLICKHOUSE_HOST:-127.0.0.1}:${CLICKHOUSE_PORT:-8123}/"
ch_query() { curl -fs "$CH_URL" --data-binary "$1"; }
# No merge of an earlier run's table running: the CPU sampled below is this run's.
for _ in $(seq 1 120); do [ "$(ch_query 'SELECT count() FROM system.merges')" = 0 ] && break; sleep 0.5; done

TABLE="s_$(date +%s)"
APP_ENV=prod HTTP_HOST=127.0.0.1 HTTP_PORT="$PORT" CLICKHOUSE_NAME=steady \
  CLICKHOUSE_TABLE="$TABLE" ./target/release/event-ingest 2>target/steady.log &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; ch_query "DROP TABLE IF EXISTS steady.$TABLE" || true' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/v1/health" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
field() { curl -fs "http://127.0.0.1:$PORT/v1/health" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# The ClickHouse server's CPU (all threads, merges included) and the rows stored, sampled at
# 10 s and at SECONDS - 10 s.
ch_pid="$(scripts/clickhouse.sh pid)"
# "<seconds> <CPU ticks> <rows>"
ch_sample() {
  local ticks=0
  [ -n "$ch_pid" ] && ticks=$(sed 's/.*) //' "/proc/$ch_pid/stat" | awk '{print $12 + $13}')
  echo "$(date +%s.%N) ${ticks:-0} $(ch_query "SELECT count() FROM steady.$TABLE" || echo 0)"
}
ch_from="0 0 0"; ch_to="0 0 0"
idle=$(rss)
rate=(); [ "$RATE" != 0 ] && rate=(-q "$RATE" --latency-correction)
"$OHA" "${rate[@]}" -z "${SECS}s" -c 32 --no-tui -m POST -H 'content-type: application/json' \
  -D "$BODY" "http://127.0.0.1:$PORT/v1/events" --output-format json >target/steady-oha.json &
oha=$!
echo "t_s rss_kb buffered_events inserts"
inserts0=$(field 'd["counters"]["inserts"]')
for t in $(seq 5 5 "$SECS"); do
  sleep 5
  [ "$t" = 10 ] && ch_from=$(ch_sample)
  [ "$t" = $((SECS - 10)) ] && ch_to=$(ch_sample)
  echo "$t $(rss) $(field 'd["buffered_events"]') $(( $(field 'd["counters"]["inserts"]') - inserts0 ))"
done
wait $oha
inserts=$(( $(field 'd["counters"]["inserts"]') - inserts0 ))
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
python3 - "$idle" "$inserts" "$SECS" "$hwm" "$(getconf CLK_TCK)" $ch_from $ch_to <<'PY'
import json, sys
idle, inserts, secs, hwm, tck = map(int, sys.argv[1:6])
t0, c0, n0, t1, c1, n1 = map(float, sys.argv[6:])
s = json.load(open("target/steady-oha.json"))
rps = s["summary"]["requestsPerSec"]
print(f"idle RSS {idle/1024:.1f} MB, peak {hwm/1024:.1f} MB; {rps:.0f} req/s = {rps*30:.0f} events/s; "
      f"p99 {s['latencyPercentiles']['p99']*1000:.2f} ms; {inserts} inserts in {secs} s = {inserts/secs:.2f}/s")
if c1 > c0 and n1 > n0 and t1 > t0:
    print(f"ClickHouse server (merges included): {(c1-c0)/tck*1e6/(n1-n0):.3f} µs CPU per row stored, "
          f"{(n1-n0)/(t1-t0):.0f} rows/s, from 10 s to {secs-10} s")
else:
    print("ClickHouse server: not measured (no local server started by scripts/clickhouse.sh, "
          "or SECONDS not a multiple of 5 above 20)")
PY
