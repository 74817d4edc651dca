#!/usr/bin/env bash
# `make loadtest`: end-to-end load benchmark of event-ingest (memory and disk mode) against
# a parse-only server, the same answering without parsing (http-only), its own read alone
# (bare-parse), and ClickHouse Buffer-table and direct inserts. See bench/loadtest.
#
#   scripts/loadtest.sh                      # full matrix: 7 systems x c={1,8,32,128} x {30,1000} events, 10 s each (~11 min)
#   scripts/loadtest.sh --half-load          # and a second load at half of each saturating rate (~20 min)
#   scripts/loadtest.sh --quick              # smoke run: 3 s, c={1,32}, 30-event bodies
#   scripts/loadtest.sh --systems event-ingest,ch-buffer --concurrency 32 --duration-secs 20
#
# Extra arguments go to the driver (`target/release/loadtest --help`). It brings up a local
# ClickHouse if none answers at CLICKHOUSE_HOST:CLICKHOUSE_PORT, installs the load generator
# (oha, from crates.io) if missing, and builds the release binaries (the service, the driver
# and the parse-only server). The report is printed
# and written to target/loadtest/report.md, the charts to target/loadtest/events_per_sec.png
# and target/loadtest/cpu_per_event.png (service and ClickHouse CPU per event). Then the cluster
# run (scripts/loadtest-cluster.sh): per-shard rates and costs in target/loadtest/cluster.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CLICKHOUSE_HOST="${CLICKHOUSE_HOST:-127.0.0.1}"
export CLICKHOUSE_PORT="${CLICKHOUSE_PORT:-8123}"
OHA_VERSION="${OHA_VERSION:-1.16.0}"

say() { echo "loadtest.sh: $*" >&2; }

scripts/clickhouse.sh ensure

# oha: on PATH, else in cargo's bin folder, else installed there from crates.io (a few
# minutes on 2 cores, once). --locked builds it with the dependency versions it was released with.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
OHA="$(command -v oha || true)"
if [ -z "$OHA" ] && [ -x "$CARGO_BIN/oha" ]; then OHA="$CARGO_BIN/oha"; fi
if [ -z "$OHA" ]; then
  say "oha not found; installing oha $OHA_VERSION with cargo (once)"
  cargo install oha --locked --version "$OHA_VERSION"
  OHA="$CARGO_BIN/oha"
fi
say "using $("$OHA" --version) ($OHA)"

cargo build --release
cargo build --release -p loadtest

# The local server scripts/clickhouse.sh started, if it did and is the one loaded: its whole
# CPU (merges included) is reported beside the inserts' own from system.query_log.
CH_PID=()
pid="$(scripts/clickhouse.sh pid)"
[ -z "$pid" ] || CH_PID=(--clickhouse-pid "$pid")

target/release/loadtest --oha "$OHA" --server-bin target/release/event-ingest \
  --out-dir target/loadtest "${CH_PID[@]}" "$@"

# The cluster run: events/s, inserts/s and ClickHouse CPU per shard on the three-server test
# cluster (target/loadtest/cluster.md; LOADTEST_CLUSTER=0 skips it).
if [ "${LOADTEST_CLUSTER:-1}" != 0 ]; then
  scripts/loadtest-cluster.sh --oha "$OHA"
fi
