//! The bounded pool for CPU-heavy request work (decompressing, decoding and validating
//! large bodies), so that it never runs on an actix worker thread: a worker busy for a
//! second with one body would leave every other connection on it, probes included,
//! waiting that long.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::ApiError;

/// Runs closures on the blocking threads (`web::block`), at most `permits` at a time; the
/// others wait without holding a thread.
#[derive(Clone)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
}

impl CpuPool {
    /// One permit per CPU core: more would only time-slice the same cores.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Runs `work` off the worker thread, waiting for a free permit first.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the CPU pool is closed"))?;
        actix_web::web::block(work)
            .await
            .map_err(|_| ApiError::Internal("request processing failed"))
    }
}

impl Default for CpuPool {
    fn default() -> Self {
        Self::new()
    }
}
