//! Microsoft Graph for group overage: the user's group IDs from `transitiveMemberOf`
//! (docs/reference/ENTRA-2.md §5), read page by page within caps — delegated with the
//! sign-in's own Graph token, or app-only with a token from the user's tenant, cached per
//! tenant until shortly before it expires.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::Instrument as _;
use url::Url;

use crate::{
    config::{ClientAuth, ConnectionConfig, GroupsSettings},
    entra,
    loopback::{is_loopback_host, is_secure_url},
    oidc::http_client::{FetchError, HttpClient},
    oidc::provider::Metadata,
    oidc::token::{self, ClientCredentials, TokenError},
    sync,
};

/// Graph's host in Entra's public cloud, when the metadata names none.
const DEFAULT_GRAPH_HOST: &str = "graph.microsoft.com";
/// The longest `Retry-After` a sign-in waits out (once) before failing as throttled: the user
/// is looking at a blank page meanwhile.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);
/// App-only tokens are reused until this many seconds before they expire.
const TOKEN_MARGIN_SECS: i64 = 300;

/// How entrance calls Graph for one sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// `GET /me/transitiveMemberOf` with the sign-in's own access token (a Graph token).
    Delegated,
    /// `GET /users/{oid}/transitiveMemberOf` with an app-only token from the user's tenant.
    AppOnly,
}

impl Caller {
    /// The sign-in's access token is a Graph token unless the connection asks for another
    /// API's (`upstream`: Entra issues a token for one resource only, ENTRA-2.md §1).
    pub(crate) fn for_sign_in(conn: &ConnectionConfig, has_access_token: bool) -> Caller {
        if conn.upstream.is_none() && has_access_token {
            Caller::Delegated
        } else {
            Caller::AppOnly
        }
    }

    /// The least-privileged permission Graph documents for the call (ENTRA-2.md §5's table):
    /// `/me/transitiveMemberOf` needs delegated `User.Read`; `/users/{id}/transitiveMemberOf`
    /// app-only needs the application permission `User.Read.All`, admin-consented.
    pub(crate) fn permission(self) -> &'static str {
        match self {
            Caller::Delegated => "User.Read",
            Caller::AppOnly => "User.Read.All",
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Caller::Delegated => "delegated",
            Caller::AppOnly => "application",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum GraphError {
    #[error(
        "Microsoft Graph refused the call (HTTP 403 {code}): the permission or its consent is missing"
    )]
    Forbidden { code: String },
    #[error("Microsoft Graph is throttling (HTTP 429, Retry-After {})", .retry_after.map(|d| format!("{} s", d.as_secs_f64())).unwrap_or_else(|| "absent".into()))]
    Throttled { retry_after: Option<Duration> },
    #[error("Microsoft Graph could not be used: {0}")]
    Transport(FetchError),
    #[error("Microsoft Graph answered HTTP {status} {code}")]
    Status { status: u16, code: String },
    #[error("Microsoft Graph's answer is not valid: {0}")]
    Malformed(String),
    #[error(
        "Microsoft Graph's next-page link points to {0:?}, not to the Graph host entrance called"
    )]
    ForeignNextLink(String),
    #[error("the user is in more than {max} groups (groups.max_groups)")]
    TooManyGroups { max: usize },
    #[error("the user's groups fill more than {max} pages (groups.max_pages)")]
    TooManyPages { max: usize },
    #[error("no app-only token for Microsoft Graph: {0}")]
    AppToken(Box<TokenError>),
    #[error("the ID token has no usable {0} claim, which the Graph call needs")]
    MissingClaim(&'static str),
    #[error("the metadata names no usable Microsoft Graph host ({0})")]
    NoGraphHost(String),
}

impl GraphError {
    /// A short reason code for metrics, traces and JSON errors.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            GraphError::Forbidden { .. } => "graph_forbidden",
            GraphError::Throttled { .. } => "graph_throttled",
            GraphError::Transport(FetchError::Timeout(_)) => "graph_timeout",
            GraphError::Transport(_) => "graph_unreachable",
            GraphError::Status { .. } => "graph_error",
            GraphError::Malformed(_) => "graph_malformed",
            GraphError::ForeignNextLink(_) => "graph_foreign_next_link",
            GraphError::TooManyGroups { .. } => "too_many_groups",
            GraphError::TooManyPages { .. } => "too_many_pages",
            GraphError::AppToken(_) => "graph_app_token",
            GraphError::MissingClaim(_) => "missing_claim",
            GraphError::NoGraphHost(_) => "no_graph_host",
        }
    }
}

/// Where Graph is for a connection: the origin entrance calls, and the resource an app-only
/// token is asked for (`https://{msgraph_host}`, the national cloud's host; ENTRA-2.md §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphTarget {
    pub base: Url,
    pub resource: String,
}

/// Graph's host from Entra's metadata (`msgraph_host`), else the public cloud's for an Entra
/// URL. The bundled mock's `graph_url` is taken only from loopback metadata and only when it is
/// a loopback origin itself: off loopback Graph is always `https://{msgraph_host}`.
pub(crate) fn target(metadata_url: &Url, meta: &Metadata) -> Result<GraphTarget, GraphError> {
    let host = meta
        .msgraph_host
        .as_deref()
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .map(str::to_owned);
    let host = match host {
        Some(h) => h,
        None if entra::is_entra_url(metadata_url) || is_loopback_host(metadata_url) => {
            DEFAULT_GRAPH_HOST.to_owned()
        }
        None => return Err(GraphError::NoGraphHost("no msgraph_host".into())),
    };
    let resource = format!("https://{host}");
    let mock = meta
        .graph_url
        .as_deref()
        .filter(|_| is_loopback_host(metadata_url))
        .and_then(|u| Url::parse(u).ok())
        .filter(|u| is_loopback_host(u) && is_secure_url(u));
    let base = match mock {
        Some(mut u) => {
            u.set_path("/");
            u.set_query(None);
            u
        }
        None => Url::parse(&format!("{resource}/"))
            .map_err(|e| GraphError::NoGraphHost(format!("{host:?}: {e}")))?,
    };
    Ok(GraphTarget { base, resource })
}

/// The user's tenant's token endpoint: the metadata's with its tenant segment replaced by
/// `tid` — never `common` or `organizations`, whose app-only tokens would be the app's home
/// tenant's, not the customer's (ENTRA-2.md §7).
pub(crate) fn tenant_token_endpoint(token_endpoint: &str, tid: &str) -> Result<Url, GraphError> {
    if !entra::is_guid(tid) {
        return Err(GraphError::MissingClaim("tid"));
    }
    let mut url = Url::parse(token_endpoint)
        .map_err(|e| GraphError::NoGraphHost(format!("token endpoint: {e}")))?;
    let rest: Vec<String> = url
        .path_segments()
        .map(|s| s.skip(1).map(str::to_owned).collect())
        .unwrap_or_default();
    url.path_segments_mut()
        .map_err(|()| GraphError::NoGraphHost("token endpoint has no path".into()))?
        .clear()
        .push(tid)
        .extend(rest);
    Ok(url)
}

/// One page of `transitiveMemberOf`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub ids: Vec<String>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    value: Option<Vec<RawItem>>,
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "@odata.type", default)]
    odata_type: Option<String>,
}

/// Pure: a page's group IDs and next link. The `microsoft.graph.group` cast leaves only
/// groups; an item typed otherwise (a directory role, an administrative unit: ENTRA-2.md §5)
/// is skipped all the same, since it could never match an `allowed_groups` entry.
pub(crate) fn parse_page(body: &[u8]) -> Result<Page, GraphError> {
    let raw: RawPage =
        serde_json::from_slice(body).map_err(|e| GraphError::Malformed(e.to_string()))?;
    let items = raw
        .value
        .ok_or_else(|| GraphError::Malformed("no value array".into()))?;
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        if item
            .odata_type
            .as_deref()
            .is_some_and(|t| t != "#microsoft.graph.group")
        {
            continue;
        }
        match item.id {
            Some(id) if !id.is_empty() => ids.push(id),
            _ => return Err(GraphError::Malformed("an item has no id".into())),
        }
    }
    Ok(Page {
        ids,
        next: raw.next.filter(|n| !n.is_empty()),
    })
}

/// `@odata.nextLink` is followed only to the origin the first page came from: the bearer
/// token goes with it, and a link elsewhere would hand the user's Graph token to that host.
pub(crate) fn check_next_link(base: &Url, link: &str) -> Result<Url, GraphError> {
    let url = Url::parse(link).map_err(|e| GraphError::Malformed(format!("next link: {e}")))?;
    let same = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    if same {
        Ok(url)
    } else {
        Err(GraphError::ForeignNextLink(
            url.host_str().unwrap_or_default().to_owned(),
        ))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    #[serde(default)]
    code: String,
}

/// Pure: Graph's error answer (`{"error":{"code",…}}`, ENTRA-2.md §5: branch on `code`).
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> GraphError {
    // An identifier such as `Authorization_RequestDenied`; anything else in it is dropped,
    // since the code reaches the admin's part of an error page.
    let code: String = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.code)
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    match status {
        403 => GraphError::Forbidden { code },
        429 => GraphError::Throttled { retry_after },
        _ => GraphError::Status { status, code },
    }
}

/// `Retry-After` in seconds, decimals allowed (Microsoft's samples show `2.128`, ENTRA-2.md
/// §5). The HTTP-date form is not used by Graph and reads as absent.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Whose groups: the token's own user, or a user by object id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who<'a> {
    Me,
    User(&'a str),
}

/// The result label of one Graph call, for `entrance_graph_requests_total{result}`.
pub(crate) fn call_result(outcome: Result<(), &GraphError>) -> &'static str {
    match outcome {
        Ok(()) => "ok",
        Err(GraphError::Forbidden { .. }) => "forbidden",
        Err(GraphError::Throttled { .. }) => "throttled",
        Err(GraphError::Transport(FetchError::Timeout(_))) => "timeout",
        Err(GraphError::Malformed(_)) => "malformed",
        Err(_) => "failed",
    }
}

/// The first page's URL.
pub(crate) fn first_page(base: &Url, who: Who<'_>) -> Result<Url, GraphError> {
    let path = match who {
        Who::Me => "v1.0/me/transitiveMemberOf/microsoft.graph.group".to_owned(),
        // A GUID: nothing in it needs escaping, and nothing else reaches the path.
        Who::User(oid) if entra::is_guid(oid) => {
            format!("v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group")
        }
        Who::User(_) => return Err(GraphError::MissingClaim("oid")),
    };
    let mut url = base
        .join(&path)
        .map_err(|e| GraphError::Malformed(e.to_string()))?;
    url.set_query(Some("$select=id"));
    Ok(url)
}

/// Reads every page of the user's groups, within `limits`; over a cap it fails rather than
/// return part of the list, which `allowed_groups` would then judge. One retry in all when
/// Graph throttles with a `Retry-After` of at most [`MAX_RETRY_WAIT`]. `on_call` hears the
/// result of each HTTP call.
#[tracing::instrument(name = "graph.groups", skip_all, fields(pages = tracing::field::Empty))]
pub(crate) async fn transitive_groups(
    http: &HttpClient,
    base: &Url,
    who: Who<'_>,
    bearer: &SecretString,
    limits: GroupsSettings,
    on_call: &mut (dyn FnMut(&'static str) + Send),
) -> Result<Vec<String>, GraphError> {
    let mut url = first_page(base, who)?;
    let mut groups: Vec<String> = Vec::new();
    let mut retried = false;
    let mut pages = 0usize;
    loop {
        if pages == limits.max_pages {
            return Err(GraphError::TooManyPages {
                max: limits.max_pages,
            });
        }
        let page = loop {
            let req = http
                .inner()
                .get(url.clone())
                .bearer_auth(bearer.expose_secret())
                // Graph's docs ask for it with the cast; resent on every page (ENTRA-2.md §5).
                .header("ConsistencyLevel", "eventual");
            let sent = http
                .send_for_json_with_headers(req)
                .instrument(tracing::info_span!("graph.page", page = pages + 1))
                .await;
            let outcome = match sent {
                Err(e) => Err(GraphError::Transport(e)),
                Ok((status, _, body)) if status.is_success() => parse_page(&body),
                Ok((status, headers, body)) => {
                    let retry_after = headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    Err(classify(status.as_u16(), retry_after, &body))
                }
            };
            on_call(call_result(outcome.as_ref().map(|_| ())));
            match outcome {
                Err(GraphError::Throttled {
                    retry_after: Some(wait),
                }) if !retried && wait <= MAX_RETRY_WAIT => {
                    retried = true;
                    tokio::time::sleep(wait).await;
                }
                other => break other?,
            }
        };
        pages += 1;
        groups.extend(page.ids);
        if groups.len() > limits.max_groups {
            return Err(GraphError::TooManyGroups {
                max: limits.max_groups,
            });
        }
        match page.next {
            Some(link) => url = check_next_link(base, &link)?,
            None => {
                tracing::Span::current().record("pages", pages);
                return Ok(groups);
            }
        }
    }
}

/// App-only Graph tokens by (tenant token endpoint, client id), each kept until
/// [`TOKEN_MARGIN_SECS`] before it expires: one token request per tenant and hour, not per
/// sign-in.
#[derive(Default)]
pub(crate) struct AppTokens {
    cache: Mutex<HashMap<(String, String), (SecretString, i64)>>,
}

impl AppTokens {
    fn get(&self, endpoint: &str, client_id: &str, now: i64) -> Option<SecretString> {
        let cache = sync::lock(&self.cache);
        cache
            .get(&(endpoint.to_owned(), client_id.to_owned()))
            .filter(|(_, renew_at)| now < *renew_at)
            .map(|(t, _)| t.clone())
    }

    /// Drops the tokens past renewal first, so tenants that stopped signing in leave nothing.
    fn put(&self, endpoint: &str, client_id: &str, token: SecretString, now: i64, renew_at: i64) {
        let mut cache = sync::lock(&self.cache);
        cache.retain(|_, (_, at)| now < *at);
        cache.insert(
            (endpoint.to_owned(), client_id.to_owned()),
            (token, renew_at),
        );
    }

    /// How many tokens are cached (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        sync::lock(&self.cache).len()
    }
}

/// What the app-only path needs from the connection.
pub(crate) struct AppOnly<'a> {
    pub conn: &'a ConnectionConfig,
    pub metadata: &'a Metadata,
    pub client_auth: ClientAuth,
    pub resource: &'a str,
    pub tid: &'a str,
    pub now: i64,
}

/// An app-only Graph token for the user's tenant: from the cache, else a client-credentials
/// request to that tenant (each credential in turn while the IdP refuses the client's
/// authentication, as during a secret rotation).
#[tracing::instrument(name = "graph.app_token", skip_all, fields(tid = req.tid))]
pub(crate) async fn app_token(
    http: &HttpClient,
    cache: &AppTokens,
    req: &AppOnly<'_>,
) -> Result<SecretString, GraphError> {
    let endpoint = tenant_token_endpoint(&req.metadata.token_endpoint, req.tid)?;
    let client_id = req.conn.client_id.as_str();
    if let Some(t) = cache.get(endpoint.as_str(), client_id, req.now) {
        return Ok(t);
    }
    let scope = format!("{}/.default", req.resource);
    let attempts = token::attempts(req.conn);
    let mut result = Err(TokenError::Malformed(
        "the connection has no credential".into(),
    ));
    for (i, (_, credential)) in attempts.iter().enumerate() {
        result = token::client_credentials_token(
            http,
            &ClientCredentials {
                token_endpoint: endpoint.as_str(),
                client_id,
                credential: *credential,
                client_auth: req.client_auth,
                scope: Some(&scope),
            },
        )
        .await;
        match &result {
            Err(TokenError::Refused { error, .. })
                if i + 1 < attempts.len() && token::is_client_auth_failure(error) => {}
            _ => break,
        }
    }
    let issued = result.map_err(|e| GraphError::AppToken(Box::new(e)))?;
    // No expires_in (RFC 6749 §5.1 only recommends it): Entra's shortest lifetime, an hour.
    let lifetime = issued.expires_in.unwrap_or(3600) as i64;
    cache.put(
        endpoint.as_str(),
        client_id,
        issued.access_token.clone(),
        req.now,
        req.now + lifetime - TOKEN_MARGIN_SECS,
    );
    Ok(issued.access_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE1: &[u8] =
        include_bytes!("../../tests/fixtures/entra/graph.transitiveMemberOf.page1.json");
    const PAGE2: &[u8] =
        include_bytes!("../../tests/fixtures/entra/graph.transitiveMemberOf.page2.json");
    const E403: &[u8] = include_bytes!("../../tests/fixtures/entra/graph.error.403.json");
    const E429: &[u8] = include_bytes!("../../tests/fixtures/entra/graph.error.429.json");

    fn graph() -> Url {
        Url::parse("https://graph.microsoft.com/").expect("url")
    }

    #[test]
    fn graph_pages_give_their_ids_and_next_link() {
        let p1 = parse_page(PAGE1).expect("page 1");
        assert_eq!(p1.ids.len(), 3);
        assert_eq!(p1.ids[0], "11111111-0000-0000-0000-000000000001");
        let next = p1.next.expect("next link");
        assert!(next.contains("$skiptoken="), "{next}");
        check_next_link(&graph(), &next).expect("same host");
        let p2 = parse_page(PAGE2).expect("page 2");
        assert_eq!(p2.ids.len(), 2);
        assert_eq!(p2.next, None);
    }

    #[test]
    fn items_that_are_not_groups_are_skipped_and_an_item_without_id_is_malformed() {
        let body = br##"{"value":[{"@odata.type":"#microsoft.graph.directoryRole","id":"r"},{"@odata.type":"#microsoft.graph.group","id":"g"},{"id":"h"}]}"##;
        assert_eq!(parse_page(body).expect("page").ids, vec!["g", "h"]);
        assert!(matches!(
            parse_page(br#"{"value":[{"displayName":"x"}]}"#),
            Err(GraphError::Malformed(_))
        ));
        assert!(matches!(
            parse_page(br#"{"error":{"code":"x"}}"#),
            Err(GraphError::Malformed(_))
        ));
        assert!(matches!(
            parse_page(b"<html>"),
            Err(GraphError::Malformed(_))
        ));
    }

    #[test]
    fn a_next_link_to_another_host_is_refused() {
        for foreign in [
            "https://evil.example/v1.0/me/transitiveMemberOf?$skiptoken=x",
            "http://graph.microsoft.com/v1.0/me/transitiveMemberOf?$skiptoken=x",
            "https://graph.microsoft.com:8443/v1.0/me?$skiptoken=x",
            "https://graph.microsoft.com.evil.example/v1.0/me",
            "https://user@graph.microsoft.com/v1.0/me",
        ] {
            assert!(
                matches!(
                    check_next_link(&graph(), foreign),
                    Err(GraphError::ForeignNextLink(_))
                ),
                "{foreign}"
            );
        }
        let mock = Url::parse("http://127.0.0.1:4000/").expect("url");
        check_next_link(&mock, "http://127.0.0.1:4000/v1.0/me?$skiptoken=1").expect("same");
        assert!(check_next_link(&mock, "http://127.0.0.1:4001/v1.0/me").is_err());
    }

    #[test]
    fn graph_errors_are_sorted_by_status_and_code() {
        match classify(403, None, E403) {
            GraphError::Forbidden { code } => assert_eq!(code, "Authorization_RequestDenied"),
            other => panic!("{other:?}"),
        }
        let wait = Some(Duration::from_millis(2128));
        assert!(matches!(
            classify(429, wait, E429),
            GraphError::Throttled { retry_after } if retry_after == wait
        ));
        assert!(matches!(
            classify(503, None, b"<html>"),
            GraphError::Status { status: 503, .. }
        ));
        match classify(403, None, br#"{"error":{"code":"<b>x</b> y"}}"#) {
            GraphError::Forbidden { code } => assert_eq!(code, "bxby"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_retry_after("2.128"), wait);
        assert_eq!(parse_retry_after("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
    }

    fn meta(msgraph_host: Option<&str>, graph_url: Option<&str>) -> Metadata {
        let mut m: Metadata = serde_json::from_str(include_str!(
            "../../tests/fixtures/entra/openid-configuration.tenant.json"
        ))
        .expect("fixture parses");
        m.msgraph_host = msgraph_host.map(str::to_owned);
        m.graph_url = graph_url.map(str::to_owned);
        m
    }

    #[test]
    fn the_graph_host_comes_from_the_metadata_and_the_mock_origin_only_on_loopback() {
        let entra = Url::parse(
            "https://login.microsoftonline.us/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration",
        )
        .expect("url");
        let t = target(&entra, &meta(Some("graph.microsoft.us"), None)).expect("target");
        assert_eq!(t.base.as_str(), "https://graph.microsoft.us/");
        assert_eq!(t.resource, "https://graph.microsoft.us");
        // A graph_url in metadata fetched from the internet is ignored: https Graph only.
        let t = target(
            &entra,
            &meta(Some("graph.microsoft.us"), Some("http://127.0.0.1:9/")),
        )
        .expect("target");
        assert_eq!(t.base.as_str(), "https://graph.microsoft.us/");
        let t = target(&entra, &meta(Some("evil.example/x"), None)).expect("target");
        assert_eq!(t.base.as_str(), "https://graph.microsoft.com/");

        let mock = Url::parse("http://127.0.0.1:4000/t/v2.0/.well-known/openid-configuration")
            .expect("url");
        let t = target(
            &mock,
            &meta(Some("graph.microsoft.com"), Some("http://127.0.0.1:4000")),
        )
        .expect("target");
        assert_eq!(t.base.as_str(), "http://127.0.0.1:4000/");
        assert_eq!(t.resource, "https://graph.microsoft.com");
        // Loopback metadata pointing Graph off loopback: ignored too.
        let t = target(
            &mock,
            &meta(
                Some("graph.microsoft.com"),
                Some("http://graph.evil.example"),
            ),
        )
        .expect("target");
        assert_eq!(t.base.as_str(), "https://graph.microsoft.com/");
    }

    #[test]
    fn the_app_token_comes_from_the_users_tenant_never_common() {
        let tid = "11112222-bbbb-3333-cccc-4444dddd5555";
        let url = tenant_token_endpoint(
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            tid,
        )
        .expect("url");
        assert_eq!(
            url.as_str(),
            format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/token")
        );
        assert!(
            tenant_token_endpoint(
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                "common"
            )
            .is_err()
        );
        assert!(first_page(&graph(), Who::User("../me")).is_err());
        assert_eq!(
            first_page(&graph(), Who::Me).expect("url").as_str(),
            "https://graph.microsoft.com/v1.0/me/transitiveMemberOf/microsoft.graph.group?$select=id"
        );
    }

    #[test]
    fn app_tokens_are_kept_per_tenant_until_the_margin() {
        let cache = AppTokens::default();
        let now = 1_000;
        cache.put(
            "https://l/t0/token",
            "c",
            SecretString::from("old"),
            now - 10,
            now - 1,
        );
        cache.put(
            "https://l/t1/token",
            "c",
            SecretString::from("a"),
            now,
            now + 100,
        );
        assert!(cache.get("https://l/t1/token", "c", now).is_some());
        assert!(cache.get("https://l/t2/token", "c", now).is_none());
        assert!(cache.get("https://l/t1/token", "c", now + 100).is_none());
        assert_eq!(cache.len(), 1);
    }
}
