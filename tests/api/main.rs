//! Integration tests: the real application on port 0 against the real ClickHouse, each
//! test in a database of its own so they run in parallel.

mod helpers;
mod load;
mod own_clickhouse;
mod process;

mod access;
mod admin;
mod browser_client;
mod buffering;
mod config;
mod docs;
mod durability;
mod engines;
mod events;
mod full_wait;
mod health;
mod hostile;
mod hostile_memory;
mod inputs;
mod keys;
mod metrics;
mod native;
mod roundtrip;
mod schema;
mod shutdown;
mod shutdown_budget;
mod skew;
mod spool_faults;
mod status_page;
mod table_health;
mod table_restart;
mod table_times;
mod tables;
mod tls;
mod your_events;
