//! STUB (replaced by the verifier branch): JWKS parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}
pub struct VerificationKey {
    pub kid: Option<String>,
    pub key: jsonwebtoken::DecodingKey,
    pub family: KeyFamily,
    pub alg: Option<String>,
    pub issuer: Option<String>,
}
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<std::sync::Arc<VerificationKey>>,
}
impl KeySet {
    pub fn from_jwks_json(_body: &[u8]) -> Result<KeySet, JwksError> {
        todo!()
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn contains_kid(&self, _kid: &str) -> bool {
        todo!()
    }
    pub fn kids(&self) -> Vec<String> {
        todo!()
    }
}
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("x")]
    NotJson,
}
