//! Heap allocations on the reading path, counted by a counting global allocator (its own
//! test binary, so that nothing else runs under it): a body's events are read, validated
//! and encoded with a fixed number of allocations per body, none per event, for the plain
//! bodies clients send (an event with an escaped string allocates that string).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv6Addr;

use event_ingest::table::event::{DecodeError, Format};
use event_ingest::table::{RequestFacts, TableSchema};

/// The system allocator, counting this thread's allocations and reallocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // Not during the thread's teardown, when the counter may be gone.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A JSON array of `n` events shaped like the original service's benchmark body.
fn body(n: u32, escaped: bool) -> Vec<u8> {
    let text = if escaped {
        r#"say \"hi\""#
    } else {
        "some text"
    };
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"client_time": "2020-12-01 23:59:00","device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C{:04X}","device_os": "IOS 13.5.1","session": "ybuRi8mAUypxjbxQ","sequence": {i},"event": "app_start","param_int": {},"param_str": "{text}"}}"#,
                i % 0x10000,
                i * 7
            )
        })
        .collect();
    format!("[{}]", events.join(",")).into_bytes()
}

/// Allocations to read one body (after a first reading, as a running service has done).
fn allocations(schema: &TableSchema, body: &[u8]) -> usize {
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: 1_606_867_200_000_000_000,
        ip: Ipv6Addr::LOCALHOST,
        sent_at: None,
    };
    let read = || {
        let out = schema
            .validate_body(body, Format::Json, 10_000, facts, &[0; 4], |_| {
                Ok::<_, DecodeError>(None)
            })
            .expect("valid");
        assert_eq!(out.rejected, 0, "{:?}", out.errors);
        out
    };
    drop(read());
    let before = ALLOCATIONS.with(Cell::get);
    let out = read();
    let used = ALLOCATIONS.with(Cell::get) - before;
    drop(out);
    used
}

#[test]
fn a_body_is_read_with_a_few_allocations_and_none_per_event() {
    let schema = TableSchema::events().expect("the events table's schema");
    let thirty = allocations(&schema, &body(30, false));
    let thousand = allocations(&schema, &body(1_000, false));
    // The request's state and its rows' buffer; the buffer may grow a few times.
    assert!(thirty <= 8, "{thirty} allocations for 30 events");
    assert!(
        thousand <= thirty + 8,
        "{thousand} allocations for 1,000 events, {thirty} for 30"
    );
    // An escaped string is decoded into its own allocation: the count can see events.
    let escaped = allocations(&schema, &body(30, true));
    assert!(
        escaped >= thirty + 30,
        "{escaped} with escapes, {thirty} without"
    );
}
