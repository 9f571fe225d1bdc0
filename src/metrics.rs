//! Prometheus metrics: one registry per application (no global recorder, so tests can run
//! several services in one process), the families entrance records, and their text encoding.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use time::OffsetDateTime;

use crate::config::Config;
use crate::sync;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// The route template (`/login/callback`), never the raw path: raw paths would let anyone
    /// create unbounded label values.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectionLabels {
    pub connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub connection: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub connection: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HeaderLabels {
    /// One of entrance's own header names, so the label set stays bounded.
    pub header: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabels {
    /// `sqlite` or `redis`.
    pub store: String,
    /// `hit` (answered from the cache) or `miss` (read from the store).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_duration: HistogramFamily<RouteLabels>,
    pub logins_started: Family<ConnectionLabels, Counter>,
    pub logins_succeeded: Family<ConnectionLabels, Counter>,
    pub logins_failed: Family<FailureLabels, Counter>,
    pub token_exchange_duration: HistogramFamily<ConnectionLabels>,
    pub jwks_fetch_duration: HistogramFamily<ConnectionLabels>,
    pub key_refreshes: Family<ResultLabels, Counter>,
    pub auth_outcomes: Family<OutcomeLabels, Counter>,
    pub session_store_errors: Counter,
    /// Session reads by the store's read cache, by result (`hit`, `miss`).
    session_cache_requests: Family<CacheLabels, Counter>,
    pub header_overflows: Family<HeaderLabels, Counter>,
    /// Unix second of the last header-overflow warning, so a busy `/auth` logs one a minute
    /// instead of one per request.
    last_overflow_warning: std::sync::atomic::AtomicI64,
    /// Code exchanges that succeeded only with a later (older) secret than the first.
    pub client_secret_fallbacks: Family<ConnectionLabels, Counter>,
    /// Refreshes of upstream access tokens by result: `refreshed`, `sign_in_again` (the grant
    /// is gone; the session ended), `failed` (kept; retried later).
    pub upstream_refreshes: Family<ResultLabels, Counter>,
    /// `/auth` answers refused because the access token exceeded `upstream.max_token_bytes`.
    pub upstream_token_oversize: Family<ConnectionLabels, Counter>,
    /// Microsoft Graph calls resolving group overage, by result (`ok`, `forbidden`,
    /// `throttled`, `timeout`, `malformed`, `failed`).
    pub graph_requests: Family<ResultLabels, Counter>,
    secret_expiry_days: Family<ConnectionLabels, Gauge>,
    /// (connection id, expiry) pairs, for the gauge computed at scrape time.
    /// Replaced when the configuration is reloaded.
    secret_expiries: std::sync::Mutex<Vec<(String, OffsetDateTime)>>,
    /// The counters of [`AUTH_OUTCOMES`], each taken from its family once: `/auth` counts
    /// one per request, and the family's lookup (a `String` and a SipHash of the labels)
    /// showed in its profile (docs/BENCHMARKS.md).
    outcome_counters: [std::sync::OnceLock<Counter>; AUTH_OUTCOMES.len()],
    /// The request counter and histogram of each (route, method, status) seen, for the
    /// same reason: two family lookups per request become one lookup here.
    route_metrics: std::sync::RwLock<
        std::collections::HashMap<RouteLabels, (Counter, Histogram), foldhash::fast::RandomState>,
    >,
}

/// The outcomes `/auth` counts (`entrance_auth_outcomes_total{outcome}`); another name is
/// counted through the family.
const AUTH_OUTCOMES: [&str; 8] = [
    "authorized",
    "unauthorized",
    "forbidden",
    "redirect",
    "preflight",
    "error",
    "bearer_authorized",
    "bearer_invalid",
];

fn secret_expiries(config: &Config) -> Vec<(String, OffsetDateTime)> {
    config
        .connections
        .iter()
        .filter_map(|c| c.client_secret_expires_at.map(|t| (c.id.clone(), t)))
        .collect()
}

impl Metrics {
    /// Every metric, registered with its help text. One piece on purpose: it is the list of
    /// what `/metrics` exposes, read top to bottom; splitting it would scatter that list.
    pub(crate) fn new(config: &Config) -> Metrics {
        let mut registry = Registry::with_prefix("entrance");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            request_duration.clone(),
        );
        let logins_started = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "logins_started",
            "Logins sent to an IdP",
            logins_started.clone(),
        );
        let logins_succeeded = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "logins_succeeded",
            "Logins that ended signed in",
            logins_succeeded.clone(),
        );
        let logins_failed = Family::<FailureLabels, Counter>::default();
        registry.register(
            "logins_failed",
            "Failed login callbacks by connection and reason",
            logins_failed.clone(),
        );
        let token_exchange_duration: HistogramFamily<ConnectionLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "token_exchange_duration_seconds",
            "Latency of the code exchange at the token endpoint",
            token_exchange_duration.clone(),
        );
        let jwks_fetch_duration: HistogramFamily<ConnectionLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "jwks_fetch_duration_seconds",
            "Latency of JWKS fetches",
            jwks_fetch_duration.clone(),
        );
        let key_refreshes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "key_refreshes",
            "Metadata and key refreshes by result",
            key_refreshes.clone(),
        );
        let auth_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_requests",
            "Forward-auth (/auth) answers by outcome",
            auth_outcomes.clone(),
        );
        let session_store_errors = Counter::default();
        registry.register(
            "session_store_errors",
            "Requests that failed because the session store did",
            session_store_errors.clone(),
        );
        let session_cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register(
            "session_cache_requests",
            "Session reads by the store's read cache (session.cache_entries), by store and result: hit (answered from this process) or miss (read from the store)",
            session_cache_requests.clone(),
        );
        let header_overflows = Family::<HeaderLabels, Counter>::default();
        registry.register(
            "forward_auth_header_overflow",
            "Forward-auth identity headers cut to forward_auth.max_header_bytes",
            header_overflows.clone(),
        );
        let secret_expiry_days = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "client_secret_expiry_days",
            "Days until each connection's client secret expires (client_secret_expires_at)",
            secret_expiry_days.clone(),
        );
        let client_secret_fallbacks = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "client_secret_fallbacks",
            "Code exchanges that succeeded only with an older client secret (remove the refused one)",
            client_secret_fallbacks.clone(),
        );
        let upstream_refreshes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "upstream_token_refreshes",
            "Refreshes of the access tokens passed upstream, by result (refreshed, sign_in_again, failed)",
            upstream_refreshes.clone(),
        );
        let upstream_token_oversize = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "upstream_token_oversize",
            "Forward-auth answers refused because the access token exceeded upstream.max_token_bytes",
            upstream_token_oversize.clone(),
        );
        let graph_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "Microsoft Graph calls resolving group overage at sign-in, by result (ok, forbidden, throttled, timeout, malformed, failed)",
            graph_requests.clone(),
        );
        let secret_expiries = std::sync::Mutex::new(secret_expiries(config));
        Metrics {
            graph_requests,
            upstream_refreshes,
            upstream_token_oversize,
            registry,
            requests,
            request_duration,
            logins_started,
            logins_succeeded,
            logins_failed,
            token_exchange_duration,
            jwks_fetch_duration,
            key_refreshes,
            auth_outcomes,
            session_store_errors,
            session_cache_requests,
            header_overflows,
            last_overflow_warning: std::sync::atomic::AtomicI64::new(i64::MIN),
            client_secret_fallbacks,
            secret_expiry_days,
            secret_expiries,
            outcome_counters: Default::default(),
            route_metrics: Default::default(),
        }
    }

    /// Counts a routed request and its duration under `labels`.
    pub(crate) fn request(&self, labels: RouteLabels, seconds: f64) {
        let known = sync::read(&self.route_metrics).get(&labels).cloned();
        let (count, duration) = match known {
            Some(pair) => pair,
            None => {
                let pair = (
                    self.requests.get_or_create(&labels).clone(),
                    self.request_duration.get_or_create(&labels).clone(),
                );
                sync::write(&self.route_metrics).insert(labels, pair.clone());
                pair
            }
        };
        count.inc();
        duration.observe(seconds);
    }

    /// After a configuration reload: the expiry gauge follows the new connections.
    pub(crate) fn set_secret_expiries(&self, config: &Config) {
        let next = secret_expiries(config);
        self.secret_expiry_days.clear();
        *sync::lock(&self.secret_expiries) = next;
    }

    pub(crate) fn connection(id: &str) -> ConnectionLabels {
        ConnectionLabels {
            connection: id.to_owned(),
        }
    }

    pub(crate) fn observe(histogram: &HistogramFamily<ConnectionLabels>, id: &str, took: Duration) {
        histogram
            .get_or_create(&Self::connection(id))
            .observe(took.as_secs_f64());
    }

    pub(crate) fn upstream_refresh(&self, connection: &str, result: &str) {
        self.upstream_refreshes
            .get_or_create(&ResultLabels {
                connection: connection.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The hit and miss counters of `store`'s read cache, created (so both show as 0) and
    /// handed out once: the cache counts without a label lookup per request.
    pub(crate) fn session_cache_counters(&self, store: &str) -> (Counter, Counter) {
        let counter = |result: &str| {
            self.session_cache_requests
                .get_or_create(&CacheLabels {
                    store: store.to_owned(),
                    result: result.to_owned(),
                })
                .clone()
        };
        (counter("hit"), counter("miss"))
    }

    pub(crate) fn auth_outcome(&self, outcome: &str) {
        let family = || {
            self.auth_outcomes
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .clone()
        };
        match AUTH_OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => self.outcome_counters[i].get_or_init(family).inc(),
            None => family().inc(),
        };
    }

    /// Counts a header cut to the budget; true when the caller should also log a warning
    /// (at most once a minute per process).
    pub(crate) fn header_overflow(&self, header: &str) -> bool {
        use std::sync::atomic::Ordering;
        self.header_overflows
            .get_or_create(&HeaderLabels {
                header: header.to_owned(),
            })
            .inc();
        let now = crate::clock::now_unix();
        let last = self.last_overflow_warning.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 60
            && self
                .last_overflow_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The Prometheus text exposition format.
    pub(crate) fn render(&self) -> String {
        let now = OffsetDateTime::now_utc();
        let expiries = sync::lock(&self.secret_expiries).clone();
        for (id, expires) in &expiries {
            self.secret_expiry_days
                .get_or_create(&Self::connection(id))
                .set((*expires - now).whole_days());
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&Config::load_str(crate::config::DEMO_TOML).expect("demo config"))
    }

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    #[test]
    fn a_routes_counter_taken_once_keeps_counting_in_the_family() {
        let m = metrics();
        let labels = |status| RouteLabels {
            route: "/auth".to_owned(),
            method: "GET".to_owned(),
            status,
        };
        for _ in 0..3 {
            m.request(labels(200), 0.0005);
        }
        m.request(labels(401), 0.002);
        let text = m.render();
        let count = |status| {
            line(
                &text,
                &format!(
                    "entrance_http_requests_total{{route=\"/auth\",method=\"GET\",status=\"{status}\"}}"
                ),
            )
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
        };
        assert_eq!(count(200).as_deref(), Some("3"), "{text}");
        assert_eq!(count(401).as_deref(), Some("1"), "{text}");
        let durations = line(
            &text,
            "entrance_http_request_duration_seconds_count{route=\"/auth\",method=\"GET\",status=\"200\"}",
        );
        assert!(durations.is_some_and(|l| l.ends_with(" 3")), "{text}");
    }

    #[test]
    fn known_and_unknown_auth_outcomes_are_both_counted() {
        let m = metrics();
        m.auth_outcome("authorized");
        m.auth_outcome("authorized");
        m.auth_outcome("bearer_forbidden");
        let text = m.render();
        assert!(
            line(
                &text,
                "entrance_auth_requests_total{outcome=\"authorized\"} 2"
            )
            .is_some(),
            "{text}"
        );
        assert!(
            line(
                &text,
                "entrance_auth_requests_total{outcome=\"bearer_forbidden\"} 1"
            )
            .is_some(),
            "{text}"
        );
    }
}
