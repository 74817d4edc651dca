//! Process memory: makes glibc's allocator give the memory of finished requests back to
//! the operating system.
//!
//! glibc serves a block of at least `M_MMAP_THRESHOLD` bytes (128 KiB) with its own
//! mapping, unmapped when freed, but raises that threshold to the size of every such block
//! freed, up to 32 MiB. After the first 10 MiB request body, every later body was carved
//! from a per-thread heap arena instead, and arenas are only given back from their top:
//! RSS grew to the peak of concurrent bodies and stayed there (1.6 GB after 150 abusive
//! connections had closed). Setting the thresholds explicitly turns that adjustment off,
//! so large buffers (bodies past 1 MiB, their decompressed form, encoded rows) keep their
//! own mappings and leave with them.
//!
//! Below 1 MiB, blocks come from the heaps and stay there between requests: at 128 KiB
//! (glibc's starting value) every 1,000-event body (about 220 KB) was mapped, faulted in
//! page by page, zeroed and unmapped again, a third of the service's CPU per event for such
//! bodies. What the heaps keep is bounded by the bodies in progress
//! (`INFLIGHT_BODY_MAX_BYTES`) plus `TRIM_THRESHOLD` per heap, and is given back by
//! [`release_free_memory`] once a burst of connections has ended.

/// Blocks at least this large get their own mapping.
const MMAP_THRESHOLD: i32 = 1024 * 1024;
/// Free memory at the top of a heap beyond this is returned at once.
const TRIM_THRESHOLD: i32 = 8 * 1024 * 1024;

/// Fixes the allocator's thresholds; call once at start-up, before the threads start. A
/// no-op on other C libraries, whose allocators do not move their thresholds.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; glibc documents these two as safe to
    // change at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Gives free heap memory back to the operating system (glibc's `malloc_trim`), at most
/// once a second however often it is called: after a burst of connections has ended, the
/// small blocks their requests used are scattered through the heaps, which the thresholds
/// above do not return.
pub fn release_free_memory() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Relaxed) == now {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident set size in bytes (`VmRSS` in `/proc/self/status`), for the
/// status endpoint; `None` where there is no such file.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
