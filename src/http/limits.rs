//! Per-client-IP rate limiting of the login endpoints, so one client cannot fill the session
//! store with pending logins or make entrance hammer an IdP; and the client IP itself (peer
//! address, or a trusted proxy's header), which the audit log records too.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, request::Parts},
    middleware::Next,
    response::Response,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::AppState;
use crate::{
    config::{ClientIpHeader, IpNet, RateLimitSettings},
    http::error::AppError,
};

/// Setup page requests per client and minute, and the burst (`LoginLimiter::setup`).
const SETUP_PER_MINUTE: NonZeroU32 = NonZeroU32::MIN.saturating_add(19);
const SETUP_BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(29);

#[derive(Clone)]
pub(crate) struct LoginLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    proxies: ClientIpSource,
}

impl LoginLimiter {
    pub(crate) fn new(settings: &RateLimitSettings) -> LoginLimiter {
        let quota = Quota::per_minute(settings.per_minute).allow_burst(settings.burst);
        LoginLimiter {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            proxies: ClientIpSource::of(settings),
        }
    }

    /// The setup pages' limit (issue 17), whatever `[rate_limit]` says: each submission
    /// makes several calls to Entra (metadata, keys, a token request), and a customer's admin
    /// needs a few tries, not hundreds. The client IP is found as for sign-ins.
    pub(crate) fn setup(settings: Option<&RateLimitSettings>) -> LoginLimiter {
        let quota = Quota::per_minute(SETUP_PER_MINUTE).allow_burst(SETUP_BURST);
        LoginLimiter {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            proxies: settings.map(ClientIpSource::of).unwrap_or_default(),
        }
    }

    /// Forgets clients whose budget is full again, so the table stays small.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Where a request's client address comes from: `rate_limit.client_ip_header`, believed only
/// from a peer in `rate_limit.trusted_proxies`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientIpSource {
    header: Option<ClientIpHeader>,
    trusted: Vec<IpNet>,
}

impl ClientIpSource {
    pub(crate) fn of(settings: &RateLimitSettings) -> ClientIpSource {
        ClientIpSource {
            header: settings.client_ip_header.clone(),
            trusted: settings.trusted_proxies.clone(),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the configured header's, when the peer is a trusted proxy and
    /// the header parses, else the TCP peer's. From any other peer the header is the
    /// client's own claim and is ignored. `X-Forwarded-For` is read from the right, past the
    /// entries of trusted proxies (each appended by the next one in the chain): the first
    /// entry no trusted proxy wrote is the client (nginx's `real_ip_recursive`), never one the
    /// client made up further left.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        let Some(header) = &self.header else {
            return peer;
        };
        if !self.trusts(peer) {
            return peer;
        }
        let from_header = match header {
            ClientIpHeader::XForwardedFor => {
                let entries: Vec<&str> = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .collect();
                let mut client = None;
                for entry in entries.iter().rev() {
                    match entry.trim().parse::<IpAddr>() {
                        Ok(ip) => {
                            let ip = ip.to_canonical();
                            client = Some(ip);
                            if !self.trusts(ip) {
                                break;
                            }
                        }
                        // Garbage where an address should be: nothing to the left of it
                        // can be trusted either.
                        Err(_) => {
                            client = None;
                            break;
                        }
                    }
                }
                client
            }
            ClientIpHeader::Single(name) => headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
                .map(|ip| ip.to_canonical()),
        };
        from_header.unwrap_or(peer)
    }
}

/// The key a client is rate-limited by: its IPv4 address, or its IPv6 /64. One IPv6 subscriber
/// or host usually holds a whole /64 (RFC 6177 §3, RFC 7421), so per-address keys would hand
/// it 2^64 budgets.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(crate::config::mask_v6(u128::from(v6), 64).into()),
        v4 => v4,
    }
}

/// The request's client IP for audit lines, by [`ClientIpSource::client_ip`]: the same rule as
/// rate limiting.
/// `None` only when the server runs without connect info (some unit tests); never a rejection,
/// so an audit line can never stop a sign-in.
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let source = state
            .config
            .rate_limit
            .as_ref()
            .map(ClientIpSource::of)
            .unwrap_or_default();
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| source.client_ip(peer.ip(), &parts.headers)),
        ))
    }
}

pub(crate) async fn limit(
    State(limiter): State<LoginLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let ip = limiter.proxies.client_ip(peer.ip(), req.headers());
    if let Err(not_until) = limiter.limiter.check_key(&limit_key(ip)) {
        let clock = governor::clock::DefaultClock::default();
        let wait = not_until.wait_time_from(clock.now());
        return Err(AppError::RateLimited {
            retry_after: wait.max(Duration::from_secs(1)),
        });
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn source(header: Option<ClientIpHeader>, trusted: &[&str]) -> ClientIpSource {
        ClientIpSource {
            header,
            trusted: trusted
                .iter()
                .map(|t| IpNet::parse(t).expect("a network"))
                .collect(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Issue 12.9: one IPv6 host holds a /64; every address in it shares one budget.
    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(limit_key(ip("2001:db8:1:2::7")), ip("2001:db8:1:2::"));
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        // IPv4, plain or mapped, keeps its whole address.
        assert_eq!(limit_key(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
        assert_ne!(limit_key(ip("203.0.113.9")), limit_key(ip("203.0.113.10")));
    }

    /// Issue 12.9: the header is believed only from a trusted proxy.
    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let s = source(
            Some(ClientIpHeader::Single("x-real-ip".into())),
            &["10.0.0.0/8"],
        );
        let h = headers(&[("x-real-ip", "203.0.113.7")]);
        assert_eq!(s.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.7"));
        assert_eq!(
            s.client_ip(ip("::ffff:10.1.2.3"), &h),
            ip("203.0.113.7"),
            "a dual-stack listener's IPv4 peer"
        );
        assert_eq!(
            s.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1"),
            "a client talking to entrance directly cannot pick its own address"
        );
        let junk = headers(&[("x-real-ip", "not an address")]);
        assert_eq!(s.client_ip(ip("10.1.2.3"), &junk), ip("10.1.2.3"));
        let none = source(None, &[]);
        assert_eq!(none.client_ip(ip("10.1.2.3"), &h), ip("10.1.2.3"));
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let s = source(
            Some(ClientIpHeader::XForwardedFor),
            &["127.0.0.1", "10.0.0.0/8"],
        );
        let peer = ip("127.0.0.1");
        // The client made up the first entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7")]);
        assert_eq!(s.client_ip(peer, &h), ip("203.0.113.7"));
        // Two proxies: the inner one appended the outer one's address.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.0.0.5")]);
        assert_eq!(s.client_ip(peer, &h), ip("203.0.113.7"));
        // Several header lines count as one list.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(s.client_ip(peer, &h), ip("203.0.113.8"));
        // Garbage: the peer.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(s.client_ip(peer, &h), peer);
        // From an untrusted peer the header is ignored.
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(s.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }
}
