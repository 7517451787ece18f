//! Which address is the client's. Without `TESSERA_TRUSTED_PROXIES` it is the socket peer's,
//! whatever a request's `X-Forwarded-For` says: anybody can send that header, so believing it
//! would let one client claim a fresh address per request and walk around every per-address
//! limit. With the addresses (or CIDR networks) of the proxies in front of Tessera, a request
//! from one of them is attributed to the hop before it: `X-Forwarded-For` is read from the
//! right (each proxy appends the address it saw), skipping trusted proxies, and the first
//! address that is not one is the client. An unparsable hop ends the walk there.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parses one entry of `TESSERA_TRUSTED_PROXIES`: an address (`10.0.0.7`, `::1`) or a
/// network (`10.0.0.0/8`).
///
/// # Errors
/// A message naming the entry that is neither.
pub fn parse_proxy(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR network"))
}

/// The client's address for a request from `peer` with `headers`, given the trusted proxies.
pub fn client_ip(proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = |ip: &IpAddr| proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let proxies = [
            parse_proxy("10.0.0.0/8").unwrap(),
            parse_proxy("::1").unwrap(),
        ];
        let table = [
            // No proxies trusted: always the peer.
            (&[][..], "203.0.113.9", &["198.51.100.1"][..], "203.0.113.9"),
            // An untrusted peer's header is ignored.
            (
                &proxies[..],
                "203.0.113.9",
                &["198.51.100.1"][..],
                "203.0.113.9",
            ),
            // From a trusted proxy: the hop it saw.
            (
                &proxies[..],
                "10.1.2.3",
                &["198.51.100.1"][..],
                "198.51.100.1",
            ),
            // A client's own spoofed hops stay left of the hop the proxy appended.
            (
                &proxies[..],
                "10.1.2.3",
                &["1.1.1.1, 198.51.100.1"][..],
                "198.51.100.1",
            ),
            // Proxies in a chain are skipped, over several header lines.
            (
                &proxies[..],
                "::1",
                &["198.51.100.1", "10.9.9.9"][..],
                "198.51.100.1",
            ),
            // Garbage ends the walk at the last address known.
            (&proxies[..], "10.1.2.3", &["nonsense"][..], "10.1.2.3"),
            // Nothing but proxies: the leftmost.
            (&proxies[..], "10.1.2.3", &["10.0.0.1"][..], "10.0.0.1"),
        ];
        for (proxies, peer, xff, want) in table {
            assert_eq!(
                client_ip(proxies, ip(peer), &headers(xff)),
                ip(want),
                "{peer} {xff:?}"
            );
        }
        assert!(parse_proxy("10.0.0.0/33").is_err());
        assert!(parse_proxy("proxy.example").is_err());
    }
}
