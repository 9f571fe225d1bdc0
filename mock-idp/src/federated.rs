//! Workload identity federation (docs/reference/ENTRA-2.md §6): external token issuers the mock
//! trusts — each a [`FederatedIssuer`] with its own RSA key, standing in for the issuer's
//! discovery document and JWKS that Entra reads — the federated identity credentials registered
//! on the app, and the check of a presented assertion with Entra's answers (AADSTS700211,
//! 700212, 700213 for issuer, audience and subject; 700024 outside its time range; 700027 for
//! the signature).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value, json};

use crate::Signing;
use crate::keys::{self, KeyError, KeyPair, SignWith};

/// The audience Entra requires in a federated assertion (public cloud).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A federated identity credential on the app registration: `issuer` and `subject` must equal
/// the assertion's `iss` and `sub` exactly, and one of `audiences` be in its `aud`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

impl FederatedCredential {
    /// A Kubernetes service account's credential: `system:serviceaccount:{ns}:{sa}` of
    /// `issuer`, audience [`TOKEN_EXCHANGE_AUDIENCE`].
    pub fn kubernetes(issuer: &str, namespace: &str, service_account: &str) -> FederatedCredential {
        FederatedCredential {
            issuer: issuer.to_owned(),
            subject: format!("system:serviceaccount:{namespace}:{service_account}"),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
        }
    }
}

/// An external issuer (a Kubernetes cluster's service-account issuer, a CI system) whose
/// tokens the mock can check: made by [`crate::MockIdp::federated_issuer`].
#[derive(Clone, Debug)]
pub struct FederatedIssuer {
    issuer: String,
    key: Arc<KeyPair>,
}

impl FederatedIssuer {
    pub(crate) fn new(issuer: &str, key: Arc<KeyPair>) -> FederatedIssuer {
        FederatedIssuer {
            issuer: issuer.to_owned(),
            key,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token of this issuer, shaped like a projected service-account token: `aud` as an
    /// array, `iat`/`nbf` now, `exp` `lifetime_secs` from now (negative: already expired).
    pub fn token(
        &self,
        subject: &str,
        audience: &str,
        lifetime_secs: i64,
    ) -> Result<String, KeyError> {
        let now = keys::now_unix() as i64;
        let mut claims = Map::new();
        claims.insert("aud".into(), json!([audience]));
        claims.insert("exp".into(), json!(now + lifetime_secs));
        claims.insert("iat".into(), json!(now));
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        claims.insert("nbf".into(), json!(now));
        claims.insert("sub".into(), json!(subject));
        keys::build_jwt(
            &claims,
            &Map::new(),
            &[],
            &SignWith {
                signing: &Signing::Normal,
                current: &self.key,
                unpublished: None,
                header_kid: &self.key.kid,
            },
        )
    }
}

/// Why an assertion was refused: Entra's `error`, AADSTS code and text.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: &'static str,
    pub code: u32,
    pub text: String,
}

fn refuse(code: u32, text: String) -> Refusal {
    Refusal {
        error: "invalid_client",
        code,
        text,
    }
}

/// The assertion's `iss` read without checking anything: an assertion issued by the app
/// itself (a certificate credential's, `iss` = the client ID) goes to the certificate check.
pub(crate) fn issuer_of(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

const LINK: &str = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

/// Entra's checks of a federated assertion, in the order a test reads which failure wins: the
/// issuer, audience and subject against the app's federated credentials, the signature by the
/// issuer's key, then the time range. No replay check: the platform reuses its token until it
/// rotates it, and Entra accepts that.
pub(crate) fn verify(
    issuers: &[FederatedIssuer],
    records: &[FederatedCredential],
    assertion: &str,
    now: i64,
) -> Result<(), Refusal> {
    let iss = issuer_of(assertion).unwrap_or_default();
    let for_issuer: Vec<&FederatedCredential> =
        records.iter().filter(|r| r.issuer == iss).collect();
    if for_issuer.is_empty() {
        return Err(refuse(
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. {LINK}"
            ),
        ));
    }
    let unverified = peek(assertion);
    let aud = audiences(unverified.get("aud"));
    let with_aud: Vec<&&FederatedCredential> = for_issuer
        .iter()
        .filter(|r| r.audiences.iter().any(|a| aud.contains(a)))
        .collect();
    if with_aud.is_empty() {
        return Err(refuse(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. {LINK}",
                aud.join(",")
            ),
        ));
    }
    let sub = unverified
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !with_aud.iter().any(|r| r.subject == sub) {
        return Err(refuse(
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{sub}'. {LINK}"
            ),
        ));
    }
    let signature = || {
        refuse(
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found in the issuer's keys, or the signature does not match.]".into(),
        )
    };
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or_else(signature)?;
    let key = issuer.key.decoding_key().map_err(|_| signature())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation)
        .map_err(|_| signature())?;
    let exp = unverified.get("exp").and_then(Value::as_i64).unwrap_or(0);
    let nbf = unverified.get("nbf").and_then(Value::as_i64).unwrap_or(0);
    if exp <= now || nbf > now + 300 {
        return Err(refuse(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {exp}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials"
            ),
        ));
    }
    Ok(())
}

fn peek(assertion: &str) -> Map<String, Value> {
    assertion
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn audiences(aud: Option<&Value>) -> Vec<String> {
    match aud {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}
