//! What counts as a loopback host, and with it where a secret, a code or a token may be sent:
//! https, or plain `http` only on loopback (the demo, tests, an IdP on the same machine).

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

/// https, or plain http on a loopback host: the only URLs entrance sends a client secret, a
/// code or a token to (the IdP's endpoints, userinfo, the metadata URL).
pub(crate) fn is_secure_url(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => is_loopback_host(url),
        _ => false,
    }
}
