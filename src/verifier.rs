//! STUB (replaced by the verifier branch): ID token verification.
use crate::jwks::KeySet;
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub trusted_audiences: &'a [String],
    pub allowed_algs: &'a [jsonwebtoken::Algorithm],
    pub clock_skew: std::time::Duration,
    pub now: i64,
    pub nonce: &'a str,
}
pub fn allowed_algs(_advertised: &[String]) -> Vec<jsonwebtoken::Algorithm> {
    todo!()
}
pub fn peek_kid(_token: &str) -> Result<Option<String>, Rejection> {
    todo!()
}
pub fn verify_id_token(
    _token: &str,
    _keys: &KeySet,
    _exp: &Expectations<'_>,
) -> Result<IdTokenClaims, Rejection> {
    todo!()
}
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: Option<i64>,
    pub nonce: Option<String>,
    pub azp: Option<String>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub xms_edov: Option<bool>,
    pub preferred_username: Option<String>,
    pub login_hint: Option<String>,
    pub sid: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("x")]
    UnknownKid(String),
    #[error("y")]
    BadSignature,
}
impl Rejection {
    pub fn code(&self) -> &'static str {
        todo!()
    }
}
