#!/usr/bin/env bash
# Brings up the modern ClickHouse engine for `make test`: tests/support/chdb-http.py (a test-only
# HTTP front of ClickHouse over chDB, PyPI's `chdb-core`), on CHDB_HOST:CHDB_PORT.
#
#   scripts/chdb.sh ensure   # start it unless something answers /ping there
#   scripts/chdb.sh stop     # stop the one this script started (pid file under its data dir)
#
# chdb-core is installed into a project-local virtualenv (data/chdb-venv, git-ignored) when
# missing, from PyPI with pip; the engine's data, log and pid are under CHDB_DATA_DIR.
set -euo pipefail

HOST="${CHDB_HOST:-127.0.0.1}"
PORT="${CHDB_PORT:-8124}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${CHDB_DATA_DIR:-$ROOT/data/chdb}"
VENV="${CHDB_VENV:-$ROOT/data/chdb-venv}"
# The engine version the suite was written against; ClickHouse 26.9 inside.
CHDB_CORE_VERSION="${CHDB_CORE_VERSION:-26.9.0}"

say() { echo "chdb.sh: $*" >&2; }

pinging() { curl -fsS --max-time 2 "http://$HOST:$PORT/ping" >/dev/null 2>&1; }

# What answers is this test double, not some other ClickHouse (the suite would test the wrong engine).
is_double() {
  curl -fsS --max-time 2 -o /dev/null -D - "http://$HOST:$PORT/?query=SELECT%201" 2>/dev/null \
    | grep -qi '^X-ClickHouse-Server-Display-Name: chdb-http'
}

install_engine() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import chdb' 2>/dev/null && return 0
  command -v python3 >/dev/null 2>&1 || { say "python3 is needed (apt-get install python3 python3-venv)"; exit 1; }
  say "installing chdb-core $CHDB_CORE_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "chdb-core==$CHDB_CORE_VERSION"
}

start() {
  mkdir -p "$DATA_DIR/log"
  say "starting chdb-http on $HOST:$PORT (data in $DATA_DIR)"
  nohup "$VENV/bin/python" "$ROOT/tests/support/chdb-http.py" \
    --host "$HOST" --port "$PORT" --path "$DATA_DIR/db" \
    >"$DATA_DIR/log/stdout.log" 2>&1 &
  echo $! >"$DATA_DIR/server.pid"
  for _ in $(seq 1 120); do
    pinging && { say "ready"; return 0; }
    kill -0 "$(cat "$DATA_DIR/server.pid")" 2>/dev/null || break
    sleep 0.5
  done
  say "chdb-http did not answer /ping; last log lines:"
  tail -n 20 "$DATA_DIR/log/stdout.log" >&2 || true
  exit 1
}

case "${1:-ensure}" in
  ensure)
    if pinging; then
      is_double && exit 0
      say "something other than chdb-http answers at http://$HOST:$PORT; pick another CHDB_PORT"
      exit 1
    fi
    install_engine
    start
    ;;
  stop)
    if [ -f "$DATA_DIR/server.pid" ]; then
      pid="$(cat "$DATA_DIR/server.pid")"
      kill "$pid" 2>/dev/null || true
      # Wait for it to close the engine (its parts are flushed on exit).
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      rm -f "$DATA_DIR/server.pid"
    fi
    ;;
  *) echo "usage: $0 [ensure|stop]" >&2; exit 2 ;;
esac
