//! Request bodies: the same generated events as a JSON array (event-ingest) and as NDJSON
//! (ClickHouse's `JSONEachRow`, which on 18.16 takes one object per line, not an array).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const EVENTS: [&str; 6] = [
    "app_start",
    "screen_view",
    "button_click",
    "purchase",
    "level_up",
    "app_close",
];
const OSES: [&str; 3] = ["IOS 13.5.1", "Android 10", "IOS 14.2"];
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The body files for one event count.
pub struct Bodies {
    pub events: usize,
    /// `[{...},{...}]` for `POST /v1/events`.
    pub json_array: PathBuf,
    pub json_array_bytes: usize,
    /// One object per line, with `server_time`, for ClickHouse `FORMAT JSONEachRow`.
    pub ndjson: PathBuf,
    pub ndjson_bytes: usize,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One event as a JSON object. `server_time` is only set for the ClickHouse bodies: 18.16's
/// `JSONEachRow` fills an omitted column with the type's zero, not its `DEFAULT now()`.
fn event(i: usize, server_time: Option<&str>) -> String {
    // A handful of devices, each sending a run of consecutive events in one session.
    let device = splitmix(i as u64 / 10);
    let d2 = splitmix(device);
    let device_id = format!(
        "{:08X}-{:04X}-4{:03X}-A{:03X}-{:012X}",
        device >> 32,
        (device >> 16) & 0xFFFF,
        device & 0xFFF,
        d2 >> 52,
        d2 & 0xFFFF_FFFF_FFFF
    );
    let session: String = (0..16)
        .map(|k| ALNUM[(splitmix(d2 ^ k) % ALNUM.len() as u64) as usize] as char)
        .collect();
    let secs = 12 * 3600 + i * 7;
    let client_time = format!(
        "2020-12-01 {:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    );
    let mut o = String::with_capacity(240);
    o.push('{');
    let _ = write!(
        o,
        r#""client_time":"{client_time}","device_id":"{device_id}","device_os":"{os}","session":"{session}","sequence":{seq},"event":"{ev}","param_int":{pi},"param_str":"screen {scr} opened""#,
        os = OSES[(device % OSES.len() as u64) as usize],
        seq = i % 10 + 1,
        ev = EVENTS[i % EVENTS.len()],
        pi = (i * 37) % 1000,
        scr = i % 17,
    );
    if let Some(t) = server_time {
        let _ = write!(o, r#","server_time":"{t}""#);
    }
    o.push('}');
    o
}

/// `YYYY-MM-DD hh:mm:ss` in UTC, for the ClickHouse bodies' `server_time`.
pub fn utc_now_string() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Writes both bodies for `events` events under `dir` and checks they parse.
pub fn write_bodies(dir: &Path, events: usize) -> Result<Bodies, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let array = format!(
        "[{}]",
        (0..events)
            .map(|i| event(i, None))
            .collect::<Vec<_>>()
            .join(",")
    );
    let now = utc_now_string();
    let ndjson: String = (0..events).map(|i| event(i, Some(&now)) + "\n").collect();
    let parsed: serde_json::Value =
        serde_json::from_str(&array).map_err(|e| format!("generated body: {e}"))?;
    if parsed.as_array().map(Vec::len) != Some(events) {
        return Err("generated body is not an array of the right length".into());
    }
    for line in ndjson.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("generated NDJSON: {e}"))?;
    }
    let json_array = dir.join(format!("events_b{events}.json"));
    let nd = dir.join(format!("events_b{events}.ndjson"));
    std::fs::write(&json_array, &array).map_err(|e| format!("write body: {e}"))?;
    std::fs::write(&nd, &ndjson).map_err(|e| format!("write body: {e}"))?;
    Ok(Bodies {
        events,
        json_array,
        json_array_bytes: array.len(),
        ndjson: nd,
        ndjson_bytes: ndjson.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_events_are_about_6_6_kb() {
        let body = format!(
            "[{}]",
            (0..30)
                .map(|i| event(i, None))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!((6_300..=6_900).contains(&body.len()), "{}", body.len());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 30);
    }

    #[test]
    fn utc_now_has_the_clickhouse_shape() {
        let s = utc_now_string();
        assert_eq!(s.len(), 19);
        assert!(s.starts_with("20"));
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], " ");
    }
}
