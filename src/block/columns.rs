//! The events table's columns: the order every encoded row of it follows.

/// The table's columns in encoding order; inserts name them explicitly, so a table with
/// extra (defaulted) columns still accepts the rows.
pub const COLUMNS: [&str; 11] = [
    "client_time",
    "client_time_corrected",
    "server_time",
    "device_id",
    "device_os",
    "session",
    "sequence",
    "event",
    "param_int",
    "param_str",
    "ip",
];
