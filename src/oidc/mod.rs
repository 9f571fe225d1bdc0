//! Everything that speaks OpenID Connect to an IdP: discovery and keys per connection
//! ([`provider`], [`jwks`]), ID-token validation ([`verifier`], OpenID Connect Core §3.1.3.7),
//! the token endpoint ([`token`]), userinfo ([`userinfo`]), the user derived from the claims
//! ([`identity`]), and the one outbound HTTP client ([`http_client`]); bearer access tokens
//! for the vendor's API ([`bearer`], validated by `verifier::access`); a group overage's
//! groups from Microsoft Graph ([`graph`]).

pub(crate) mod bearer;
pub(crate) mod graph;
pub(crate) mod http_client;
pub(crate) mod identity;
pub(crate) mod jwks;
pub(crate) mod provider;
pub(crate) mod token;
pub(crate) mod userinfo;
pub(crate) mod verifier;
