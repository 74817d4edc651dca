#!/usr/bin/env bash
# `make chaos`: fault injection against event-ingest and its own ClickHouse. See bench/chaos.
#
#   scripts/chaos.sh                       # 5 minutes of kill -9 / SIGTERM / ClickHouse outages /
#                                          # a full spool volume / descriptor exhaustion
#   scripts/chaos.sh --minutes 1 --seed 42 # shorter, reproducible timings
#
# Extra arguments go to the driver (`target/release/chaos --help`). The run starts its own
# clickhouse-server (HTTP 18123, TCP 19000, data in target/chaos/clickhouse), never the shared
# one on 8123. The report is printed and written to target/chaos/report.md; the exit status is
# 1 when an acknowledged event was lost or the service answered a 5xx other than 503.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "chaos.sh: $*" >&2; }

# Same install rule as scripts/clickhouse.sh (whose `ensure` would also start the shared
# instance, so it is not called here): an installed server, else Debian's package as root.
if ! command -v clickhouse-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "clickhouse-server not found; installing Debian's clickhouse-server package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
  else
    say "clickhouse-server is not installed; install it (sudo apt-get install clickhouse-server) and re-run"
    exit 1
  fi
fi

cargo build --release -p event-ingest -p chaos

exec target/release/chaos --service-bin target/release/event-ingest "$@"
