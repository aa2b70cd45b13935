//! Whose application this is, for the per-address limit.
//!
//! Behind a load balancer every TCP peer is the balancer, so the client is read from
//! `X-Forwarded-For`, but only when the peer is a trusted proxy (`APP_HTTP__TRUSTED_PROXIES`):
//! anyone else could write any address there. Walking the header from the right, every hop a
//! trusted proxy added is believed, and the first address that is not a trusted proxy is the
//! client. An IPv6 client is keyed by its /64: one subscriber usually holds a whole /64 and could
//! otherwise rotate through it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    trusted: Vec<IpNet>,
}

impl ClientAddress {
    /// `cidrs`: comma-separated networks (`10.0.0.0/8, 192.168.1.7`); a bare address is one host.
    pub fn new(cidrs: &str) -> anyhow::Result<Self> {
        let trusted = cidrs
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .with_context(|| format!("APP_HTTP__TRUSTED_PROXIES: {c:?} is not a CIDR"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { trusted })
    }

    /// The key of the client's address bucket: the peer, or the client a trusted proxy names
    /// in `forwarded_for` (every `X-Forwarded-For` value, in order).
    pub fn of<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        let mut client = canonical(peer?);
        let mut hops = forwarded_for
            .rev()
            .flat_map(|v| v.rsplit(','))
            .map(str::trim);
        while self.is_trusted(client) {
            match hops.next().map(hop_address) {
                Some(Some(hop)) => client = canonical(hop),
                // Nothing more to believe: the last trusted hop is the best we know.
                _ => break,
            }
        }
        Some(bucket(client))
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }
}

/// A hop as proxies write it: an address, or an address with the port it came from
/// (`203.0.113.7:51234`, `[2001:db8::1]:443`), or a bracketed IPv6 address without one.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// An IPv4 client that reached us over IPv6 (`::ffff:a.b.c.d`) is that IPv4 client.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(trusted: &str, peer: &str, header: &[&str]) -> IpAddr {
        ClientAddress::new(trusted)
            .unwrap()
            .of(Some(ip(peer)), header.iter().copied())
            .unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client("", "198.51.100.9", &["203.0.113.7"]),
            ip("198.51.100.9")
        );
        assert_eq!(
            client("10.0.0.0/8", "198.51.100.9", &["203.0.113.7"]),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn trusted_hops_are_walked_from_the_right() {
        let trusted = "10.0.0.0/8, 192.168.1.7";
        // The client forged the left-most entry; the right-most untrusted one is what the
        // first trusted proxy saw.
        assert_eq!(
            client(
                trusted,
                "10.0.0.2",
                &["1.1.1.1, 203.0.113.7", "192.168.1.7"]
            ),
            ip("203.0.113.7")
        );
        assert_eq!(client(trusted, "10.0.0.2", &[]), ip("10.0.0.2"));
        assert_eq!(client(trusted, "10.0.0.2", &["garbage"]), ip("10.0.0.2"));
    }

    #[test]
    fn hops_written_with_their_port_are_walked_too() {
        let trusted = "10.0.0.0/8";
        for (header, expected) in [
            ("203.0.113.7:51234", "203.0.113.7"),
            ("[2001:db8::1]:443", "2001:db8::"),
            ("[2001:db8::1]", "2001:db8::"),
            ("203.0.113.7:51234, 10.0.0.3:80", "203.0.113.7"),
        ] {
            assert_eq!(
                client(trusted, "10.0.0.2", &[header]),
                ip(expected),
                "{header}"
            );
        }
        assert_eq!(client(trusted, "10.0.0.2", &["host:80"]), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a = client("::1", "::1", &["2001:db8::1"]);
        let b = client("::1", "::1", &["2001:db8::ffff:2"]);
        let c = client("::1", "::1", &["2001:db8:0:1::1"]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(client("", "::ffff:203.0.113.7", &[]), ip("203.0.113.7"));
    }

    #[test]
    fn a_bad_cidr_is_refused_by_name() {
        let e = ClientAddress::new("10.0.0.0/8, nonsense").unwrap_err();
        assert!(e.to_string().contains("APP_HTTP__TRUSTED_PROXIES"));
    }
}
