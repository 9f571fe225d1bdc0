//! The mock IdP: an Entra-ID-shaped OpenID provider for tests and the `mock-idp` binary
//! (public API, shared state and server lifecycle; endpoints live in `http`).
//!
//! It serves a tenant-style v2.0 authority under `http://127.0.0.1:PORT/{tenant}/…`:
//! discovery, JWKS, authorize (no UI: the configured user is signed in at once, unless
//! [`Behaviour::continue_page`] asks for one Continue button first), token,
//! logout, and a `/_mock/…` control API for tests that drive a separately running process.
//! The multi-tenant authorities `common` and `organizations` are served too, with Entra's
//! templated issuer `…/{tenantid}/v2.0` in their metadata (as in
//! `tests/fixtures/entra/openid-configuration.common.json`); users signing in there get the
//! tenant [`Behaviour::user_tenant`] (default: the mock's own).
//! Every reply tries to look like Entra's (see `tests/fixtures/entra/`); [`Behaviour`]
//! switches in deliberate misbehaviour.
//!
//! This is a TEST TOOL: it authenticates nobody and its keys live in memory only.

mod access;
mod certificates;
mod entra;
mod federated;
mod http;
mod keys;
#[cfg(test)]
mod tests;
mod x509;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use certificates::RegisteredCertificate;
use keys::KeyPair;

pub use access::{AccessToken, TokenVersion};
pub use certificates::TestCertificate;
pub use federated::{FederatedCredential, FederatedIssuer, TOKEN_EXCHANGE_AUDIENCE};
pub use keys::KeyError;
pub use x509::CertificateError;

pub const DEFAULT_TENANT_ID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
pub const DEFAULT_CLIENT_ID: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";
/// Fake, Entra-shaped (gitleaks test data); never a real credential.
pub const DEFAULT_CLIENT_SECRET: &str = "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR";

/// How long an authorization code can be redeemed (Entra: about 10 minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct MockIdpSettings {
    /// Default 127.0.0.1:0 (an ephemeral loopback port).
    pub listen: SocketAddr,
    pub tenant_id: String,
    pub client_id: String,
    /// Any of these authenticates the client (Entra allows several secrets for rotation).
    pub client_secrets: Vec<String>,
    /// Exact-match registered redirect URIs; may be changed later via `set_redirect_uris`.
    pub redirect_uris: Vec<String>,
    pub user: MockUser,
    /// PEM certificates uploaded for `private_key_jwt` (Certificates & secrets →
    /// Certificates); a client assertion must be signed by one of their keys. More can be
    /// added later with [`MockIdp::register_certificate`].
    pub client_certificates: Vec<String>,
    /// The origin browsers and clients reach the mock at, when it is not `http://{listen}`:
    /// in a container listening on `0.0.0.0:9090` and published on the host as
    /// `http://127.0.0.1:9090` (docker-compose.yml). The issuer and every endpoint use it.
    pub public_url: Option<String>,
}

impl Default for MockIdpSettings {
    fn default() -> Self {
        MockIdpSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secrets: vec![DEFAULT_CLIENT_SECRET.to_owned()],
            redirect_uris: Vec::new(),
            user: MockUser::default(),
            client_certificates: Vec::new(),
            public_url: None,
        }
    }
}

/// The user the mock signs in (no login UI).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MockUser {
    pub sub: String,
    pub oid: String,
    pub name: String,
    pub email: Option<String>,
    pub preferred_username: String,
    pub login_hint: String,
    pub sid: String,
    /// Emitted as the `email_verified` claim only when Some (Entra v2.0 does not send it by
    /// default; some RPs want to test their handling of it).
    pub email_verified: Option<bool>,
    /// Emitted only when non-empty.
    pub groups: Vec<String>,
    /// Emitted only when non-empty.
    pub roles: Vec<String>,
}

impl Default for MockUser {
    /// Ada Lovelace, as in `tests/fixtures/entra/id_token.claims.json`.
    fn default() -> Self {
        MockUser {
            sub: "Xk3t0fakeFAKEpairwiseSubjectValueForThisApp01".to_owned(),
            oid: "00000000-0000-0000-0000-00000000a0a0".to_owned(),
            name: "Ada Lovelace".to_owned(),
            email: Some("ada.lovelace@contoso.example".to_owned()),
            preferred_username: "ada.lovelace@contoso.example".to_owned(),
            login_hint: "O.CiQ0MDAwMDAwMC1mYWtlLWZha2UtZmFrZS0wMDAwMDAwMDAwMDE".to_owned(),
            sid: "00000000-fake-fake-fake-00000000511d".to_owned(),
            email_verified: None,
            groups: vec![
                "11111111-0000-0000-0000-00000000000a".to_owned(),
                "11111111-0000-0000-0000-00000000000b".to_owned(),
            ],
            roles: Vec::new(),
        }
    }
}

/// What a token request carried that tests look at: the W3C `traceparent` header (an RP
/// passing its trace on), the PKCE `code_verifier` (to search logs and spans for it) and how
/// the client authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenCall {
    pub grant_type: Option<String>,
    pub traceparent: Option<String>,
    pub code_verifier: Option<String>,
    /// `client_assertion` (a certificate's or a federated JWT), `client_secret` (in the body
    /// or HTTP Basic), or `None` when it carried neither.
    pub client_auth: Option<&'static str>,
}

/// Requests seen per endpoint (faulted requests count too).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub metadata: u64,
    pub jwks: u64,
    pub authorize: u64,
    pub token: u64,
    #[serde(default)]
    pub userinfo: u64,
    /// Refresh-token grants that reached the token endpoint (past client authentication).
    #[serde(default)]
    pub refresh: u64,
    /// Microsoft Graph `transitiveMemberOf` calls (every page, throttled and refused ones too).
    #[serde(default)]
    pub graph: u64,
    /// Of those, the app-only ones (`/users/{oid}/…` with a client-credentials token).
    #[serde(default)]
    pub graph_app_only: u64,
}

/// Switchable misbehaviour. Default = behave like Entra.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Override/add ID-token claims.
    pub claims_set: serde_json::Map<String, serde_json::Value>,
    /// Drop these ID-token claims.
    pub claims_remove: Vec<String>,
    /// Override/add JWT header members (e.g. "crit", "kid", "alg"). Does not change the
    /// algorithm actually used to sign; that is `signing`.
    pub header_set: serde_json::Map<String, serde_json::Value>,
    /// Drop these JWT header members, e.g. "kid".
    pub header_remove: Vec<String>,
    pub signing: Signing,
    /// Token response without id_token.
    pub omit_id_token: bool,
    /// Authorize answers with an error redirect (`error`, `error_description`, `state`, like
    /// Entra) instead of a code.
    pub authorize_error: Option<AuthorizeError>,
    /// Token endpoint answers this status + JSON body instead of tokens (e.g. Entra's
    /// invalid_client body).
    pub token_error: Option<TokenError>,
    /// Publish this issuer in the metadata instead of the real one.
    pub metadata_issuer: Option<String>,
    pub metadata_fault: Fault,
    pub jwks_fault: Fault,
    pub token_fault: Fault,
    /// Serve this document as the JWKS instead of the published keys (e.g. one with no
    /// usable signing key).
    pub jwks_override: Option<serde_json::Value>,
    /// Client secrets that authenticate as expired (AADSTS7000222, `invalid_client`), as
    /// Entra answers for a secret past its end date.
    pub expired_client_secrets: Vec<String>,
    /// The home tenant (`tid`, and the tenant in `iss`) of the user signing in through the
    /// `common` or `organizations` authority; `None`: the mock's own tenant. Sign-ins through
    /// the tenant authority always get the mock's tenant.
    pub user_tenant: Option<String>,
    /// Publish this as every JWKS key's `issuer` member instead of the templated
    /// `{base}/{tenantid}/v2.0` (e.g. a literal issuer naming another tenant).
    pub key_issuer: Option<String>,
    /// Judge registered client certificates' validity periods as if this many seconds had
    /// passed: a certificate that expires while the relying party keeps running, without a
    /// test that sleeps. Assertion claims (`exp`, `nbf`) still use the real clock.
    pub certificate_clock_offset_secs: i64,
    /// Override/add claims of the userinfo answer (e.g. another `sub`).
    pub userinfo_claims_set: serde_json::Map<String, serde_json::Value>,
    pub userinfo_fault: Fault,
    /// Authorize first shows a page with a Continue button (a plain form, no script) and
    /// signs in only when it is pressed, as a user who lingers on Entra's sign-in page would;
    /// `false`: sign in at once, without UI.
    pub continue_page: bool,
    /// The app roles (`roles`) of app-only tokens the client-credentials grant issues for an
    /// `api://…/.default` scope.
    pub app_roles: Vec<String>,
    /// Seconds until `exp` of the API access tokens the code and refresh grants issue for a
    /// resource scope (`api://…`); `None`: 3599, as Entra's default.
    pub access_token_lifetime_secs: Option<i64>,
    /// The refresh-token grant answers this status + JSON body instead of tokens (e.g.
    /// `interaction_required` AADSTS50076, `temporarily_unavailable`).
    pub refresh_error: Option<TokenError>,
    /// APIs (`api://…` resources) with no service principal in the tenant: asking a token for
    /// one answers `invalid_resource` AADSTS500011, as Entra does for an API the customer's
    /// tenant never consented to.
    pub missing_apis: Vec<String>,
    /// The user is in this many groups ([`overage_group`] names the i-th): their ID token
    /// carries them as `groups` up to Entra's JWT limit of 200, and beyond it the overage
    /// markers `_claim_names`/`_claim_sources` instead (docs/reference/ENTRA-2.md §4); Graph's
    /// `transitiveMemberOf` lists them all. `None`: [`MockUser::groups`].
    pub group_count: Option<usize>,
    /// Groups per Graph page; `None`: 100, Graph's default.
    pub graph_page_size: Option<usize>,
    /// Graph answers the next calls 429 with this `Retry-After`.
    pub graph_throttle: Option<GraphThrottle>,
    /// Graph answers 403 `Authorization_RequestDenied`, as for an app without the permission
    /// or its consent.
    pub graph_forbidden: bool,
    pub graph_fault: Fault,
    /// Graph's `@odata.nextLink` points at this origin instead of the mock's own (a link a
    /// relying party must not follow with the user's token).
    pub graph_next_link_origin: Option<String>,
}

/// Graph throttling (docs/reference/ENTRA-2.md §5): `times` calls answered 429 with
/// `Retry-After: {retry_after}` (seconds, decimals allowed) before Graph answers again.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GraphThrottle {
    pub times: u32,
    pub retry_after: String,
}

/// Entra's limit of groups in a JWT; beyond it the token carries the overage markers.
pub const JWT_GROUPS_LIMIT: usize = 200;

/// The object ID of the `i`-th (1-based) group of a user with [`Behaviour::group_count`].
pub fn overage_group(i: usize) -> String {
    format!("22222222-0000-4000-8000-{i:012}")
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub enum Signing {
    /// RS256 with the current key.
    #[default]
    Normal,
    /// Header alg "none", empty signature.
    AlgNone,
    /// HS256 with this shared secret (an attacker using the client secret / public key bytes).
    Hs256(String),
    /// RS256 with a fresh key that is not in the JWKS, but header kid = a published kid.
    UnpublishedKey,
    /// Valid token with the signature's bytes altered.
    CorruptSignature,
    /// RS384 with the current key (alg not advertised).
    Rs384,
    /// RS256 with a key of the named tenant's own (`None`: the signing-in user's tenant),
    /// published only in that tenant's JWKS (`/{tenant}/discovery/v2.0/keys`), not in
    /// `common`'s or `organizations`' — a tenant that has signing keys of its own (Microsoft's
    /// signing-key rollover guidance: discover keys per tenant,
    /// <https://learn.microsoft.com/entra/identity-platform/signing-key-rollover>).
    TenantKey(Option<String>),
    /// RS256 with the app's custom signing key, published only in the JWKS fetched with
    /// `?appid=<client_id>` (an app with claims mapping, see
    /// <https://learn.microsoft.com/entra/identity-platform/signing-key-rollover>;
    /// without it Entra's relying parties fail with an unknown `kid`, AADSTS50146's territory).
    AppKey,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AuthorizeError {
    pub error: String,
    pub error_description: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenError {
    pub status: u16,
    pub body: serde_json::Value,
}

impl TokenError {
    /// An Entra-shaped refusal: `AADSTS{code}: {text}` with Entra's body members; HTTP 401 for
    /// `invalid_client`, 400 otherwise.
    pub fn entra(error: &str, code: u32, text: &str) -> TokenError {
        TokenError {
            status: if error == "invalid_client" { 401 } else { 400 },
            body: entra::token_error_body(error, code, text),
        }
    }
}

/// Transport-level faults for an endpoint (for "the IdP misbehaves" tests).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    #[default]
    None,
    /// Answer this status with a short body.
    Status(u16),
    /// Accept the request and never answer (until shutdown).
    Stall,
    /// Answer normally, but only after this many milliseconds (a slow IdP).
    Delay(u64),
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// 200 JSON-ish body of this many bytes.
    Oversized(usize),
    /// 302 to this URL.
    Redirect(String),
    /// 200 valid JSON but Content-Type text/html.
    WrongContentType,
}

/// What /authorize remembered about an issued code, checked at /token.
#[derive(Debug, Clone)]
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    /// (challenge, method); method is "S256" or "plain".
    pkce: Option<(String, String)>,
    scope: String,
    created_at: Instant,
    /// The authority path segment of /authorize: the tenant ID, `common` or `organizations`.
    authority: String,
}

/// Mutable state behind one lock. Held only for short, non-blocking sections (never across
/// an await or key generation).
#[derive(Debug)]
struct Inner {
    redirect_uris: Vec<String>,
    behaviour: Behaviour,
    counters: Counters,
    /// Key that signs new ID tokens.
    current: Arc<KeyPair>,
    /// Keys in the JWKS, in publication order.
    published: Vec<Arc<KeyPair>>,
    /// Key for `Signing::UnpublishedKey`, made on first use and never published.
    decoy: Option<Arc<KeyPair>>,
    /// Keys of tenants' own (`Signing::TenantKey`), by tenant ID, each published only in its
    /// tenant's JWKS.
    tenant_keys: HashMap<String, Arc<KeyPair>>,
    /// The app's custom signing key (`Signing::AppKey`), published only with `?appid=`.
    app_key: Option<Arc<KeyPair>>,
    /// JWKS requests by the authority segment of their path (tenant ID, `common`, …).
    jwks_by_authority: HashMap<String, u64>,
    /// Token requests by the authority segment of their path.
    token_by_authority: HashMap<String, u64>,
    /// The userinfo answer for each access token issued.
    userinfo: HashMap<String, serde_json::Value>,
    codes: HashMap<String, CodeRecord>,
    /// Every token issued (access and ID tokens), so tests can check none of them leaks.
    issued: Vec<String>,
    /// Codes already redeemed (or attempted), to tell AADSTS54005 from an unknown code.
    spent_codes: HashSet<String>,
    /// Every token request, in order (`MockIdp::token_calls`).
    token_calls: Vec<TokenCall>,
    /// Client certificates registered for `private_key_jwt`.
    client_certificates: Vec<RegisteredCertificate>,
    /// External issuers whose tokens the mock can check, and the app's federated identity
    /// credentials (workload identity federation).
    federated_issuers: Vec<federated::FederatedIssuer>,
    federated_credentials: Vec<federated::FederatedCredential>,
    /// `jti`s of accepted client assertions with their `exp`, to refuse a replay (RFC 7523
    /// §3 item 7); entries past their `exp` are dropped.
    seen_assertions: HashMap<String, i64>,
    /// [`CODE_LIFETIME`]; a field only so unit tests can expire codes without waiting
    /// (backdating an `Instant` can underflow on a freshly booted machine).
    code_lifetime: Duration,
    /// Refresh tokens that can still be redeemed, each spent by its redemption: the grant
    /// answers a new one (rotation) and the old one no longer works, as the strictest IdPs
    /// do. (Entra itself keeps an old one usable; a relying party that stores the new one,
    /// as it should, cannot tell.)
    refresh_tokens: HashMap<String, RefreshRecord>,
    /// Refresh tokens revoked by [`MockIdp::revoke_refresh_tokens`]: AADSTS50173.
    revoked_refresh_tokens: HashSet<String>,
    /// App-only Graph tokens the client-credentials grant issued (`mock-app-token.*`).
    graph_app_tokens: HashSet<String>,
    /// 429s Graph has answered under [`Behaviour::graph_throttle`].
    graph_throttled: u32,
}

/// [`MockIdp::revoke_refresh_tokens`], also `POST /_mock/revoke-refresh-tokens`.
fn revoke_refresh_tokens(s: &Shared) {
    let mut inner = s.lock();
    let live: Vec<String> = inner.refresh_tokens.drain().map(|(t, _)| t).collect();
    inner.revoked_refresh_tokens.extend(live);
}

/// What a refresh token was issued for.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub(crate) client_id: String,
    /// The scopes of the original request.
    pub(crate) scope: String,
}

/// State shared by the handlers and the [`MockIdp`] handle.
#[derive(Debug)]
struct Shared {
    base_url: String,
    tenant_id: String,
    client_id: String,
    client_secrets: Vec<String>,
    user: MockUser,
    inner: Mutex<Inner>,
    /// Flips to true on shutdown; stalled requests wait on it so they end with the server.
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.base_url, self.tenant_id)
    }

    /// Whether `authority` (the first path segment) is one this mock serves.
    fn serves(&self, authority: &str) -> bool {
        authority == self.tenant_id || is_multi_tenant(authority)
    }

    fn token_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, self.tenant_id)
    }

    /// Locks the state. A poisoned lock only means a handler panicked mid-update; the data
    /// is still usable for a test IdP, so carry on rather than take every later request down.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running mock IdP. Dropping it stops the server.
pub struct MockIdp {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockIdp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockIdp {
    /// Binds the listener, generates the first signing key and starts serving.
    pub async fn start(settings: MockIdpSettings) -> std::io::Result<MockIdp> {
        let client_certificates = settings
            .client_certificates
            .iter()
            .map(|pem| RegisteredCertificate::from_pem(pem))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let key = generate_key_blocking().await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            base_url: settings
                .public_url
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("http://{addr}")),
            tenant_id: settings.tenant_id,
            client_id: settings.client_id,
            client_secrets: settings.client_secrets,
            user: settings.user,
            inner: Mutex::new(Inner {
                redirect_uris: settings.redirect_uris,
                behaviour: Behaviour::default(),
                counters: Counters::default(),
                current: Arc::clone(&key),
                published: vec![key],
                decoy: None,
                tenant_keys: HashMap::new(),
                app_key: None,
                jwks_by_authority: HashMap::new(),
                token_by_authority: HashMap::new(),
                userinfo: HashMap::new(),
                codes: HashMap::new(),
                issued: Vec::new(),
                spent_codes: HashSet::new(),
                token_calls: Vec::new(),
                client_certificates,
                seen_assertions: HashMap::new(),
                code_lifetime: CODE_LIFETIME,
                refresh_tokens: HashMap::new(),
                federated_issuers: Vec::new(),
                federated_credentials: Vec::new(),
                revoked_refresh_tokens: HashSet::new(),
                graph_app_tokens: HashSet::new(),
                graph_throttled: 0,
            }),
            shutdown: shutdown_rx.clone(),
        });
        let app = http::router(Arc::clone(&shared));
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // Err means the sender is gone, which is also a reason to stop.
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "mock IdP server stopped with an error");
            }
        });
        tracing::info!(issuer = %shared.issuer(), "mock IdP (test tool) listening");
        Ok(MockIdp {
            shared,
            addr,
            shutdown_tx,
            task: Some(task),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "http://127.0.0.1:PORT"
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// "{base}/{tenant}/v2.0"
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    /// "{base}/{tenant}/v2.0/.well-known/openid-configuration"
    pub fn metadata_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// "{base}/{authority}/v2.0/.well-known/openid-configuration", e.g. for `common` or
    /// `organizations` (multi-tenant metadata with the templated issuer).
    pub fn metadata_url_for(&self, authority: &str) -> String {
        format!(
            "{}/{authority}/v2.0/.well-known/openid-configuration",
            self.shared.base_url
        )
    }

    /// The tenant ID of the mock's own tenant.
    pub fn tenant_id(&self) -> String {
        self.shared.tenant_id.clone()
    }

    /// "{base}/{tenant}/oauth2/v2.0/token": the `aud` a client assertion must carry.
    pub fn token_endpoint(&self) -> String {
        self.shared.token_endpoint()
    }

    /// An external token issuer (`iss` = `issuer`) whose tokens this IdP can verify, as Entra
    /// verifies a Kubernetes cluster's or a CI system's by their published keys.
    pub async fn federated_issuer(&self, issuer: &str) -> std::io::Result<FederatedIssuer> {
        let key = generate_key_blocking().await?;
        let issuer = FederatedIssuer::new(issuer, key);
        self.shared.lock().federated_issuers.push(issuer.clone());
        Ok(issuer)
    }

    /// Adds a federated identity credential to the app registration.
    pub fn add_federated_credential(&self, credential: FederatedCredential) {
        self.shared.lock().federated_credentials.push(credential);
    }

    /// Uploads a client certificate (PEM, public part) for `private_key_jwt`.
    pub fn register_certificate(&self, pem: &str) -> Result<(), CertificateError> {
        let cert = RegisteredCertificate::from_pem(pem)?;
        self.shared.lock().client_certificates.push(cert);
        Ok(())
    }

    pub fn set_redirect_uris(&self, uris: Vec<String>) {
        self.shared.lock().redirect_uris = uris;
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        // Make extra keys now, on the caller's time: generated inside a token request they
        // can take long enough on a loaded machine to time the relying party out.
        match &b.signing {
            Signing::UnpublishedKey => {
                if self.shared.lock().decoy.is_none()
                    && let Ok(key) = KeyPair::generate()
                {
                    self.shared.lock().decoy = Some(Arc::new(key));
                }
            }
            Signing::TenantKey(tenant) => {
                let tenant = tenant
                    .clone()
                    .or_else(|| b.user_tenant.clone())
                    .unwrap_or_else(|| self.shared.tenant_id.clone());
                if !self.shared.lock().tenant_keys.contains_key(&tenant)
                    && let Ok(key) = KeyPair::generate()
                {
                    self.shared
                        .lock()
                        .tenant_keys
                        .entry(tenant)
                        .or_insert_with(|| Arc::new(key));
                }
            }
            Signing::AppKey => {
                if self.shared.lock().app_key.is_none()
                    && let Ok(key) = KeyPair::generate()
                {
                    self.shared.lock().app_key = Some(Arc::new(key));
                }
            }
            _ => {}
        }
        let mut inner = self.shared.lock();
        inner.behaviour = b;
        inner.graph_throttled = 0;
    }

    pub fn counters(&self) -> Counters {
        self.shared.lock().counters
    }

    /// JWKS requests for one authority (`/{authority}/discovery/v2.0/keys`): a tenant ID,
    /// `common` or `organizations`.
    pub fn jwks_requests(&self, authority: &str) -> u64 {
        self.shared
            .lock()
            .jwks_by_authority
            .get(authority)
            .copied()
            .unwrap_or(0)
    }

    /// Token requests for one authority (`/{authority}/oauth2/v2.0/token`): a tenant ID,
    /// `common` or `organizations`.
    pub fn token_requests(&self, authority: &str) -> u64 {
        self.shared
            .lock()
            .token_by_authority
            .get(authority)
            .copied()
            .unwrap_or(0)
    }

    /// Every token request so far, in order: its grant type, `traceparent` and PKCE verifier.
    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.shared.lock().token_calls.clone()
    }

    /// Revokes every refresh token issued so far (the user changed their password, an admin
    /// revoked their sessions): redeeming one answers `invalid_grant` AADSTS50173.
    pub fn revoke_refresh_tokens(&self) {
        revoke_refresh_tokens(&self.shared);
    }

    /// Every access, ID and refresh token this IdP has issued, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.clone()
    }

    /// Key rotation: generate a new RSA key; sign new ID tokens with it from now on; `publish`
    /// says whether it appears in the JWKS (tests check that the RP refetches on an unknown
    /// kid). Returns the new kid. Old keys stay published, as Entra keeps several.
    ///
    /// Generates the key on the calling thread (synchronous API); that takes a moment.
    pub fn rotate_signing_key(&self, publish: bool) -> String {
        // Key generation only fails if the OS RNG fails; a test IdP cannot go on without keys.
        let key = Arc::new(KeyPair::generate().expect("mock IdP: RSA key generation failed"));
        install_key(&self.shared, key, publish)
    }

    /// Publish the current signing key in the JWKS (after rotate_signing_key(false)).
    pub fn publish_signing_key(&self) {
        publish_current(&self.shared);
    }

    /// Stops the server (also on Drop: the server task must not outlive the MockIdp).
    /// Stalled requests are released; lingering connections are cut after a short grace.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take() {
            // Closes the listener now; open connections see the shutdown signal and end.
            task.abort();
        }
    }
}

/// Entra's multi-tenant authorities (the `{tenant}` values of
/// <https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc>; `consumers` is not
/// served).
fn is_multi_tenant(authority: &str) -> bool {
    matches!(authority, "common" | "organizations")
}

/// Generates a key on the blocking pool so the runtime keeps serving meanwhile.
async fn generate_key_blocking() -> std::io::Result<Arc<KeyPair>> {
    tokio::task::spawn_blocking(KeyPair::generate)
        .await
        .map_err(std::io::Error::other)?
        .map(Arc::new)
        .map_err(std::io::Error::other)
}

/// Makes `key` the signing key (and publishes it if asked); returns its kid.
fn install_key(shared: &Shared, key: Arc<KeyPair>, publish: bool) -> String {
    let kid = key.kid.clone();
    let mut inner = shared.lock();
    if publish {
        inner.published.push(Arc::clone(&key));
    }
    inner.current = key;
    kid
}

fn publish_current(shared: &Shared) {
    let mut inner = shared.lock();
    let current = Arc::clone(&inner.current);
    if !inner.published.iter().any(|k| k.kid == current.kid) {
        inner.published.push(current);
    }
}
