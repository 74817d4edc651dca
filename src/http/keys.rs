//! API keys as one access model: who may post to which table, from which page origins, at
//! what rate, and who may use the operations routes. Keys come from `INGEST_API_KEYS` and
//! `ADMIN_API_KEYS` (every table, no limit) and from `CONFIG_FILE`'s `[[keys]]`, and are
//! replaced as a whole when that file changes ([`KeyRing::replace`]); a key whose name and
//! rate stay keeps its bucket.
//!
//! A key is found by the SHA-256 of what the client sent, in a hash map: the time it takes
//! depends on the digest, never on how much of a secret matched. A key with a rate has a
//! token bucket (GCRA, `governor`) counted in events: one atomic update before the body is
//! read (what its `Content-Length` surely holds) and, if its events were more, one after;
//! a key without one costs nothing beyond the look-up.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use super::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Post events.
    Ingest,
    /// The operations routes.
    Admin,
}

/// A key as configured.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Shown in logs and metrics.
    pub name: String,
    /// The SHA-256 of its secret.
    pub digest: [u8; 32],
    /// What it may do.
    pub role: Role,
    /// The tables it may write; `None`: every one.
    pub tables: Option<Vec<String>>,
    /// A browser key's page origins.
    pub origins: Vec<String>,
    /// Events per second and burst; `None`: unlimited.
    pub rate: Option<(u32, u32)>,
}

impl KeySpec {
    /// A key with every table and no limit (`INGEST_API_KEYS`, `ADMIN_API_KEYS`).
    pub fn plain(name: &str, secret: &str, role: Role) -> Self {
        Self {
            name: name.to_string(),
            digest: digest(secret.as_bytes()),
            role,
            tables: None,
            origins: Vec::new(),
            rate: None,
        }
    }
}

/// The SHA-256 of a secret.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// One key, ready to check.
pub struct Key {
    /// Its name.
    pub name: String,
    role: Role,
    tables: Option<HashSet<String>>,
    origins: HashSet<String>,
    limit: Option<Arc<Limit>>,
    /// Its `key_events_total` counters, accepted, rejected and limited, bound once.
    counted: Option<[prometheus::IntCounter; 3]>,
}

struct Limit {
    bucket: DefaultDirectRateLimiter,
    per_second: u32,
    burst: u32,
    /// After a refusal: until when (nanoseconds after `since`) the key is refused before
    /// its body is read. Nothing is taken from the bucket for that: a client retrying
    /// faster than the answer said does not starve itself.
    blocked_until: std::sync::atomic::AtomicU64,
    since: std::time::Instant,
    /// The most body bytes per event this key's requests have had (as sent): a request's
    /// `Content-Length` divided by it is a low estimate of its events, charged before the
    /// body is read ([`Key::admit`]).
    bytes_per_event: std::sync::atomic::AtomicUsize,
}

impl Limit {
    fn now(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn limited(&self, retry_after: Duration) -> Limited {
        Limited {
            retry_after,
            per_second: self.per_second,
            burst: self.burst,
        }
    }

    /// Takes `events` from the bucket, or refuses: says when they would fit, and refuses
    /// the key before reading bodies until then. Nothing is taken on a refusal.
    fn charge(&self, events: usize) -> Result<(), Limited> {
        let Some(n) = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        let wait = match self.bucket.check_n(n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => not_until.wait_time_from(DefaultClock::default().now()),
            // More at once than the bucket ever holds: not at this rate.
            Err(_) => Duration::from_secs(u64::from(self.burst / self.per_second.max(1)).max(1)),
        };
        let until = self
            .now()
            .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        self.blocked_until
            .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
        Err(self.limited(wait))
    }
}

/// Why a key's request is over its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When the events would fit.
    pub retry_after: Duration,
    /// The key's sustained rate, events per second.
    pub per_second: u32,
    /// Its bucket's size.
    pub burst: u32,
}

impl Key {
    /// Counts a request's events: taken, rejected by validation, refused over the rate.
    pub fn record(&self, accepted: usize, rejected: usize, limited: usize) {
        let Some(counters) = &self.counted else {
            return;
        };
        for (counter, n) in counters.iter().zip([accepted, rejected, limited]) {
            if n > 0 {
                counter.inc_by(n as u64);
            }
        }
    }

    /// Whether it is a browser key (it has page origins).
    pub fn is_browser(&self) -> bool {
        !self.origins.is_empty()
    }

    /// `Err(403)` unless it may write `table` (the name the client used, or the table's
    /// configured name).
    pub fn check_table(&self, names: &[&str]) -> Result<(), ApiError> {
        match &self.tables {
            Some(tables) if !names.iter().any(|n| tables.contains(*n)) => {
                Err(ApiError::KeyRefused(format!(
                    "key {} may not write table {}",
                    self.name, names[0]
                )))
            }
            _ => Ok(()),
        }
    }

    /// `Err(403)` for a browser key used from a page origin not its own. A request without
    /// `Origin` (not from a page) passes: a browser key is public anyway.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        match origin {
            Some(origin) if self.is_browser() && !self.origins.contains(origin) => {
                Err(ApiError::KeyRefused(format!(
                    "key {} may not be used from origin {}",
                    self.name,
                    crate::table::event::excerpt(origin)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Before the body is read: refused at once (no decoding, nothing taken) while an
    /// earlier refusal's wait has not passed, so a flood over the rate costs little. With
    /// the request's `Content-Length`, the events it surely carries (the length over the
    /// most bytes per event this key has sent) are charged now: a body the bucket cannot
    /// hold is refused before it is read. Returns the events charged, which
    /// [`Key::take`] counts as paid.
    pub fn admit(&self, content_length: Option<usize>) -> Result<usize, Limited> {
        let Some(limit) = &self.limit else {
            return Ok(0);
        };
        let until = limit
            .blocked_until
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = limit.now();
        if now < until {
            return Err(limit.limited(Duration::from_nanos(until - now)));
        }
        let per_event = limit
            .bytes_per_event
            .load(std::sync::atomic::Ordering::Relaxed);
        let surely = match (content_length, per_event) {
            (Some(length), 1..) => length / per_event,
            _ => 0,
        };
        limit.charge(surely).map(|()| surely)
    }

    /// Takes the request's `events` (of a body of `body_bytes` as sent) from the key's
    /// bucket, less the `paid` that [`Key::admit`] charged (one atomic update), or says when
    /// they would fit; nothing more is taken then. A body with more bytes per event than
    /// any before can have been charged a few events more than it had, before this.
    pub fn take(&self, events: usize, body_bytes: usize, paid: usize) -> Result<(), Limited> {
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        // Read first: the figure settles after a key's first requests, and a write on every
        // request would contend between workers for nothing.
        if let Some(per_event) = body_bytes.checked_div(events)
            && per_event
                > limit
                    .bytes_per_event
                    .load(std::sync::atomic::Ordering::Relaxed)
        {
            limit
                .bytes_per_event
                .fetch_max(per_event, std::sync::atomic::Ordering::Relaxed);
        }
        limit.charge(events.saturating_sub(paid))
    }
}

/// Every key at one moment.
pub struct Keys {
    by_digest: HashMap<[u8; 32], Arc<Key>>,
    /// No ingest key at all: posting is open.
    ingest_open: bool,
    /// No admin key at all.
    admin_open: bool,
    /// Origins of browser keys, and `CORS_ALLOWED_ORIGINS`.
    origins: HashSet<String>,
}

/// How a request presented its key.
enum Presented<'a> {
    Header(&'a str),
    Query(String),
}

impl Keys {
    /// Whether anyone may post events (no ingest key is configured).
    pub fn ingest_open(&self) -> bool {
        self.ingest_open
    }

    /// Whether the operations routes need no key.
    pub fn admin_open(&self) -> bool {
        self.admin_open
    }

    /// Whether a page from `origin` may call the ingest routes (CORS).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.contains(origin)
    }

    /// The ingest key of a request: `Ok(None)` when posting is open; `401` without a known
    /// key, or with a key in the URL that is not a browser key; `403` for an admin key.
    pub fn ingest_key(
        &self,
        headers: &HeaderMap,
        query: &str,
    ) -> Result<Option<Arc<Key>>, ApiError> {
        if self.ingest_open {
            return Ok(None);
        }
        let (key, in_url) = match presented(headers, query) {
            Some(Presented::Header(secret)) => {
                (self.by_digest.get(&digest(secret.as_bytes())), false)
            }
            Some(Presented::Query(secret)) => {
                (self.by_digest.get(&digest(secret.as_bytes())), true)
            }
            None => return Err(ApiError::Unauthorized),
        };
        let key = key.ok_or(ApiError::Unauthorized)?;
        if key.role != Role::Ingest {
            return Err(ApiError::KeyRefused(format!(
                "key {} is an admin key; it may not post events",
                key.name
            )));
        }
        if in_url && !key.is_browser() {
            // Secrets do not belong in URLs (logs, histories): only browser keys, which are
            // public by nature, may come as `?key=`.
            return Err(ApiError::KeyRefused(format!(
                "key {} may not be sent in the URL (only keys with origins may)",
                key.name
            )));
        }
        Ok(Some(key.clone()))
    }

    /// Whether `headers` carry an admin key (operations routes).
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        let Some(Presented::Header(secret)) = presented(headers, "") else {
            return false;
        };
        self.by_digest
            .get(&digest(secret.as_bytes()))
            .is_some_and(|k| k.role == Role::Admin)
    }
}

/// `X-Api-Key`, a name built once: looking a header up by a `&str` that is not one of the
/// standard names allocates that name for each request.
const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// The key a request carries: `Authorization: Bearer`, `X-Api-Key`, else `?key=`.
fn presented<'a>(headers: &'a HeaderMap, query: &str) -> Option<Presented<'a>> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::client::bearer_token)
        .or_else(|| headers.get(X_API_KEY).and_then(|v| v.to_str().ok()))
        .map(str::trim);
    if let Some(secret) = header {
        return Some(Presented::Header(secret));
    }
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| Presented::Query(value.into_owned()))
}

/// The keys in use, replaced as a whole when the configuration file changes.
pub struct KeyRing {
    current: RwLock<Arc<Keys>>,
    /// `CORS_ALLOWED_ORIGINS`.
    cors: Vec<String>,
    /// Where each key's events are counted (`key_events_total`), bound once per key.
    counters: Option<prometheus::IntCounterVec>,
}

impl KeyRing {
    /// The ring for `specs`; `cors`: origins allowed for header-authenticated keys;
    /// `counters`: where each key's events are counted, by key name and outcome.
    pub fn new(
        specs: &[KeySpec],
        cors: Vec<String>,
        counters: Option<prometheus::IntCounterVec>,
    ) -> Self {
        let keys = build(specs, &cors, None, counters.as_ref());
        Self {
            current: RwLock::new(Arc::new(keys)),
            cors,
            counters,
        }
    }

    /// The keys now.
    pub fn keys(&self) -> Arc<Keys> {
        self.current.read().clone()
    }

    /// Takes `specs` as the keys from now on; a key whose name and rate are unchanged keeps
    /// its bucket (a reload gives nobody a fresh burst).
    pub fn replace(&self, specs: &[KeySpec]) {
        let old = self.keys();
        let keys = build(specs, &self.cors, Some(&old), self.counters.as_ref());
        *self.current.write() = Arc::new(keys);
    }
}

fn build(
    specs: &[KeySpec],
    cors: &[String],
    old: Option<&Keys>,
    counters: Option<&prometheus::IntCounterVec>,
) -> Keys {
    let mut by_digest = HashMap::new();
    let mut origins: HashSet<String> = cors.iter().cloned().collect();
    for spec in specs {
        let kept = old.and_then(|old| {
            (old.by_digest.values())
                .find(|k| k.name == spec.name)
                .and_then(|k| k.limit.clone())
                .filter(|l| Some((l.per_second, l.burst)) == spec.rate)
        });
        let limit = kept.or_else(|| {
            spec.rate.map(|(per_second, burst)| {
                let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
                let burst_cells = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
                Arc::new(Limit {
                    bucket: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst_cells)),
                    per_second,
                    burst,
                    blocked_until: Default::default(),
                    since: std::time::Instant::now(),
                    bytes_per_event: Default::default(),
                })
            })
        });
        origins.extend(spec.origins.iter().cloned());
        let key = Key {
            name: spec.name.clone(),
            role: spec.role,
            tables: spec.tables.as_ref().map(|t| t.iter().cloned().collect()),
            origins: spec.origins.iter().cloned().collect(),
            limit,
            counted: counters.map(|c| {
                let bound = |outcome| c.with_label_values(&[spec.name.as_str(), outcome]);
                [bound("accepted"), bound("rejected"), bound("limited")]
            }),
        };
        by_digest.insert(spec.digest, Arc::new(key));
    }
    Keys {
        ingest_open: !specs.iter().any(|s| s.role == Role::Ingest),
        admin_open: !specs.iter().any(|s| s.role == Role::Admin),
        by_digest,
        origins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut req = TestRequest::default();
        for (name, value) in list {
            req = req.insert_header((*name, *value));
        }
        req.to_http_request().headers().clone()
    }

    fn ring() -> KeyRing {
        let mut web = KeySpec::plain("web", "pk-web", Role::Ingest);
        web.origins = vec!["https://shop.example".into()];
        web.tables = Some(vec!["events".into()]);
        let mut slow = KeySpec::plain("slow", "sk-slow", Role::Ingest);
        slow.rate = Some((10, 20));
        KeyRing::new(
            &[
                KeySpec::plain("env-1", "k1", Role::Ingest),
                KeySpec::plain("env-2", "secret-2", Role::Ingest),
                KeySpec::plain("ops", "adm", Role::Admin),
                web,
                slow,
            ],
            vec![],
            None,
        )
    }

    fn name(r: Result<Option<Arc<Key>>, ApiError>) -> Result<String, u16> {
        use actix_web::ResponseError;
        match r {
            Ok(Some(key)) => Ok(key.name.clone()),
            Ok(None) => Ok("open".into()),
            Err(e) => Err(e.status_code().as_u16()),
        }
    }

    #[test]
    fn a_key_is_found_in_a_header_or_for_a_browser_key_in_the_url() {
        let keys = ring().keys();
        let key = |h: &[(&str, &str)], q: &str| name(keys.ingest_key(&headers(h), q));
        assert_eq!(
            key(&[("authorization", "Bearer secret-2")], ""),
            Ok("env-2".into())
        );
        assert_eq!(key(&[("x-api-key", "k1")], ""), Ok("env-1".into()));
        assert_eq!(
            key(&[("authorization", "BEARER k1")], ""),
            Ok("env-1".into())
        );
        assert_eq!(
            key(&[("authorization", "bEaReR  k1")], ""),
            Ok("env-1".into())
        );
        assert_eq!(key(&[("authorization", "Bearer secret-3")], ""), Err(401));
        assert_eq!(key(&[("authorization", "Basic k1")], ""), Err(401));
        assert_eq!(key(&[], ""), Err(401));
        assert_eq!(key(&[], "key=pk-web"), Ok("web".into()));
        assert_eq!(key(&[], "a=1&key=pk%2Dweb"), Ok("web".into()));
        // A secret key in the URL is refused: it would end up in logs.
        assert_eq!(key(&[], "key=k1"), Err(403));
        // An admin key posts nothing.
        assert_eq!(key(&[("x-api-key", "adm")], ""), Err(403));
        assert!(keys.is_admin(&headers(&[("x-api-key", "adm")])));
        assert!(!keys.is_admin(&headers(&[("x-api-key", "k1")])));
        let open = KeyRing::new(&[KeySpec::plain("ops", "adm", Role::Admin)], vec![], None);
        assert_eq!(
            name(open.keys().ingest_key(&headers(&[]), "")),
            Ok("open".into())
        );
    }

    #[test]
    fn a_key_keeps_to_its_tables_and_origins() {
        let keys = ring().keys();
        let web = keys
            .ingest_key(&headers(&[]), "key=pk-web")
            .unwrap()
            .unwrap();
        assert!(web.check_table(&["events"]).is_ok());
        let refused = web.check_table(&["pageviews"]).unwrap_err().to_string();
        assert!(
            refused.contains("web") && refused.contains("pageviews"),
            "{refused}"
        );
        assert!(
            web.check_origin(&headers(&[("origin", "https://shop.example")]))
                .is_ok()
        );
        assert!(web.check_origin(&headers(&[])).is_ok());
        assert!(
            web.check_origin(&headers(&[("origin", "https://evil.example")]))
                .is_err()
        );
        assert!(keys.origin_allowed("https://shop.example"));
        assert!(!keys.origin_allowed("https://evil.example"));
    }

    /// The ingest key `secret` names, sent as `X-Api-Key`.
    fn ingest_key(ring: &KeyRing, secret: &str) -> Arc<Key> {
        ring.keys()
            .ingest_key(&headers(&[("x-api-key", secret)]), "")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_limited_key_takes_its_burst_then_waits_and_a_reload_keeps_its_bucket() {
        let ring = ring();
        let slow = ingest_key(&ring, "sk-slow");
        assert_eq!(slow.admit(None), Ok(0));
        assert!(slow.take(20, 2000, 0).is_ok(), "the burst");
        assert_eq!(slow.admit(None), Ok(0), "nothing refused yet");
        let limited = slow.take(1, 100, 0).unwrap_err();
        assert!(
            limited.retry_after > Duration::ZERO
                && limited.retry_after <= Duration::from_millis(100)
        );
        assert_eq!((limited.per_second, limited.burst), (10, 20));
        // Refused before its body is read until the wait has passed; nothing taken then.
        assert!(slow.admit(None).is_err());
        std::thread::sleep(limited.retry_after);
        assert_eq!(slow.admit(None), Ok(0));
        // More at once than the bucket holds is never let through.
        assert!(slow.take(1000, 100_000, 0).is_err());
        ring.replace(&[{
            let mut slow = KeySpec::plain("slow", "sk-slow", Role::Ingest);
            slow.rate = Some((10, 20));
            slow
        }]);
        let again = ingest_key(&ring, "sk-slow");
        assert!(
            again.take(20, 2000, 0).is_err(),
            "no fresh burst from a reload"
        );
        // Unlimited keys are never refused.
        let free = KeySpec::plain("free", "f", Role::Ingest);
        ring.replace(&[free]);
        let free = ingest_key(&ring, "f");
        assert!(free.admit(Some(1 << 30)) == Ok(0) && free.take(1_000_000, 1 << 30, 0).is_ok());
    }

    #[test]
    fn a_body_the_bucket_cannot_hold_is_refused_by_its_length_before_it_is_read() {
        let ring = ring();
        let slow = ingest_key(&ring, "sk-slow");
        // Nothing known of this key's events yet: nothing charged ahead.
        assert_eq!(slow.admit(Some(1000)), Ok(0));
        // 5 events of 100 bytes each: 15 of the 20 left.
        assert!(slow.take(5, 500, 0).is_ok());
        // 1,000 bytes are at least 10 events: charged before the body is read...
        assert_eq!(slow.admit(Some(1000)), Ok(10));
        // ...and not again when the body turns out to hold 12.
        assert!(slow.take(12, 1000, 10).is_ok());
        // 3 left: 500 bytes (at least 5 events) are refused unread, and the key waits.
        let limited = slow.admit(Some(500)).unwrap_err();
        assert!(limited.retry_after > Duration::ZERO);
        assert!(
            slow.admit(None).is_err(),
            "refused until the wait has passed"
        );
    }
}
