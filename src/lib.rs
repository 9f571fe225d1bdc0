//! entrance: the OpenID Connect login callback endpoint for Microsoft Entra ID and any OIDC provider.
pub mod jwks;
pub mod mock_idp;
pub mod verifier;
