//! Small blocking HTTP helpers: the ureq agent settings, plain GETs, ClickHouse queries
//! and the percent-encoding of a query for a ClickHouse URL.

use std::time::Duration;

use ureq::Agent;

/// An agent with a global `timeout` that returns every status as a response (not an
/// error) and never reuses a connection idle for more than a second (ClickHouse closes
/// idle keep-alive connections after 3 s, and killed services drop them).
pub fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_age(Duration::from_millis(1_000))
        .build()
        .into()
}

/// [`agent`] for a service on this machine serving HTTPS with a test certificate: the
/// certificate is not checked (the load generator does not check it either).
pub fn agent_trusting_any(timeout: Duration) -> Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_age(Duration::from_millis(1_000))
        .tls_config(tls)
        .build()
        .into()
}

/// `GET url`: the status and body.
pub fn get(agent: &Agent, url: &str) -> Result<(u16, String), String> {
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    Ok((status, body))
}

/// A ClickHouse HTTP interface.
pub struct ClickHouse {
    base: String,
    agent: Agent,
    /// Read answers of any size instead of stopping at ureq's default cap (10 MB).
    unlimited_answers: bool,
}

impl ClickHouse {
    /// The interface at `http://host:port`, each request bounded by `timeout`.
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
        Self {
            base: format!("http://{host}:{port}"),
            agent: agent(timeout),
            unlimited_answers: false,
        }
    }

    /// Lifts ureq's 10 MB cap on an answer's body (e.g. for verification answers that hold
    /// millions of rows).
    pub fn unlimited_answers(mut self) -> Self {
        self.unlimited_answers = true;
        self
    }

    /// `http://host:port`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Runs `sql` (sent as the POST body), with `settings` as URL parameters, and returns
    /// the answer's body.
    pub fn query_with(&self, sql: &str, settings: &str) -> Result<String, String> {
        let url = if settings.is_empty() {
            format!("{}/", self.base)
        } else {
            format!("{}/?{settings}", self.base)
        };
        let mut resp = self
            .agent
            .post(&url)
            .send(sql)
            .map_err(|e| format!("ClickHouse at {}: {e} (query: {sql})", self.base))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut();
        let body = if self.unlimited_answers {
            body.with_config().limit(u64::MAX).read_to_string()
        } else {
            body.read_to_string()
        }
        .map_err(|e| format!("ClickHouse: reading the answer: {e}"))?;
        if status != 200 {
            return Err(format!(
                "ClickHouse answered {status} to `{sql}`: {}",
                body.trim()
            ));
        }
        Ok(body)
    }

    /// Runs `sql` (sent as the POST body) and returns the answer's body.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        self.query_with(sql, "")
    }

    /// `SELECT count() FROM table`.
    pub fn count(&self, table: &str) -> Result<u64, String> {
        let out = self.query(&format!("SELECT count() FROM {table}"))?;
        out.trim()
            .parse()
            .map_err(|e| format!("count of {table}: {e}: {out:?}"))
    }

    /// `SELECT version()`, trimmed.
    pub fn version(&self) -> Result<String, String> {
        self.query("SELECT version()").map(|s| s.trim().to_string())
    }
}

/// Percent-encodes a query for a URL parameter (space and the reserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_encode_spaces_and_parens() {
        assert_eq!(
            super::url_encode("INSERT INTO a.b FORMAT JSONEachRow"),
            "INSERT%20INTO%20a.b%20FORMAT%20JSONEachRow"
        );
    }
}
