#!/usr/bin/env bash
# Steady state at a fixed request rate (default 6,000 req/s of 30-event bodies, about half of
# what the 2-core development VM sustains at c=32): inserts per second, RSS over time, and
# memory per buffered event, with the default settings. Needs `make loadtest` to have run
# once (it installs oha and writes the body files).
#   scripts/steady-state.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RATE="${1:-6000}"; SECS="${2:-60}"; PORT="${STEADY_PORT:-18666}"
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
BODY=target/loadtest/bodies/events_b30.json
[ -f "$BODY" ] || { echo "run 'make loadtest' first (it writes $BODY)" >&2; exit 1; }
scripts/clickhouse.sh ensure
cargo build --release --quiet

APP_ENV=prod HTTP_HOST=127.0.0.1 HTTP_PORT="$PORT" CLICKHOUSE_NAME=steady \
  CLICKHOUSE_TABLE="s_$(date +%s)" ./target/release/event-ingest 2>target/steady.log &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/v1/health" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
field() { curl -fs "http://127.0.0.1:$PORT/v1/health" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
idle=$(rss)
"$OHA" -q "$RATE" -z "${SECS}s" -c 32 --no-tui -m POST -H 'content-type: application/json' \
  -D "$BODY" "http://127.0.0.1:$PORT/v1/events" --output-format json >target/steady-oha.json &
oha=$!
echo "t_s rss_kb buffered_events inserts"
inserts0=$(field 'd["counters"]["inserts"]')
for t in $(seq 5 5 "$SECS"); do
  sleep 5
  echo "$t $(rss) $(field 'd["buffered_events"]') $(( $(field 'd["counters"]["inserts"]') - inserts0 ))"
done
wait $oha
inserts=$(( $(field 'd["counters"]["inserts"]') - inserts0 ))
python3 - "$idle" "$inserts" "$SECS" <<'PY'
import json, sys
idle, inserts, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = json.load(open("target/steady-oha.json"))["summary"]
print(f"idle RSS {idle/1024:.1f} MB; {s['requestsPerSec']:.0f} req/s = {s['requestsPerSec']*30:.0f} events/s; "
      f"{inserts} inserts in {secs} s = {inserts/secs:.2f}/s")
PY
