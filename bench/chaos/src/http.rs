//! Small blocking HTTP helpers: the ureq agent settings and ClickHouse queries.

use std::time::Duration;

use ureq::Agent;

/// An agent that returns every status as a response (not an error) and never reuses a
/// connection idle for more than a second (ClickHouse and killed services drop them).
pub fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
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
pub struct ClickHouseHttp {
    base: String,
    agent: Agent,
}

impl ClickHouseHttp {
    /// The interface at `http://127.0.0.1:port`.
    pub fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            agent: agent(Duration::from_secs(60)),
        }
    }

    /// Runs `sql` (sent as the POST body) and returns the answer's body.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let mut resp = self
            .agent
            .post(&format!("{}/", self.base))
            .send(sql)
            .map_err(|e| format!("ClickHouse at {}: {e} (query: {sql})", self.base))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            // Verification answers can hold millions of rows (ureq's default cap is 10 MB).
            .with_config()
            .limit(u64::MAX)
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

    /// `SELECT count() FROM table`.
    pub fn count(&self, table: &str) -> Result<u64, String> {
        let out = self.query(&format!("SELECT count() FROM {table}"))?;
        out.trim()
            .parse()
            .map_err(|e| format!("count of {table}: {e}: {out:?}"))
    }
}
