//! Code shared by the benchmark drivers `loadtest` and `chaos`.

pub mod http;
pub mod proc;
