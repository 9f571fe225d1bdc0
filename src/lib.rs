//! entrance: the OpenID Connect login callback endpoint for Microsoft Entra ID and any OIDC
//! provider.
//!
//! Crate map, from the top floor down; a module imports only from floors below its own
//! (`tests/api/layers.rs` holds the code to this map; docs/ARCHITECTURE.md walks a login and an
//! `/auth` request through it):
//!
//! 1. `app` — [`Application`]: bind, build state, serve until shutdown; [`cli`]: the
//!    `check` and `traces` subcommands.
//! 2. `http` — the only code that knows status codes, cookies and pages: the router, one
//!    module per endpoint, the extractors that guard handlers, the one error type
//!    (`http::error`) and the HTML pages (`http::pages`).
//! 3. The domain: `session` (pending logins and the signed-in user, and the stores they live
//!    in: memory, SQLite, Redis), [`doctor`] (`entrance check`), `rotation` (reloads and
//!    secret-expiry warnings), `traces` (the last failed logins per connection).
//! 4. `oidc` — the IdP protocol: discovery and keys per connection, the ID-token verifier
//!    (OpenID Connect Core §3.1.3.7) and the access-token verifier for bearer tokens, the
//!    token endpoint, userinfo, the identity derived from the claims, and the one outbound
//!    HTTP client.
//! 5. `metrics` — Prometheus metrics, one registry per application.
//! 6. `config` — raw settings → the validated [`Config`]; plain data, imports nothing above.
//! 7. Leaves that import nothing of entrance: `entra` (Entra facts: hosts, GUIDs, the AADSTS
//!    table), `certificate` (certificate credentials and RFC 7523 client assertions),
//!    `expiry` (when a credential counts as expiring), `return_to`, `loopback`, `clock`,
//!    `sync`, `telemetry`.
//!
//! Everything is `pub(crate)` unless a binary, a test, the fuzz target or a bench example
//! needs it; those items are re-exported here.
#![warn(unreachable_pub)]

mod app;
mod certificate;
pub mod cli;
mod clock;
mod config;
pub mod doctor;
mod entra;
mod expiry;
mod federated;
mod http;
mod loopback;
mod metrics;
mod oidc;
mod return_to;
mod rotation;
mod session;
mod sync;
mod telemetry;
mod traces;

pub use app::{Application, ReloadHandle};
pub use certificate::{AssertionAlg, CLIENT_ASSERTION_TYPE, CertificateCredential};
pub use clock::Clock;
pub use config::{ClientCredential, Config, ConfigError, DEMO_TOML, DataKey};
pub use entra::aadsts;
pub use federated::{AssertionSource, FederatedAssertion};
pub use http::pages::escape as escape_html;
pub use oidc::http_client::HttpClient;
pub use session::store::SessionRecords;
pub use telemetry::{
    OtlpSettings, Telemetry, TelemetryError, init as init_telemetry,
    init_with_default as init_logging, resolve as resolve_otlp, startup_subscriber,
};

/// The ID-token verifier on its own, for the fuzz target (`fuzz/fuzz_targets/id_token.rs`).
pub mod id_token {
    pub use crate::config::TenantAllowList;
    pub use crate::oidc::jwks::KeySet;
    pub use crate::oidc::verifier::{
        Expectations, IssuerPolicy, allowed_algs, peek_kid, peek_tid, verify_id_token,
    };
}
