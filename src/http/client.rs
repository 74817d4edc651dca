//! Who is calling: the key's place in a request (`Authorization: Bearer`) and the client's
//! address behind trusted proxies. The keys themselves are in `keys.rs`.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::HttpRequest;
use actix_web::http::header;
use ipnet::IpNet;

/// The token of `Authorization: Bearer <token>`; the scheme's name is case-insensitive
/// (RFC 9110 section 11.1), so `BEARER` and `bearer` count too.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The client's address as IPv6 (IPv4 mapped). `X-Forwarded-For` and `Forwarded` are
/// believed only when the TCP peer is a trusted proxy: then the client is the right-most
/// address in the chain that is not itself a trusted proxy (a client can prepend anything,
/// but not what the proxies append).
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Ipv6Addr {
    let peer = req.peer_addr().map(|a| a.ip());
    let ip = match peer {
        Some(peer) if is_trusted(peer, trusted) => forwarded_client(req, trusted).unwrap_or(peer),
        Some(peer) => peer,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

fn forwarded_client(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let headers = req.headers();
    // X-Forwarded-For when there is one: it is what proxies append to, while a client's own
    // `Forwarded` header usually passes through them untouched. `Forwarded` only when no
    // proxy wrote X-Forwarded-For.
    let entries: Vec<&str> = if headers.contains_key("x-forwarded-for") {
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            entries.extend(value.to_str().ok()?.split(','));
        }
        entries
    } else {
        let mut entries = Vec::new();
        for value in headers.get_all(header::FORWARDED) {
            for element in value.to_str().ok()?.split(',') {
                let node = element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.eq_ignore_ascii_case("for").then_some(value)
                });
                // An element without `for=` hides its client: it ends the chain here.
                entries.push(node.unwrap_or("unknown"));
            }
        }
        entries
    };
    // From the right: skip our own proxies; the first other address is the client. An entry
    // that is not an address (`unknown`, `_hidden`, garbage) stops the walk, and the last
    // trusted hop is used instead: anything left of it is the client's to invent.
    let mut client = None;
    for entry in entries.iter().rev() {
        let ip = parse_node(entry)?;
        client = Some(ip);
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:443"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn request(peer: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        req.to_http_request()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = [("x-forwarded-for", "203.0.113.9, 10.0.0.2")];
        let from_proxy = request("10.0.0.1:5000", &xff);
        assert_eq!(
            client_ip(&from_proxy, &trusted).to_string(),
            "::ffff:203.0.113.9"
        );
        let from_client = request("198.51.100.7:5000", &xff);
        assert_eq!(
            client_ip(&from_client, &trusted).to_string(),
            "::ffff:198.51.100.7"
        );
        assert_eq!(client_ip(&from_proxy, &[]).to_string(), "::ffff:10.0.0.1");
    }

    #[test]
    fn a_spoofed_left_entry_does_not_win() {
        let trusted = nets(&["10.0.0.0/8"]);
        let req = request(
            "10.0.0.1:1",
            &[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.3")],
        );
        assert_eq!(client_ip(&req, &trusted).to_string(), "::ffff:203.0.113.9");
    }

    #[test]
    fn unparseable_or_hidden_entries_stop_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        let hidden = request(
            "10.0.0.1:1",
            &[("x-forwarded-for", "203.0.113.9, unknown, 10.0.0.3")],
        );
        assert_eq!(client_ip(&hidden, &trusted).to_string(), "::ffff:10.0.0.1");
        // A client's own Forwarded header does not override what the proxy appended.
        let both = request(
            "10.0.0.1:1",
            &[
                ("forwarded", "for=6.6.6.6"),
                ("x-forwarded-for", "198.51.100.4"),
            ],
        );
        assert_eq!(
            client_ip(&both, &trusted).to_string(),
            "::ffff:198.51.100.4"
        );
    }

    #[test]
    fn the_forwarded_header_is_understood() {
        let trusted = nets(&["10.0.0.0/8"]);
        let req = request(
            "10.0.0.1:1",
            &[(
                "forwarded",
                "for=\"[2001:db8::7]:443\";proto=https, for=10.0.0.5",
            )],
        );
        assert_eq!(client_ip(&req, &trusted).to_string(), "2001:db8::7");
    }
}
