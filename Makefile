# event-ingest — the two commands first: `make run` and `make test`.
# Both bring up a local ClickHouse first when none answers at CLICKHOUSE_HOST:CLICKHOUSE_PORT
# (scripts/clickhouse.sh: an installed clickhouse-server, else Debian's package when root).

CLICKHOUSE_HOST ?= 127.0.0.1
CLICKHOUSE_PORT ?= 8123
export CLICKHOUSE_HOST CLICKHOUSE_PORT

.PHONY: run test clickhouse clickhouse-stop lint bench build original-bench

## Build the release binary and run it against ClickHouse (starting a local one if needed).
run: clickhouse
	cargo build --release
	./target/release/event-ingest

## Unit and integration tests against a real ClickHouse (started if needed); the status
## page is checked in headless Chromium (installed if missing).
test: clickhouse
	scripts/browser.sh
	cargo test

## Formatting and lints, as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Criterion benchmarks (not part of `make test`).
bench:
	cargo bench

## The original service's benchmark (ab -n 15000 -c 1), double and direct mode.
original-bench:
	scripts/original-bench.sh

build:
	cargo build --release

clickhouse:
	scripts/clickhouse.sh ensure

clickhouse-stop:
	scripts/clickhouse.sh stop

## End-to-end load benchmark with oha: event-ingest vs parse-only, ClickHouse Buffer-table and
## direct inserts (~7 min; report in target/loadtest/). Driver options: make loadtest ARGS=--quick
.PHONY: loadtest
loadtest:
	scripts/loadtest.sh $(ARGS)

## Fault injection: kill -9 / SIGTERM the service, stop its ClickHouse, fill the spool's volume
## (a tmpfs, as root) and exhaust its file descriptors under load for MINUTES minutes, then
## check no acknowledged event was lost (report in target/chaos/report.md).
MINUTES ?= 5
.PHONY: chaos
chaos:
	scripts/chaos.sh --minutes $(MINUTES)
