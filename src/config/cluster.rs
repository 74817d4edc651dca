//! The cluster settings, parsed: `CLICKHOUSE_HOSTS` into shards of replicas, and which
//! columns `CLICKHOUSE_SHARDING_KEY` may name.

use std::fmt;

/// One ClickHouse HTTP endpoint of `CLICKHOUSE_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// HTTP(S) port.
    pub port: u16,
    /// Reached over HTTPS (`https://` in front of the host).
    pub tls: bool,
}

impl HostPort {
    /// `http://host:port` or `https://host:port`.
    pub fn url(&self) -> String {
        let scheme = match self.tls {
            true => "https",
            false => "http",
        };
        format!("{scheme}://{self}")
    }
}

/// The port of a scheme when none is given: 8443 for HTTPS (managed ClickHouse), 8123.
pub fn default_port(tls: bool) -> u16 {
    match tls {
        true => 8443,
        false => 8123,
    }
}

/// `https://host` → `(true, "host")`; `http://host` and `host` → `(false, "host")`.
pub fn strip_scheme(item: &str) -> (bool, &str) {
    match item.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, item.strip_prefix("http://").unwrap_or(item)),
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Columns the gateway can evaluate `toString(<column>)` of, byte for byte as ClickHouse
/// does, from an encoded row: the UUID (36 lowercase characters), the strings (themselves)
/// and the unsigned integers (decimal). Times and the address are left out: their text
/// depends on the server's time zone or, on 18.16, on the column's legacy type.
pub const SHARDING_COLUMNS: &[&str] = &[
    "device_id",
    "device_os",
    "session",
    "sequence",
    "event",
    "param_int",
    "param_str",
];

/// Parses `CLICKHOUSE_HOSTS`: `;` between shards, `,` between replicas of one shard, each
/// `host:port` (`[v6]:port`; `https://` in front for HTTPS; `host` alone takes
/// `CLICKHOUSE_PORT` if set, else its scheme's port). Empty shards or hosts, and a host
/// named twice, are errors.
pub fn parse_hosts(text: &str, default_port: Option<u16>) -> Result<Vec<Vec<HostPort>>, String> {
    let mut shards: Vec<Vec<HostPort>> = Vec::new();
    for (i, shard) in text.split(';').enumerate() {
        let mut replicas = Vec::new();
        for item in shard.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("shard {} names an empty host", i + 1));
            }
            let host = parse_host(item, default_port)?;
            if shards.iter().flatten().chain(&replicas).any(|h| *h == host) {
                return Err(format!("{host} is named twice"));
            }
            replicas.push(host);
        }
        shards.push(replicas);
    }
    Ok(shards)
}

fn parse_host(whole: &str, default_port: Option<u16>) -> Result<HostPort, String> {
    let bad = || format!("{whole:?} is not host:port");
    let (tls, item) = strip_scheme(whole);
    let (host, port) = if let Some(rest) = item.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(port) => (v6, Some(port)),
            None if after.is_empty() => (v6, None),
            None => return Err(bad()),
        }
    } else {
        match item.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (item, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => default_port.unwrap_or(self::default_port(tls)),
    };
    if !super::is_host(host) || host.starts_with('[') {
        return Err(bad());
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
            tls: false,
        }
    }

    #[test]
    fn semicolons_separate_shards_commas_replicas() {
        let shards = parse_hosts("a:8123, b:8124;c", Some(9000)).unwrap();
        assert_eq!(
            shards,
            vec![vec![hp("a", 8123), hp("b", 8124)], vec![hp("c", 9000)]]
        );
        let v6 = parse_hosts("[::1]:18123", Some(1)).unwrap();
        assert_eq!(v6, vec![vec![hp("::1", 18123)]]);
        assert_eq!(v6[0][0].to_string(), "[::1]:18123");
    }

    /// `https://` in front of a host speaks HTTPS, on 8443 unless a port is given (in the
    /// entry, or `CLICKHOUSE_PORT`); schemes may be mixed in one cluster.
    #[test]
    fn a_host_may_say_https_and_takes_its_port() {
        let shards = parse_hosts("https://a, http://b:9;https://[::1]:7, c", None).unwrap();
        let tls = |host: &str, port| HostPort {
            tls: true,
            ..hp(host, port)
        };
        assert_eq!(
            shards,
            vec![
                vec![tls("a", 8443), hp("b", 9)],
                vec![tls("::1", 7), hp("c", 8123)]
            ]
        );
        assert_eq!(shards[0][0].url(), "https://a:8443");
        assert_eq!(parse_hosts("https://a", Some(1)).unwrap()[0][0].port, 1);
    }

    #[test]
    fn malformed_lists_are_refused() {
        for text in [
            "",
            "a;",
            "a,,b",
            "a:0",
            "a:x",
            "a:1;a:1",
            "ftp://a:1",
            "https://",
            "a/b:1",
        ] {
            assert!(parse_hosts(text, Some(8123)).is_err(), "{text:?}");
        }
    }
}
