//! Per-client-IP rate limiting of the login endpoints, so one client cannot fill the session
//! store with pending logins or make entrance hammer an IdP.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::{
    config::{ClientIpHeader, RateLimitSettings},
    error::AppError,
};

#[derive(Clone)]
pub struct LoginLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    client_ip_header: Option<ClientIpHeader>,
}

impl LoginLimiter {
    pub fn new(settings: &RateLimitSettings) -> LoginLimiter {
        let quota = Quota::per_minute(settings.per_minute).allow_burst(settings.burst);
        LoginLimiter {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            client_ip_header: settings.client_ip_header.clone(),
        }
    }

    /// Forgets clients whose budget is full again, so the table stays small.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let from_header = match &self.client_ip_header {
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
}

pub async fn limit(
    State(limiter): State<LoginLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let ip = limiter.client_ip(peer.ip(), req.headers());
    if let Err(not_until) = limiter.limiter.check_key(&ip) {
        let clock = governor::clock::DefaultClock::default();
        let wait = not_until.wait_time_from(clock.now());
        return Err(AppError::RateLimited {
            retry_after: wait.max(Duration::from_secs(1)),
        });
    }
    Ok(next.run(req).await)
}
