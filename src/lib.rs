//! entrance: the OpenID Connect login callback endpoint for Microsoft Entra ID and any OIDC
//! provider.
//!
//! Crate map:
//! - [`config`]: raw settings → validated [`config::Config`].
//! - [`doctor`]: `entrance check`, the setup doctor (one judged line per check, with the fix).
//! - [`app`]: [`app::Application`] — bind, build, serve until shutdown.
//! - [`http`]: router, handlers (`/login`, `/login/callback`, `/me`, `/healthz`, `/readyz`),
//!   middleware.
//! - [`error`]: the one HTTP error type, its statuses and explanations.
//! - [`pages`]: HTML pages and the Content-Security-Policy.
//! - [`session`]: pending logins and the signed-in identity kept in a session.
//! - [`store`]: where sessions live (memory, SQLite, Redis), timeouts, readiness probe.
//! - [`identity`]: the stable user key and claims kept after sign-in.
//! - [`provider`]: per-connection IdP metadata and keys, readiness, refetching.
//! - [`http_client`]: the one outbound HTTP client (timeouts, size limit, no redirects).
//! - [`token`]: the code exchange at the token endpoint.
//! - [`userinfo`]: the optional userinfo call at sign-in and its `sub` check.
//! - [`certificate`]: certificate credentials and the RFC 7523 client assertion they sign.
//! - [`jwks`], [`verifier`]: signing keys and ID-token validation (OIDC Core §3.1.3.7).
//! - [`return_to`]: open-redirect-proof post-login destinations.
//! - [`rotation`]: live reload of connections and secrets (SIGHUP), secret-expiry warnings.
//! - [`entra`]: Entra-specific knowledge (hosts, GUIDs, AADSTS table).
//! - [`metrics`]: Prometheus metrics (one registry per application).
//! - [`traces`]: the last failed logins per connection (`entrance traces`, `/admin/traces`).
//! - [`telemetry`]: log setup.

pub mod app;
pub mod certificate;
pub mod config;
pub mod doctor;
pub mod entra;
pub mod error;
pub mod http;
pub mod http_client;
pub mod identity;
pub mod jwks;
pub mod metrics;
pub mod pages;
pub mod provider;
pub mod return_to;
pub mod rotation;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod traces;
pub mod userinfo;
pub mod verifier;
