//! Small blocking HTTP helpers: ClickHouse queries and the service's health endpoint.

use std::time::Duration;

use ureq::Agent;

pub fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // ClickHouse closes idle keep-alive connections after 3 s; never reuse one that old.
        .max_idle_age(Duration::from_millis(1_000))
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
}

impl ClickHouse {
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            base: format!("http://{host}:{port}"),
            // OPTIMIZE/DROP of a full Buffer table may take a while.
            agent: agent(Duration::from_secs(120)),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Runs `sql` (sent as the POST body), with `settings` as URL parameters.
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
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("ClickHouse: reading the answer: {e}"))?;
        if status != 200 {
            return Err(format!(
                "ClickHouse answered {status} to `{sql}`: {}",
                body.trim()
            ));
        }
        Ok(body)
    }

    pub fn query(&self, sql: &str) -> Result<String, String> {
        self.query_with(sql, "")
    }

    pub fn count(&self, table: &str) -> Result<u64, String> {
        let out = self.query(&format!("SELECT count() FROM {table}"))?;
        out.trim()
            .parse()
            .map_err(|e| format!("count of {table}: {e}: {out:?}"))
    }

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
