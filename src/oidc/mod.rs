//! Everything that speaks OpenID Connect to an IdP: discovery and keys per connection
//! ([`provider`], [`jwks`]), ID-token validation ([`verifier`], OpenID Connect Core §3.1.3.7),
//! the token endpoint ([`token`]), userinfo ([`userinfo`]), the user derived from the claims
//! ([`identity`]), and the one outbound HTTP client ([`http_client`]).

pub mod http_client;
pub mod identity;
pub mod jwks;
pub mod provider;
pub mod token;
pub mod userinfo;
pub mod verifier;
