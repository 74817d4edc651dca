//! Integration tests against a real ClickHouse cluster (ZooKeeper and three 18.16 servers:
//! shard 1 = replicas a and b, shard 2 = c), brought up by `make test-cluster` with
//! `scripts/clickhouse-cluster.sh` in a temporary folder named by `CLUSTER_DIR`. Without
//! it each test records a skip and returns. The tests stop and kill cluster members, so
//! they take turns (see [`fixture::Cluster::take`]); each writes to a database of its own.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../api/process.rs"]
#[allow(dead_code)]
mod process;

mod failover;
mod fixture;
mod load;

mod gateways;
mod lost_answer;
mod placement;
mod replica_kill;
mod shard_outage;
mod tables;
mod tls;
mod topology;
mod zookeeper;
