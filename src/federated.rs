//! Federated client credentials (Entra's workload identity federation,
//! docs/reference/ENTRA-2.md §6): a JWT the platform issues to entrance — a Kubernetes projected
//! service-account token, a CI system's OIDC token — sent as the `client_assertion` instead of a
//! secret. No secret to leak, expire or rotate; the platform rotates the token, so it is read
//! afresh for every token request.

use std::path::PathBuf;

use base64::Engine as _;
use secrecy::SecretString;

/// The audience Entra's federated identity credentials require (public cloud); the national
/// clouds use their own (`api://AzureADTokenExchangeUSGov`, `…China`).
pub(crate) const ENTRA_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The most bytes an assertion may have (Kubernetes tokens are ~1–2 KB).
const MAX_ASSERTION_BYTES: u64 = 64 * 1024;

/// Where the assertion is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionSource {
    /// A file the platform keeps fresh (`client_assertion_file`, or
    /// `AZURE_FEDERATED_TOKEN_FILE` with `workload_identity = true`).
    File(PathBuf),
    /// An environment variable holding the assertion itself (`client_assertion_env`).
    Env(String),
}

impl std::fmt::Display for AssertionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssertionSource::File(p) => write!(f, "the file {}", p.display()),
            AssertionSource::Env(v) => write!(f, "the environment variable {v}"),
        }
    }
}

/// A connection's federated credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedAssertion {
    pub source: AssertionSource,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FederatedError {
    #[error("{from} could not be read: {reason}")]
    Unreadable {
        from: AssertionSource,
        reason: String,
    },
    #[error("{0} is empty")]
    Empty(AssertionSource),
    #[error("{0} holds more than 64 KiB, which is no token")]
    TooLarge(AssertionSource),
}

/// What the assertion says about itself, read without verifying it (only Entra can, against
/// the issuer's keys): what the admin compares with the federated credential on the app
/// registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AssertionClaims {
    pub(crate) iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<i64>,
}

impl AssertionClaims {
    /// `iss '…', sub '…', aud '…'`, for logs and `entrance check`.
    pub(crate) fn summary(&self) -> String {
        format!(
            "iss '{}', sub '{}', aud '{}'",
            self.iss.as_deref().unwrap_or("?"),
            self.sub.as_deref().unwrap_or("?"),
            self.aud.join(" ")
        )
    }
}

impl FederatedAssertion {
    /// The assertion as it is now (trimmed: a file usually ends with a newline).
    pub async fn read(&self) -> Result<SecretString, FederatedError> {
        let text = match &self.source {
            AssertionSource::File(path) => {
                let unreadable = |e: std::io::Error| FederatedError::Unreadable {
                    from: self.source.clone(),
                    reason: e.to_string(),
                };
                let len = tokio::fs::metadata(path).await.map_err(unreadable)?.len();
                if len > MAX_ASSERTION_BYTES {
                    return Err(FederatedError::TooLarge(self.source.clone()));
                }
                tokio::fs::read_to_string(path).await.map_err(unreadable)?
            }
            AssertionSource::Env(var) => {
                std::env::var(var).map_err(|e| FederatedError::Unreadable {
                    from: self.source.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(FederatedError::Empty(self.source.clone()));
        }
        if text.len() as u64 > MAX_ASSERTION_BYTES {
            return Err(FederatedError::TooLarge(self.source.clone()));
        }
        Ok(SecretString::from(text.to_owned()))
    }
}

/// The claims of a JWT's payload, unverified; `None` when it is not a JWT.
pub(crate) fn peek(assertion: &str) -> Option<AssertionClaims> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let aud = match v.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Some(AssertionClaims {
        iss: text("iss"),
        sub: text("sub"),
        aud,
        exp: v.get("exp").and_then(serde_json::Value::as_i64),
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// The AKS token of docs/reference/ENTRA-2.md §6 (tests/fixtures/entra/federated-assertion.decoded.json).
    fn aks_token() -> String {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/entra/federated-assertion.decoded.json"
        ))
        .expect("fixture");
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            enc(&fixture["header"]),
            enc(&fixture["payload"])
        )
    }

    #[test]
    fn the_claims_an_admin_compares_are_read_from_a_kubernetes_token() {
        let c = peek(&aks_token()).expect("a JWT");
        assert_eq!(
            c.sub.as_deref(),
            Some("system:serviceaccount:orders:orders-api")
        );
        assert_eq!(c.aud, [ENTRA_EXCHANGE_AUDIENCE]);
        assert!(
            c.iss
                .is_some_and(|i| i.starts_with("https://eastus.oic.prod-aks.azure.com/"))
        );
        assert_eq!(c.exp, Some(1767229200));
        assert!(peek("not a jwt").is_none());
    }

    #[tokio::test]
    async fn the_file_is_read_afresh_each_time_and_problems_are_named() {
        let dir = std::env::temp_dir().join(format!("entrance-fed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        let f = FederatedAssertion {
            source: AssertionSource::File(path.clone()),
        };
        assert!(matches!(
            f.read().await,
            Err(FederatedError::Unreadable { .. })
        ));
        std::fs::write(&path, "first\n").expect("write");
        assert_eq!(f.read().await.expect("read").expose_secret(), "first");
        std::fs::write(&path, "second").expect("write");
        assert_eq!(f.read().await.expect("read").expose_secret(), "second");
        std::fs::write(&path, "  \n").expect("write");
        assert!(matches!(f.read().await, Err(FederatedError::Empty(_))));
        std::fs::write(&path, vec![b'a'; 70 * 1024]).expect("write");
        assert!(matches!(f.read().await, Err(FederatedError::TooLarge(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
