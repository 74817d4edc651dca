# event-ingest — the two commands first: `make run` and `make test`.
# Both bring up a local ClickHouse first when none answers at CLICKHOUSE_HOST:CLICKHOUSE_PORT
# (scripts/clickhouse.sh: an installed clickhouse-server, else Debian's package when root).

CLICKHOUSE_HOST ?= 127.0.0.1
CLICKHOUSE_PORT ?= 8123
export CLICKHOUSE_HOST CLICKHOUSE_PORT
# The modern engine for the second test run: ClickHouse 26.x (chDB) behind tests/support/chdb-http.py.
CHDB_PORT ?= 8124
export CHDB_PORT

.PHONY: run test test-cluster chdb chdb-stop clickhouse clickhouse-stop lint bench build original-bench

## Build the release binary and run it against ClickHouse (starting a local one if needed).
run: clickhouse
	cargo build --release
	./target/release/event-ingest

## Unit tests, then the integration tests twice: against ClickHouse 18.16 (a real server,
## started if needed) and against the modern engine (ClickHouse 26.x over chDB behind a test
## double of the HTTP interface, installed and started if needed). The status page is checked
## in headless Chromium (installed if missing). Tests skipped on an engine are listed last.
test: clickhouse chdb
	scripts/browser.sh
	rm -rf target/test-skips
	TEST_ENGINE=18.16 cargo test
	TEST_ENGINE=modern CLICKHOUSE_PORT=$(CHDB_PORT) cargo test --test api
	@for engine in 18.16 modern; do f="target/test-skips/$$engine.txt"; \
	  echo "skipped on $$engine: $$(cat "$$f" 2>/dev/null | wc -l) test(s)"; \
	  [ ! -f "$$f" ] || sed 's/^/  /' "$$f"; done

## The cluster scenarios (tests/cluster): ZooKeeper and three ClickHouse 18.16 servers (shard 1 =
## a, b; shard 2 = c) brought up by scripts/clickhouse-cluster.sh in a temporary folder on their
## own ports (CLUSTER_BASE_PORT..+399), the tests one at a time, the cluster taken down after.
CLUSTER_BASE_PORT ?= 17000
test-cluster:
	@dir=$$(mktemp -d /tmp/event-ingest-cluster.XXXXXX); \
	trap 'scripts/clickhouse-cluster.sh down "$$dir" >/dev/null 2>&1; rm -rf "$$dir"' EXIT; \
	CLICKHOUSE_CLUSTER_BASE_PORT=$(CLUSTER_BASE_PORT) scripts/clickhouse-cluster.sh up "$$dir" >/dev/null && \
	CLUSTER_DIR="$$dir" cargo test --test cluster -- --test-threads=1 --nocapture

## Formatting, lints and the supply-chain policy (deny.toml), as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --test cluster -- -D warnings   # test = false: not in --all-targets
	scripts/supply-chain.sh

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

chdb:
	scripts/chdb.sh ensure

chdb-stop:
	scripts/chdb.sh stop

## End-to-end load benchmark with oha: event-ingest vs parse-only, ClickHouse Buffer-table and
## direct inserts (~7 min), then the cluster run (scripts/loadtest-cluster.sh, ~1 min; LOADTEST_CLUSTER=0
## skips it); report in target/loadtest/. Driver options: make loadtest ARGS=--quick
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
