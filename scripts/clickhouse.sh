#!/usr/bin/env bash
# Brings up a local ClickHouse for `make run` / `make test` when none answers.
#
#   scripts/clickhouse.sh ensure   # start one unless CLICKHOUSE_HOST:CLICKHOUSE_PORT answers /ping
#                                  # (and HTTPS on CLICKHOUSE_HTTPS_PORT, 8443, with the test CA of
#                                  # CLICKHOUSE_TLS_DIR, ~/.local/state/event-ingest/clickhouse-tls:
#                                  # made here on first use)
#   scripts/clickhouse.sh stop     # stop the one this script started (pid file under its data dir)
#   scripts/clickhouse.sh pid      # print the process id of the one this script started, if it
#                                  # runs and serves CLICKHOUSE_HOST:CLICKHOUSE_PORT (else nothing)
#
# Order of preference: an installed `clickhouse-server`; else Debian's package when we are root
# on Debian/Ubuntu; else a message saying exactly what to do. No systemd is assumed: the binary
# is started directly, with its data, logs and pid under CLICKHOUSE_DATA_DIR (git-ignored).
set -euo pipefail

HOST="${CLICKHOUSE_HOST:-127.0.0.1}"
PORT="${CLICKHOUSE_PORT:-8123}"
TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
# HTTPS too, with a test CA's certificate for localhost and 127.0.0.1 (the TLS tests): on
# 8443 for the shared instance on 8123, else only where CLICKHOUSE_HTTPS_PORT asks for it
# (instances of tests and of `make chaos` on their own ports need none).
if [ "$PORT" = 8123 ]; then HTTPS_PORT="${CLICKHOUSE_HTTPS_PORT:-8443}"; else HTTPS_PORT="${CLICKHOUSE_HTTPS_PORT:-}"; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${CLICKHOUSE_DATA_DIR:-$ROOT/data/clickhouse}"
# One test CA per machine (not per checkout): every checkout's tests trust the shared
# instance, whichever checkout started it.
TLS_DIR="${CLICKHOUSE_TLS_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/event-ingest/clickhouse-tls}"
CONFIG="${CLICKHOUSE_CONFIG:-/etc/clickhouse-server/config.xml}"

say() { echo "clickhouse.sh: $*" >&2; }

pinging() { curl -fsS --max-time 2 "http://$HOST:$PORT/ping" >/dev/null 2>&1; }

pinging_https() {
  [ -z "$HTTPS_PORT" ] && return 0
  curl -fsS --max-time 2 --cacert "$TLS_DIR/ca.crt" "https://localhost:$HTTPS_PORT/ping" >/dev/null 2>&1
}

# A test CA and, signed by it, a certificate for localhost and 127.0.0.1 (ClickHouse's
# HTTPS) and Diffie-Hellman parameters (18.16 wants a file). Made once; git-ignored.
tls_material() {
  [ -f "$TLS_DIR/server.crt" ] && [ -f "$TLS_DIR/dh.pem" ] && return 0
  command -v openssl >/dev/null 2>&1 || { say "openssl is needed to make the test certificates"; exit 1; }
  mkdir -p "$TLS_DIR"
  say "making a test CA and a certificate for localhost in $TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=event-ingest test CA" \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "extendedKeyUsage=serverAuth" >"$TLS_DIR/server.ext"
  openssl x509 -req -days 3650 -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" \
    -CAkey "$TLS_DIR/ca.key" -CAcreateserial -extfile "$TLS_DIR/server.ext" \
    -out "$TLS_DIR/server.crt" 2>/dev/null
  openssl dhparam -dsaparam -out "$TLS_DIR/dh.pem" 2048 2>/dev/null
  # clickhouse-server may run as another user: the key must be readable by it.
  chmod 644 "$TLS_DIR"/*.key
}

is_local() {
  case "$HOST" in 127.*|localhost|::1|0.0.0.0) return 0 ;; *) return 1 ;; esac
}

install_server() {
  command -v clickhouse-server >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "clickhouse-server not found; installing Debian's clickhouse-server package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
    return 0
  fi
  cat >&2 <<MSG
clickhouse.sh: no ClickHouse answers at http://$HOST:$PORT and none is installed here.
Do one of:
  - install it:  sudo apt-get install clickhouse-server   (Debian/Ubuntu), then re-run;
  - run it in Docker:  docker compose -f docker/compose.yml up -d clickhouse
  - point the service elsewhere:  CLICKHOUSE_HOST=... CLICKHOUSE_PORT=... make run
MSG
  exit 1
}

start() {
  mkdir -p "$DATA_DIR/tmp" "$DATA_DIR/log" "$DATA_DIR/user_files" "$DATA_DIR/format_schemas"
  say "starting clickhouse-server on $HOST:$PORT (data in $DATA_DIR)"
  # Everything the server writes goes under DATA_DIR, so it needs no root-owned folders
  # and leaves nothing behind elsewhere. Ports other than HTTP are moved with the HTTP one
  # so that several instances (tests) can run side by side.
  local https=()
  if [ -n "$HTTPS_PORT" ]; then
    https=(--https_port="$HTTPS_PORT" --openSSL.server.certificateFile="$TLS_DIR/server.crt"
      --openSSL.server.privateKeyFile="$TLS_DIR/server.key"
      --openSSL.server.dhParamsFile="$TLS_DIR/dh.pem")
  fi
  nohup clickhouse-server --config-file="$CONFIG" -- \
    --path="$DATA_DIR/" --tmp_path="$DATA_DIR/tmp/" \
    --user_files_path="$DATA_DIR/user_files/" --format_schema_path="$DATA_DIR/format_schemas/" \
    --logger.log="$DATA_DIR/log/server.log" --logger.errorlog="$DATA_DIR/log/server.err.log" \
    --http_port="$PORT" --tcp_port="$TCP_PORT" --interserver_http_port=$((TCP_PORT + 9)) \
    "${https[@]}" --listen_host=127.0.0.1 \
    >"$DATA_DIR/log/stdout.log" 2>&1 &
  echo $! >"$DATA_DIR/server.pid"
  # Up to 3 minutes: a data folder with many parts (after load tests) takes a while to load.
  for _ in $(seq 1 360); do
    pinging && pinging_https && { say "ready${HTTPS_PORT:+ (HTTPS on $HTTPS_PORT)}"; return 0; }
    kill -0 "$(cat "$DATA_DIR/server.pid")" 2>/dev/null || break
    sleep 0.5
  done
  say "clickhouse-server did not answer /ping; last log lines:"
  tail -n 20 "$DATA_DIR/log/server.err.log" "$DATA_DIR/log/stdout.log" >&2 2>/dev/null || true
  exit 1
}

case "${1:-ensure}" in
  ensure)
    is_local || { pinging && exit 0; say "nothing answers at http://$HOST:$PORT and that host is not local; start ClickHouse there first"; exit 1; }
    [ -z "$HTTPS_PORT" ] || tls_material
    pinging && pinging_https && exit 0
    if pinging; then
      # One this script started before it served HTTPS (or with another CA): restarted.
      if [ ! -f "$DATA_DIR/server.pid" ]; then
        if curl -fsSk --max-time 2 "https://localhost:$HTTPS_PORT/ping" >/dev/null 2>&1; then
          say "the ClickHouse on $PORT serves HTTPS on $HTTPS_PORT with a certificate $TLS_DIR/ca.crt did not sign; set CLICKHOUSE_TLS_DIR to the folder of the CA that did"
        else
          say "a ClickHouse answers on $PORT without HTTPS on $HTTPS_PORT; stop it or set CLICKHOUSE_HTTPS_PORT"
        fi
        exit 1
      fi
      say "restarting the ClickHouse on $PORT with HTTPS on $HTTPS_PORT"
      pid="$(cat "$DATA_DIR/server.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    install_server
    start
    ;;
  stop)
    if [ -f "$DATA_DIR/server.pid" ]; then
      kill "$(cat "$DATA_DIR/server.pid")" 2>/dev/null || true
      rm -f "$DATA_DIR/server.pid"
    fi
    ;;
  pid)
    pid="$(cat "$DATA_DIR/server.pid" 2>/dev/null || true)"
    if is_local && [ -n "$pid" ] && grep -qs '^clickhouse' "/proc/$pid/comm"; then echo "$pid"; fi
    ;;
  *) echo "usage: $0 [ensure|stop|pid]" >&2; exit 2 ;;
esac
