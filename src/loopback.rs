//! What counts as a loopback host: the one place plain `http` is allowed (the demo, tests, an
//! IdP on the same machine).

use url::Url;

/// `localhost` or a loopback IP literal.
pub(crate) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
