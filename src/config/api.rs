//! A connection's `api` table: bearer access tokens for the vendor's own API, accepted on
//! `/auth` and `/me` (RFC 6750) — which audiences, scopes, app roles and client apps count.

use url::Url;

use crate::entra;

use super::{ConfigError, invalid};

/// `[connections.api]` as written. Its presence turns bearer tokens on for the connection.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// The API's App ID URIs and/or its client GUID: a token's `aud` must be one of them.
    pub audiences: Vec<String>,
    /// Delegated (user) tokens must carry every one of these in `scp`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// App-only tokens must carry every one of these in `roles`; without the key app-only
    /// tokens are refused.
    #[serde(default)]
    pub required_roles: Vec<String>,
    /// Only these client apps (`azp` in v2 tokens, `appid` in v1) may call.
    #[serde(default)]
    pub allowed_clients: Option<Vec<String>>,
    /// Origins whose CORS preflights (`OPTIONS` with `Access-Control-Request-Method`, which
    /// carry no token) `/auth` lets through.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// The validated `api` table of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiSettings {
    /// Exact `aud` values accepted (App ID URIs as registered, or the API's client GUID).
    pub audiences: Vec<String>,
    /// Every one must be in a delegated token's `scp`.
    pub required_scopes: Vec<String>,
    /// Every one must be in an app-only token's `roles`; empty: app-only tokens are refused,
    /// since Entra issues them without roles to any app of the tenant that asks
    /// (docs/reference/ENTRA-2.md §1, "App-only tokens can be issued without `roles`").
    pub required_roles: Vec<String>,
    /// `None`: any client app; else the client GUIDs (lower-case) that may call.
    pub allowed_clients: Option<Vec<String>>,
    /// Serialised origins (`https://app.example.com`) whose preflights pass.
    pub cors_origins: Vec<String>,
}

impl ApiSettings {
    /// Whether `client` (a token's `azp`/`appid`) may call; GUIDs compare ignoring case.
    pub fn allows_client(&self, client: &str) -> bool {
        self.allowed_clients
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c.eq_ignore_ascii_case(client)))
    }
}

/// Checks `connections[i].api`. Bearer tokens are read with Entra's claim model (`tid`, `oid`,
/// `scp`, `roles`, `azp`/`appid`, v1 and v2 issuers), so only an Entra connection (or the
/// bundled Entra-shaped mock on loopback) may have one.
pub(super) fn validate_api(
    raw: &RawApi,
    metadata_url: &Url,
    key: &dyn Fn(&str) -> String,
) -> Result<ApiSettings, ConfigError> {
    if !entra::is_entra_url(metadata_url) && !crate::loopback::is_loopback_host(metadata_url) {
        return Err(invalid(
            key("api"),
            "bearer access tokens are read as Entra ID issues them, and this connection's metadata URL is not on an Entra host",
            "remove the api table from this connection",
        ));
    }
    let audiences = words(&raw.audiences, &key("api.audiences"), "audience")?;
    if audiences.is_empty() {
        return Err(invalid(
            key("api.audiences"),
            "is empty, so no token could be accepted",
            "list the API's Application ID URI (Expose an API, e.g. \"api://<app-id>\") and/or its Application (client) ID",
        ));
    }
    if let Some(graph) = audiences.iter().find(|a| entra::is_graph_audience(a)) {
        return Err(invalid(
            key("api.audiences"),
            format!(
                "names Microsoft Graph ({graph}); Graph's tokens are for Graph alone and cannot be validated by anyone else (docs/reference/ENTRA-2.md §2)"
            ),
            "list your own API's Application ID URI instead, and have clients request a token for it",
        ));
    }
    let required_scopes = words(&raw.required_scopes, &key("api.required_scopes"), "scope")?;
    let required_roles = words(&raw.required_roles, &key("api.required_roles"), "role")?;
    let allowed_clients = match &raw.allowed_clients {
        None => None,
        Some(list) => {
            let list: Vec<String> = list.iter().map(|c| c.trim().to_ascii_lowercase()).collect();
            if list.is_empty() || list.iter().any(|c| !entra::is_guid(c)) {
                return Err(invalid(
                    key("api.allowed_clients"),
                    "must list client application IDs (GUIDs)",
                    "put the Application (client) IDs of the apps that may call, or remove the key to allow any",
                ));
            }
            Some(list)
        }
    };
    let mut cors_origins = Vec::with_capacity(raw.cors_origins.len());
    for origin in &raw.cors_origins {
        cors_origins.push(cors_origin(origin).ok_or_else(|| {
            invalid(
                key("api.cors_origins"),
                format!("{origin:?} is not an origin"),
                "write the scheme, host and port only, e.g. \"https://app.example.com\"",
            )
        })?);
    }
    Ok(ApiSettings {
        audiences,
        required_scopes,
        required_roles,
        allowed_clients,
        cors_origins,
    })
}

/// Trimmed values with no space inside (a space would split `scp`) and none empty.
fn words(list: &[String], key: &str, what: &str) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = list.iter().map(|v| v.trim().to_owned()).collect();
    if list
        .iter()
        .any(|v| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid(
            key,
            format!("holds an empty {what} or one with spaces in it"),
            format!("write one {what} per item, exactly as Entra emits it"),
        ));
    }
    Ok(list)
}

/// An origin as browsers send it (`Origin` header, RFC 6454 §6.1): scheme, host, port when
/// not the default, nothing else.
fn cors_origin(value: &str) -> Option<String> {
    let url = Url::parse(value.trim()).ok()?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    let origin = url.origin();
    (bare && origin.is_tuple() && matches!(url.scheme(), "http" | "https"))
        .then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(audiences: &[&str]) -> RawApi {
        RawApi {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            required_scopes: vec![],
            required_roles: vec![],
            allowed_clients: None,
            cors_origins: vec![],
        }
    }

    fn entra_url() -> Url {
        Url::parse("https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration")
            .expect("url")
    }

    fn key(k: &str) -> String {
        format!("connections[0].{k}")
    }

    #[test]
    fn graph_audiences_and_non_entra_connections_are_refused() {
        let err = validate_api(&raw(&["https://graph.microsoft.com"]), &entra_url(), &key)
            .expect_err("graph");
        assert!(err.to_string().contains("Microsoft Graph"), "{err}");
        let kc = Url::parse("https://kc.example/realms/x/.well-known/openid-configuration")
            .expect("url");
        assert!(validate_api(&raw(&["api://x"]), &kc, &key).is_err());
        assert!(validate_api(&raw(&[]), &entra_url(), &key).is_err());
    }

    #[test]
    fn origins_are_serialised_and_paths_refused() {
        let mut r = raw(&["api://x"]);
        r.cors_origins = vec!["https://App.Example.com:443".into()];
        let api = validate_api(&r, &entra_url(), &key).expect("valid");
        assert_eq!(api.cors_origins, ["https://app.example.com"]);
        r.cors_origins = vec!["https://app.example.com/path".into()];
        assert!(validate_api(&r, &entra_url(), &key).is_err());
    }

    #[test]
    fn clients_must_be_guids_and_compare_ignoring_case() {
        let mut r = raw(&["api://x"]);
        r.allowed_clients = Some(vec!["not-a-guid".into()]);
        assert!(validate_api(&r, &entra_url(), &key).is_err());
        r.allowed_clients = Some(vec!["22223333-CCCC-4444-dddd-5555eeee6666".into()]);
        let api = validate_api(&r, &entra_url(), &key).expect("valid");
        assert!(api.allows_client("22223333-cccc-4444-DDDD-5555eeee6666"));
        assert!(!api.allows_client("00001111-aaaa-2222-bbbb-3333cccc4444"));
    }
}
