//! Each connection's view of its IdP: the discovered metadata and signing keys, whether the
//! connection is ready, and how both are (re)fetched — one value per connection, so one
//! customer's outage never touches another's.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use url::Url;

use crate::sync;
use crate::{
    config::{ClientAuth, ConnectionConfig},
    entra,
    loopback::is_secure_url,
    metrics::{Metrics, ResultLabels},
    oidc::http_client::{FetchError, HttpClient},
    oidc::jwks::{JwksError, KeySet},
    oidc::verifier::{self, IssuerPolicy},
};

/// The part of an OpenID Provider's metadata entrance uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Entra's Microsoft Graph host for this cloud (`graph.microsoft.us`, …), for group
    /// overage resolution (`oidc::graph`).
    #[serde(default)]
    pub msgraph_host: Option<String>,
    /// The bundled mock IdP's own Graph origin (Entra publishes no such member): honoured only
    /// for metadata fetched from loopback, and only when it is a loopback origin itself.
    #[serde(default)]
    pub graph_url: Option<String>,
}

/// Why a connection's IdP could not be used. Shown to admins in logs and `/readyz`.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProviderError {
    #[error("fetching the metadata document {url} failed: {source}")]
    Metadata { url: String, source: FetchError },
    #[error(
        "the metadata document publishes issuer {actual:?}, but its URL implies {expected:?}; {advice}"
    )]
    IssuerMismatch {
        expected: String,
        actual: String,
        advice: &'static str,
    },
    #[error("the metadata document is unusable: {0}")]
    BadMetadata(String),
    #[error("fetching the signing keys {url} failed: {source}")]
    Jwks { url: String, source: FetchError },
    #[error("the signing keys document is unusable: {0}")]
    BadJwks(String),
}

impl ProviderError {
    /// A short reason code for metrics, JSON errors and `/readyz`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ProviderError::Metadata { .. } => "metadata_unreachable",
            ProviderError::IssuerMismatch { .. } => "issuer_mismatch",
            ProviderError::BadMetadata(_) => "metadata_invalid",
            ProviderError::Jwks { .. } => "jwks_unreachable",
            ProviderError::BadJwks(_) => "jwks_invalid",
        }
    }
}

/// Validates a metadata document against the connection's configuration. Pure, so it is
/// tested without sockets.
pub(crate) fn check_metadata(
    meta: &Metadata,
    conn: &ConnectionConfig,
) -> Result<IssuerPolicy, ProviderError> {
    let policy = check_issuer(meta, conn)?;
    check_endpoints(meta)?;
    Ok(policy)
}

/// The issuer half of [`check_metadata`] (`entrance check` reports it on a line of its own):
/// how the connection's ID tokens' `iss` will be judged.
pub(crate) fn check_issuer(
    meta: &Metadata,
    conn: &ConnectionConfig,
) -> Result<IssuerPolicy, ProviderError> {
    // OpenID Connect Discovery §4.3: the issuer must be identical to the URL the document was
    // fetched from, minus the well-known suffix. This is what stops a document for one tenant
    // from being used for another.
    if meta.issuer == conn.expected_issuer {
        return Ok(IssuerPolicy::Exact(meta.issuer.clone()));
    }
    // The one exception (docs/reference/ENTRA.md §2): Entra's `common`/`organizations` v2.0 metadata publishes
    // the literal `https://<host>/{tenantid}/v2.0`. Only for those URLs (the template is derived
    // from the URL, so the host must be the one the metadata came from); a tenant URL whose
    // metadata publishes the template is still a mismatch.
    if let Some(template) = &conn.issuer_template
        && &meta.issuer == template
    {
        return Ok(IssuerPolicy::EntraTemplate {
            template: template.clone(),
        });
    }
    Err(ProviderError::IssuerMismatch {
        expected: conn
            .issuer_template
            .clone()
            .unwrap_or_else(|| conn.expected_issuer.clone()),
        actual: meta.issuer.clone(),
        advice: entra::issuer_mismatch_advice(&conn.metadata_url),
    })
}

/// The endpoint half of [`check_metadata`]: every endpoint entrance calls is https.
pub(crate) fn check_endpoints(meta: &Metadata) -> Result<(), ProviderError> {
    for (name, value) in [
        ("authorization_endpoint", &meta.authorization_endpoint),
        ("token_endpoint", &meta.token_endpoint),
        ("jwks_uri", &meta.jwks_uri),
    ] {
        endpoint_url(name, value)?;
    }
    if let Some(end) = &meta.end_session_endpoint {
        endpoint_url("end_session_endpoint", end)?;
    }
    Ok(())
}

/// An endpoint must be https (plain http only on loopback): the secret and codes travel there.
fn endpoint_url(name: &str, value: &str) -> Result<Url, ProviderError> {
    let url = Url::parse(value)
        .map_err(|e| ProviderError::BadMetadata(format!("{name} {value:?} is not a URL ({e})")))?;
    if !is_secure_url(&url) {
        return Err(ProviderError::BadMetadata(format!(
            "{name} {value:?} is not an https URL"
        )));
    }
    Ok(url)
}

/// A connection's usable IdP: metadata and keys that passed every check.
#[derive(Clone)]
pub(crate) struct Provider {
    pub metadata: Metadata,
    /// How `iss` is judged: exactly the metadata issuer, or Entra's multi-tenant template.
    pub issuer: IssuerPolicy,
    pub keys: KeySet,
    pub client_auth: ClientAuth,
    pub allowed_algs: Vec<Algorithm>,
    pub fetched_at: Instant,
}

#[derive(Clone)]
enum State {
    /// The first fetch has not finished yet.
    Starting,
    Ready(Arc<Provider>),
    /// The last attempt failed and nothing good was ever fetched.
    Failed(ProviderError),
}

/// A connection: its configuration and live IdP state.
pub(crate) struct Connection {
    pub config: ConnectionConfig,
    state: RwLock<State>,
    /// Serialises refetches so concurrent callbacks with a new `kid` cause one JWKS fetch.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Minimum time between key refetches triggered by an unknown `kid` (Microsoft: at most one
    /// per 5 minutes), so junk `kid`s cannot make entrance hammer the IdP.
    key_refetch_cooldown: Duration,
    /// `kid`s still unknown after a refetch. They cause no further fetch until the next
    /// scheduled refresh, whatever the cooldown says. Bounded: cleared when full.
    junk_kids: std::sync::Mutex<HashSet<String>>,
    /// Multi-tenant connections only: each tenant's own key set, fetched from that tenant's
    /// JWKS (docs/reference/ENTRA.md §6: "discover keys from the tenant-specific endpoint and cache them per
    /// tenant, even for multi-tenant apps"). One slot per tenant, each with its own lock, so a
    /// slow tenant delays only its own users. Bounded: cleared when full.
    tenant_keys: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<TenantKeys>>>>,
    metrics: Arc<Metrics>,
}

const MAX_JUNK_KIDS: usize = 1024;

/// At most this many tenants' key sets are cached per connection (Microsoft's guidance: room
/// for 10–1000 keys); more tenants than that cost refetches, not memory.
const MAX_CACHED_TENANTS: usize = 1000;

/// One tenant's cached keys on a multi-tenant connection.
#[derive(Default)]
struct TenantKeys {
    /// The last good key set and when it was fetched.
    keys: Option<(KeySet, Instant)>,
    /// The last fetch attempt, good or not: fetches for one tenant are at most one per
    /// `key_refetch_cooldown`, whatever the tokens say.
    attempted_at: Option<Instant>,
}

/// Why a connection cannot take a login right now.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum NotReady {
    #[error("entrance is still fetching this connection's IdP metadata")]
    Starting,
    #[error(transparent)]
    Failed(ProviderError),
}

impl Connection {
    pub(crate) fn new(
        config: ConnectionConfig,
        key_refetch_cooldown: Duration,
        metrics: Arc<Metrics>,
    ) -> Connection {
        Connection {
            config,
            state: RwLock::new(State::Starting),
            refresh: tokio::sync::Mutex::new(None),
            key_refetch_cooldown,
            junk_kids: std::sync::Mutex::new(HashSet::new()),
            tenant_keys: std::sync::Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The same IdP under a reloaded configuration (new credentials, same metadata URL and
    /// client): starts with `previous`'s fetched metadata and keys, so a reload neither drops
    /// a ready connection back to "starting" nor refetches anything.
    pub(crate) fn carry_over(
        previous: &Connection,
        config: ConnectionConfig,
        key_refetch_cooldown: Duration,
    ) -> Connection {
        Connection {
            config,
            state: RwLock::new(previous.read_state().clone()),
            refresh: tokio::sync::Mutex::new(None),
            key_refetch_cooldown,
            junk_kids: std::sync::Mutex::new(HashSet::new()),
            tenant_keys: std::sync::Mutex::new(HashMap::new()),
            metrics: previous.metrics.clone(),
        }
    }

    pub(crate) fn provider(&self) -> Result<Arc<Provider>, NotReady> {
        match &*self.read_state() {
            State::Ready(p) => Ok(p.clone()),
            State::Starting => Err(NotReady::Starting),
            State::Failed(e) => Err(NotReady::Failed(e.clone())),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // `State` is replaced whole, never mutated in place (see `crate::sync`).
        sync::read(&self.state)
    }

    fn junk(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        sync::lock(&self.junk_kids)
    }

    fn observe_jwks(&self, took: Duration) {
        Metrics::observe(&self.metrics.jwks_fetch_duration, &self.config.id, took);
    }

    fn set_state(&self, state: State) {
        *sync::write(&self.state) = state;
    }

    /// Fetches metadata and keys. On failure the last good provider is kept (a refresh failing
    /// must not take a working connection down); only a connection that never worked is
    /// marked failed.
    pub(crate) async fn refresh(&self, http: &HttpClient) -> Result<Arc<Provider>, ProviderError> {
        let result = fetch_provider(http, &self.config, &|took| self.observe_jwks(took)).await;
        self.metrics
            .key_refreshes
            .get_or_create(&ResultLabels {
                connection: self.config.id.clone(),
                result: match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.code().to_owned(),
                },
            })
            .inc();
        match &result {
            Ok(p) => {
                self.set_state(State::Ready(p.clone()));
                self.junk().clear();
            }
            Err(e) => {
                let keep = matches!(&*self.read_state(), State::Ready(_));
                if !keep {
                    self.set_state(State::Failed(e.clone()));
                }
            }
        }
        result
    }

    /// Called when an ID token names a `kid` the cached keys lack: the IdP may have rotated its
    /// keys. Concurrent callers share one fetch; after a fetch, further fetches wait for the
    /// cooldown. Returns the provider to verify with (refreshed or not).
    pub(crate) async fn keys_for_unknown_kid(
        &self,
        http: &HttpClient,
        kid: &str,
    ) -> Result<Arc<Provider>, NotReady> {
        let mut last = self.refresh.lock().await;
        let current = self.provider()?;
        if current.keys.contains_kid(kid) {
            // Someone else refetched while we waited for the lock.
            return Ok(current);
        }
        if self.junk().contains(kid)
            || last.is_some_and(|t| t.elapsed() < self.key_refetch_cooldown)
        {
            return Ok(current);
        }
        *last = Some(Instant::now());
        tracing::info!(connection = %self.config.id, kid, "unknown signing key id; refetching the JWKS");
        let started = Instant::now();
        let fetched = fetch_keys(http, &current.metadata.jwks_uri).await;
        self.observe_jwks(started.elapsed());
        match fetched {
            Ok(keys) => {
                if !keys.contains_kid(kid) {
                    let mut junk = self.junk();
                    if junk.len() >= MAX_JUNK_KIDS {
                        junk.clear();
                    }
                    junk.insert(kid.to_owned());
                }
                let next = Arc::new(Provider {
                    keys,
                    fetched_at: Instant::now(),
                    ..(*current).clone()
                });
                self.set_state(State::Ready(next.clone()));
                Ok(next)
            }
            Err(e) => {
                tracing::warn!(connection = %self.config.id, error = %e, "JWKS refetch failed; keeping the cached keys");
                Ok(current)
            }
        }
    }

    /// The keys that may verify an ID token of tenant `tid` on a multi-tenant connection:
    /// that tenant's own JWKS (the connection's `jwks_uri` with `common`/`organizations`
    /// replaced by `tid`, its query — `?appid=` — kept), cached per tenant. A tenant's set is
    /// fetched on its first login, again once the connection's scheduled refresh is newer than
    /// it, and on demand when `kid` is not in it — each at most once per
    /// `key_refetch_cooldown`. A failed fetch keeps the last good set; a tenant never fetched
    /// successfully falls back to the connection's own keys (every key still passes the
    /// key-issuer check). The caller has checked that `tid` is a GUID and an allowed tenant.
    pub(crate) async fn tenant_keys(
        &self,
        http: &HttpClient,
        provider: &Provider,
        tid: &str,
        kid: Option<&str>,
    ) -> KeySet {
        let Some(url) = entra::tenant_jwks_uri(&provider.metadata.jwks_uri, tid) else {
            return provider.keys.clone();
        };
        let slot = self.tenant_slot(tid);
        let mut cached = slot.lock().await;
        let wanted = match &cached.keys {
            None => true,
            Some((keys, fetched_at)) => {
                *fetched_at < provider.fetched_at || kid.is_some_and(|k| !keys.contains_kid(k))
            }
        };
        let cooling = cached
            .attempted_at
            .is_some_and(|t| t.elapsed() < self.key_refetch_cooldown);
        if wanted && !cooling {
            cached.attempted_at = Some(Instant::now());
            tracing::info!(connection = %self.config.id, tid, url, "fetching the tenant's signing keys");
            let started = Instant::now();
            let fetched = fetch_keys(http, &url).await;
            self.observe_jwks(started.elapsed());
            match fetched {
                Ok(keys) => cached.keys = Some((keys, Instant::now())),
                Err(e) => tracing::warn!(
                    connection = %self.config.id, tid, error = %e,
                    "fetching the tenant's signing keys failed; using the last good keys"
                ),
            }
        }
        match &cached.keys {
            Some((keys, _)) => keys.clone(),
            None => provider.keys.clone(),
        }
    }

    /// The provider and the keys to verify a token with (an ID token at sign-in, an access
    /// token on `/auth`): on a multi-tenant connection an allowed tenant's own keys
    /// ([`Connection::tenant_keys`]); otherwise the connection's, refetched once when the
    /// token names an unknown `kid` ([`Connection::keys_for_unknown_kid`]). `kid` and `tid`
    /// come from the unverified token and only choose keys; verification decides.
    pub(crate) async fn keys_for_token(
        &self,
        http: &HttpClient,
        kid: Option<&str>,
        tid: Option<&str>,
    ) -> Result<(Arc<Provider>, KeySet), NotReady> {
        let mut provider = self.provider()?;
        let tenant = match &provider.issuer {
            IssuerPolicy::EntraTemplate { .. } => {
                tid.filter(|tid| entra::is_guid(tid) && self.config.allowed_tenants.allows(tid))
            }
            IssuerPolicy::Exact(_) => None,
        };
        let keys = match tenant {
            Some(tid) => self.tenant_keys(http, &provider, tid, kid).await,
            None => {
                if let Some(kid) = kid
                    && !provider.keys.contains_kid(kid)
                {
                    provider = self.keys_for_unknown_kid(http, kid).await?;
                }
                provider.keys.clone()
            }
        };
        Ok((provider, keys))
    }

    fn tenant_slot(&self, tid: &str) -> Arc<tokio::sync::Mutex<TenantKeys>> {
        let mut slots = sync::lock(&self.tenant_keys);
        let tid = tid.to_ascii_lowercase();
        if !slots.contains_key(&tid) && slots.len() >= MAX_CACHED_TENANTS {
            slots.clear();
        }
        slots.entry(tid).or_default().clone()
    }
}

#[tracing::instrument(name = "discovery", skip_all, fields(connection = %conn.id))]
async fn fetch_provider(
    http: &HttpClient,
    conn: &ConnectionConfig,
    jwks_took: &(dyn Fn(Duration) + Send + Sync),
) -> Result<Arc<Provider>, ProviderError> {
    let metadata: Metadata = http
        .get_json(conn.metadata_url.as_str())
        .await
        .map_err(|source| match source {
            FetchError::InvalidJson(e) => {
                ProviderError::BadMetadata(format!("not an OpenID metadata document ({e})"))
            }
            source => ProviderError::Metadata {
                url: conn.metadata_url.to_string(),
                source,
            },
        })?;
    let issuer = check_metadata(&metadata, conn)?;
    let started = Instant::now();
    let keys = fetch_keys(http, &metadata.jwks_uri).await;
    jwks_took(started.elapsed());
    let keys = keys?;
    let client_auth = conn
        .client_auth
        .unwrap_or_else(|| pick_client_auth(&metadata));
    let allowed_algs = verifier::allowed_algs(&metadata.id_token_signing_alg_values_supported);
    Ok(Arc::new(Provider {
        metadata,
        issuer,
        keys,
        client_auth,
        allowed_algs,
        fetched_at: Instant::now(),
    }))
}

/// `client_secret_post` unless the IdP lists only `client_secret_basic`. Post is preferred:
/// Entra secrets contain `~`, which Basic's form-encoding turns into `%7E`, and whether Entra
/// decodes it is unconfirmed.
pub(crate) fn pick_client_auth(meta: &Metadata) -> ClientAuth {
    match &meta.token_endpoint_auth_methods_supported {
        Some(methods)
            if !methods.iter().any(|m| m == "client_secret_post")
                && methods.iter().any(|m| m == "client_secret_basic") =>
        {
            ClientAuth::SecretBasic
        }
        // RFC 8414 §2: an absent list means client_secret_basic.
        None => ClientAuth::SecretBasic,
        _ => ClientAuth::SecretPost,
    }
}

#[tracing::instrument(name = "jwks", skip_all, fields(url = jwks_uri))]
pub(crate) async fn fetch_keys(http: &HttpClient, jwks_uri: &str) -> Result<KeySet, ProviderError> {
    let body: serde_json::Value = http
        .get_json(jwks_uri)
        .await
        .map_err(|source| match source {
            FetchError::InvalidJson(e) => ProviderError::BadJwks(format!("not JSON ({e})")),
            source => ProviderError::Jwks {
                url: jwks_uri.to_owned(),
                source,
            },
        })?;
    let bytes = serde_json::to_vec(&body).map_err(|e| ProviderError::BadJwks(e.to_string()))?;
    KeySet::from_jwks_json(&bytes).map_err(|e: JwksError| ProviderError::BadJwks(e.to_string()))
}

/// Keeps a connection usable for the life of the service: retries a connection that has
/// never worked with capped exponential backoff (an IdP down at startup becomes usable once
/// it is back, without a restart), then refreshes metadata and keys every `refresh_interval`
/// with ±10 % jitter so replicas do not refresh in lockstep. A failed refresh keeps the last
/// good metadata and keys.
pub(crate) async fn maintain(conn: Arc<Connection>, http: HttpClient, refresh_interval: Duration) {
    let mut delay = Duration::from_millis(500);
    // A connection carried over by a configuration reload is already ready: it waits for its
    // next scheduled refresh.
    while conn.provider().is_err() {
        match conn.refresh(&http).await {
            Ok(_) => {
                tracing::info!(connection = %conn.config.id, "connection ready");
                break;
            }
            Err(e) => {
                tracing::warn!(connection = %conn.config.id, reason = e.code(), error = %e, retry_in = ?delay, "connection not ready");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
    loop {
        tokio::time::sleep(jittered(refresh_interval)).await;
        match conn.refresh(&http).await {
            Ok(p) => {
                tracing::debug!(connection = %conn.config.id, keys = p.keys.len(), "metadata and keys refreshed")
            }
            Err(e) => {
                tracing::warn!(connection = %conn.config.id, reason = e.code(), error = %e, "refresh failed; keeping the last good metadata and keys")
            }
        }
    }
}

/// `base` ± 10 %. The jitter needs no cryptographic quality; a v4 UUID is a handy source of
/// OS randomness.
fn jittered(base: Duration) -> Duration {
    let r = (uuid::Uuid::new_v4().as_u128() % 2001) as f64 / 10_000.0 - 0.1;
    base.mul_f64(1.0 + r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(metadata_url: &str) -> ConnectionConfig {
        ConnectionConfig::for_tests(metadata_url)
    }

    fn multi_tenant_conn(authority: &str) -> ConnectionConfig {
        let url = format!(
            "https://login.microsoftonline.com/{authority}/v2.0/.well-known/openid-configuration"
        );
        conn(&url)
    }

    fn multi_tenant_metadata(authority: &str) -> Metadata {
        let doc = match authority {
            "common" => include_str!("../../tests/fixtures/entra/openid-configuration.common.json"),
            _ => include_str!("../../tests/fixtures/entra/openid-configuration.organizations.json"),
        };
        serde_json::from_str(doc).expect("fixture parses")
    }

    #[test]
    fn common_and_organizations_metadata_give_the_template_policy() {
        for authority in ["common", "organizations"] {
            let policy = check_metadata(
                &multi_tenant_metadata(authority),
                &multi_tenant_conn(authority),
            )
            .expect("templated issuer accepted");
            assert_eq!(
                policy,
                IssuerPolicy::EntraTemplate {
                    template: "https://login.microsoftonline.com/{tenantid}/v2.0".into()
                }
            );
        }
    }

    #[test]
    fn a_templated_issuer_on_a_tenant_url_is_still_a_mismatch() {
        let c = conn(
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration",
        );
        let err = check_metadata(&multi_tenant_metadata("common"), &c).expect_err("mismatch");
        assert_eq!(err.code(), "issuer_mismatch");
        // And a multi-tenant URL whose metadata names another host's template is refused too.
        let mut meta = multi_tenant_metadata("common");
        meta.issuer = "https://evil.example/{tenantid}/v2.0".into();
        let err = check_metadata(&meta, &multi_tenant_conn("common")).expect_err("mismatch");
        assert!(
            err.to_string()
                .contains("https://login.microsoftonline.com/{tenantid}/v2.0"),
            "{err}"
        );
    }

    fn fixture_metadata() -> Metadata {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/entra/openid-configuration.tenant.json"
        ))
        .expect("fixture parses")
    }

    #[test]
    fn entra_tenant_metadata_passes_and_prefers_post() {
        let meta = fixture_metadata();
        let c = conn(
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration",
        );
        assert_eq!(
            check_metadata(&meta, &c).expect("consistent"),
            IssuerPolicy::Exact(meta.issuer.clone())
        );
        assert_eq!(pick_client_auth(&meta), ClientAuth::SecretPost);
    }

    #[test]
    fn domain_form_url_gets_an_issuer_mismatch_naming_both_values() {
        let meta = fixture_metadata();
        let c = conn(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration",
        );
        let err = check_metadata(&meta, &c).expect_err("mismatch");
        let msg = err.to_string();
        assert!(msg.contains("contoso.onmicrosoft.com"), "{msg}");
        assert!(
            msg.contains("aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0"),
            "{msg}"
        );
        assert!(msg.contains("GUID"), "{msg}");
        assert_eq!(err.code(), "issuer_mismatch");
    }

    #[test]
    fn plain_http_endpoints_off_loopback_are_refused() {
        let mut meta = fixture_metadata();
        meta.token_endpoint = "http://login.microsoftonline.com/t/oauth2/v2.0/token".into();
        let c = conn(
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration",
        );
        assert!(matches!(
            check_metadata(&meta, &c),
            Err(ProviderError::BadMetadata(_))
        ));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(3600));
            assert!(
                d >= Duration::from_secs(3240) && d <= Duration::from_secs(3960),
                "{d:?}"
            );
        }
    }

    #[test]
    fn basic_only_idp_gets_basic() {
        let mut meta = fixture_metadata();
        meta.token_endpoint_auth_methods_supported = Some(vec!["client_secret_basic".into()]);
        assert_eq!(pick_client_auth(&meta), ClientAuth::SecretBasic);
    }
}
