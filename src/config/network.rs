//! Address ranges in configuration (`rate_limit.trusted_proxies`): an address, or a network in
//! CIDR notation (RFC 4632 §3.1 for IPv4, RFC 4291 §2.3 for IPv6).

use std::net::IpAddr;

/// An IPv4 or IPv6 network: an address and how many leading bits of it are fixed. A single
/// address is a /32 (IPv4) or /128 (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`, `::1`. A network written with host bits
    /// set (`10.0.0.1/8`) is refused: it usually means a typo in the prefix length.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length outside 0..={max}"))?,
        };
        let net = IpNet { addr, prefix };
        if net.network() != addr {
            return Err(format!(
                "{s:?} has host bits set; the network is {}/{prefix}",
                net.network()
            ));
        }
        Ok(net)
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack listener reports for an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The address with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(u32::from(a), self.prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(u128::from(a), self.prefix).into()),
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask_v4(bits: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p))),
    }
}

pub(crate) fn mask_v6(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn networks_and_single_addresses() {
        let net = IpNet::parse("10.0.0.0/8").expect("parses");
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));

        let one = IpNet::parse(" 127.0.0.1 ").expect("parses");
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));

        let v6 = IpNet::parse("2001:db8:1::/48").expect("parses");
        assert!(v6.contains(ip("2001:db8:1:ffff::7")));
        assert!(!v6.contains(ip("2001:db8:2::7")));

        let all = IpNet::parse("0.0.0.0/0").expect("parses");
        assert!(all.contains(ip("203.0.113.9")));
        assert_eq!(v6.to_string(), "2001:db8:1::/48");
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        for (bad, says) in [
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "prefix length"),
            ("::/129", "prefix length"),
            ("proxy.internal", "not an IP"),
            ("10.0.0.0/x", "prefix length"),
        ] {
            let err = IpNet::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
