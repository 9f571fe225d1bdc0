//! Per-client-IP rate limiting of the login endpoints, so one client cannot fill the session
//! store with pending logins or make entrance hammer an IdP; and the client IP itself (peer
//! address, or a trusted proxy's header), which the audit log records too.

use std::{
    net::{IpAddr, SocketAddr},
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
    config::{ClientIpHeader, RateLimitSettings},
    http::error::AppError,
};

#[derive(Clone)]
pub(crate) struct LoginLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    client_ip_header: Option<ClientIpHeader>,
}

impl LoginLimiter {
    pub(crate) fn new(settings: &RateLimitSettings) -> LoginLimiter {
        let quota = Quota::per_minute(settings.per_minute).allow_burst(settings.burst);
        LoginLimiter {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            client_ip_header: settings.client_ip_header.clone(),
        }
    }

    /// Forgets clients whose budget is full again, so the table stays small.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The client's address: the configured header's, when a trusted proxy sets one and it
/// parses, else the TCP peer's. `X-Forwarded-For` is read from the right: the entry the
/// nearest (trusted) proxy appended, not one the client made up.
pub(crate) fn client_ip(
    header: Option<&ClientIpHeader>,
    peer: IpAddr,
    headers: &HeaderMap,
) -> IpAddr {
    let from_header = match header {
        None => None,
        Some(ClientIpHeader::XForwardedFor) => headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|ip| ip.trim().parse().ok()),
        Some(ClientIpHeader::Single(name)) => headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|ip| ip.trim().parse().ok()),
    };
    from_header.unwrap_or(peer)
}

/// The request's client IP for audit lines, by [`client_ip`] with `rate_limit.client_ip_header`.
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
        let header = state
            .config
            .rate_limit
            .as_ref()
            .and_then(|r| r.client_ip_header.as_ref());
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| client_ip(header, peer.ip(), &parts.headers)),
        ))
    }
}

pub(crate) async fn limit(
    State(limiter): State<LoginLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let ip = client_ip(limiter.client_ip_header.as_ref(), peer.ip(), req.headers());
    if let Err(not_until) = limiter.limiter.check_key(&ip) {
        let clock = governor::clock::DefaultClock::default();
        let wait = not_until.wait_time_from(clock.now());
        return Err(AppError::RateLimited {
            retry_after: wait.max(Duration::from_secs(1)),
        });
    }
    Ok(next.run(req).await)
}
