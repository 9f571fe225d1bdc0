//! What entrance knows about Microsoft Entra ID specifically: its hosts, the GUID shape of its
//! identifiers, and the AADSTS error table that turns an error code into an admin's fix.

use std::{collections::HashMap, sync::OnceLock};

use serde::Deserialize;
use url::Url;

/// Entra's sign-in hosts: the public cloud and the national clouds.
const ENTRA_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "login.chinacloudapi.cn",
    "login-us.microsoftonline.com",
    "login.microsoftonline.de",
];

pub(crate) fn is_entra_url(url: &Url) -> bool {
    url.host_str()
        .is_some_and(|h| ENTRA_HOSTS.iter().any(|e| h.eq_ignore_ascii_case(e)))
}

/// `8-4-4-4-12` hexadecimal digits: the shape of client IDs, tenant IDs and Secret IDs.
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The public cloud's OpenID Connect metadata URL for a tenant given by its Directory
/// (tenant) ID or one of its domains (`contoso.onmicrosoft.com`): what the app registration's
/// Endpoints blade shows. `None` for anything that is neither.
pub(crate) fn tenant_metadata_url(tenant: &str) -> Option<String> {
    let tenant = tenant.trim();
    let domain = tenant.len() <= 253
        && tenant.contains('.')
        && !tenant.starts_with(['.', '-'])
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    (is_guid(tenant) || domain).then(|| {
        format!(
            "https://{}/{}/v2.0/.well-known/openid-configuration",
            ENTRA_HOSTS[0],
            tenant.to_ascii_lowercase()
        )
    })
}

/// The tenant segment of an Entra URL (`https://login.microsoftonline.com/{tenant}/v2.0/...`).
pub(crate) fn tenant_segment(url: &Url) -> Option<&str> {
    url.path_segments()?.next().filter(|s| !s.is_empty())
}

/// Microsoft Graph's (and the retired Azure AD Graph's) resource identifiers: app IDs and
/// hosts of every cloud. Their tokens have a proprietary format that nobody but Graph can
/// validate (docs/reference/ENTRA-2.md §2), so an API must refuse them by audience.
const GRAPH_AUDIENCES: &[&str] = &[
    "00000003-0000-0000-c000-000000000000",
    "00000002-0000-0000-c000-000000000000",
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "https://canary.graph.microsoft.com",
    "https://graph.windows.net",
];

/// Whether `aud` names Microsoft Graph (a trailing `/` or different case changes nothing).
pub(crate) fn is_graph_audience(aud: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    GRAPH_AUDIENCES.iter().any(|g| g.eq_ignore_ascii_case(aud))
}

/// The issuer of Entra's v1.0 access tokens (an API whose manifest leaves
/// `accessTokenAcceptedVersion` null gets them): `https://sts.windows.net/{tid}/`, trailing
/// slash included (docs/reference/ENTRA-2.md §1). Public cloud only; national clouds' v1
/// issuers are not known here, so their APIs must ask for v2 tokens.
pub(crate) const V1_ISSUER_PREFIX: &str = "https://sts.windows.net/";

/// The tenant a v1.0 issuer names: `https://sts.windows.net/{tid}/` → `tid`, when it is a GUID.
pub(crate) fn v1_issuer_tenant(iss: &str) -> Option<&str> {
    iss.strip_prefix(V1_ISSUER_PREFIX)?
        .strip_suffix('/')
        .filter(|tid| is_guid(tid))
}

/// The placeholder Entra's multi-tenant metadata and keys carry in their `issuer` (docs/reference/ENTRA.md §2–§3).
pub(crate) const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// `common` or `organizations` when the metadata URL is one of Entra's multi-tenant v2.0
/// authorities, whose metadata publishes the templated issuer `https://<host>/{tenantid}/v2.0`
/// (docs/reference/ENTRA.md §1). Loopback hosts count too: that is the bundled mock IdP (tests and the demo),
/// which serves the same authorities; no other host does.
pub(crate) fn multi_tenant_authority(metadata_url: &Url) -> Option<&'static str> {
    if !is_entra_url(metadata_url) && !crate::loopback::is_loopback_host(metadata_url) {
        return None;
    }
    match tenant_segment(metadata_url)? {
        "common" => Some("common"),
        "organizations" => Some("organizations"),
        _ => None,
    }
}

/// The issuer template a multi-tenant authority's metadata must publish: `expected_issuer`
/// (`https://<host>/common/v2.0`) with its tenant segment replaced by `{tenantid}`. `None` for
/// any other URL, including a v1.0 (`/common/.well-known/…`) one.
pub(crate) fn multi_tenant_issuer_template(
    metadata_url: &Url,
    expected_issuer: &str,
) -> Option<String> {
    let authority = multi_tenant_authority(metadata_url)?;
    let origin = expected_issuer.strip_suffix(&format!("/{authority}/v2.0"))?;
    Some(format!("{origin}/{TENANT_PLACEHOLDER}/v2.0"))
}

/// A multi-tenant connection's JWKS URL for one tenant: `jwks_uri`'s first path segment
/// (`common` or `organizations`) replaced by the tenant GUID, everything else — including an
/// `?appid=` query — kept. `None` when `tid` is not a GUID (it is put into a URL) or the URL
/// has no multi-tenant segment to replace.
pub(crate) fn tenant_jwks_uri(jwks_uri: &str, tid: &str) -> Option<String> {
    if !is_guid(tid) {
        return None;
    }
    let mut url = Url::parse(jwks_uri).ok()?;
    let rest: Vec<String> = {
        let mut segments = url.path_segments()?;
        let first = segments.next()?;
        if !first.eq_ignore_ascii_case("common") && !first.eq_ignore_ascii_case("organizations") {
            return None;
        }
        segments.map(str::to_owned).collect()
    };
    url.path_segments_mut()
        .ok()?
        .clear()
        .push(tid)
        .extend(rest.iter().map(String::as_str));
    Some(url.into())
}

/// Advice when the issuer in the metadata differs from the one implied by the metadata URL.
pub(crate) fn issuer_mismatch_advice(metadata_url: &Url) -> &'static str {
    if is_entra_url(metadata_url) {
        match tenant_segment(metadata_url) {
            Some("common" | "organizations") => {
                "a multi-tenant authority (common, organizations) must publish the templated issuer \
                 https://<host>/{tenantid}/v2.0 on the same host, and only the v2.0 metadata URL \
                 (…/v2.0/.well-known/openid-configuration) does: copy that URL from the Endpoints blade"
            }
            Some("consumers") => {
                "the consumers authority (personal Microsoft accounts) publishes the issuer of \
                 tenant 9188040d-6c67-4c5b-b112-36a304b66dad: use that tenant's URL, or common \
                 with allowed_tenants"
            }
            Some(t) if !is_guid(t) => {
                "the URL names the tenant by domain, but Entra's issuer always carries the tenant \
                 GUID: copy the \"OpenID Connect metadata document\" URL from the Endpoints blade, \
                 which uses the Directory (tenant) ID GUID"
            }
            _ => {
                "copy the \"OpenID Connect metadata document\" URL from the app registration's \
                 Endpoints blade unchanged (v2.0 URL, tenant GUID)"
            }
        }
    } else {
        "the metadata URL must be the issuer followed by /.well-known/openid-configuration: use \
         the URL the IdP documents, or ask its admin which issuer it publishes"
    }
}

/// One row of Entra's AADSTS table: what the code means and what the admin should change.
#[derive(Debug, Clone, Deserialize)]
pub struct Aadsts {
    pub code: u32,
    pub meaning: String,
    pub fix: String,
}

/// The table (copied from the team's Entra reference; see `tests/fixtures/entra/README.md`).
pub fn aadsts(code: u32) -> Option<&'static Aadsts> {
    static TABLE: OnceLock<HashMap<u32, Aadsts>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let rows: Vec<Aadsts> =
                serde_json::from_str(include_str!("../tests/fixtures/entra/aadsts-errors.json"))
                    .unwrap_or_default();
            rows.into_iter().map(|r| (r.code, r)).collect()
        })
        .get(&code)
}

/// The AADSTS code at the start of an Entra `error_description` (`"AADSTS7000215: …"`).
pub(crate) fn aadsts_code(description: &str) -> Option<u32> {
    let rest = description.trim_start().strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_jwks_uri_replaces_only_the_multi_tenant_segment() {
        let tid = "bbbbcccc-1111-dddd-2222-eeee3333ffff";
        assert_eq!(
            tenant_jwks_uri(
                "https://login.microsoftonline.com/common/discovery/v2.0/keys",
                tid
            )
            .as_deref(),
            Some(
                "https://login.microsoftonline.com/bbbbcccc-1111-dddd-2222-eeee3333ffff/discovery/v2.0/keys"
            )
        );
        // The ?appid= variant keeps its query.
        assert_eq!(
            tenant_jwks_uri(
                "https://login.microsoftonline.com/organizations/discovery/v2.0/keys?appid=x",
                tid
            )
            .as_deref(),
            Some(
                "https://login.microsoftonline.com/bbbbcccc-1111-dddd-2222-eeee3333ffff/discovery/v2.0/keys?appid=x"
            )
        );
        // Not a GUID: nothing is built (tid is put into a URL).
        for bad in [
            "../x",
            "common",
            "bbbbcccc-1111-dddd-2222-eeee3333ffff/../..",
            "",
        ] {
            assert_eq!(
                tenant_jwks_uri(
                    "https://login.microsoftonline.com/common/discovery/v2.0/keys",
                    bad
                ),
                None,
                "{bad}"
            );
        }
        // A tenant's own URL has no multi-tenant segment to replace.
        assert_eq!(
            tenant_jwks_uri(
                "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/discovery/v2.0/keys",
                tid
            ),
            None
        );
    }

    #[test]
    fn graph_audiences_and_v1_issuers() {
        assert!(is_graph_audience("https://graph.microsoft.com/"));
        assert!(is_graph_audience("00000003-0000-0000-C000-000000000000"));
        assert!(!is_graph_audience(
            "api://11112222-bbbb-3333-cccc-4444dddd5555"
        ));
        assert_eq!(
            v1_issuer_tenant("https://sts.windows.net/aaaabbbb-0000-cccc-1111-dddd2222eeee/"),
            Some("aaaabbbb-0000-cccc-1111-dddd2222eeee")
        );
        assert_eq!(
            v1_issuer_tenant("https://sts.windows.net/aaaabbbb-0000-cccc-1111-dddd2222eeee"),
            None
        );
        assert_eq!(v1_issuer_tenant("https://sts.windows.net/x/y/"), None);
    }

    #[test]
    fn guid_shape() {
        assert!(is_guid("00001111-aaaa-2222-bbbb-3333cccc4444"));
        assert!(!is_guid("00001111-aaaa-2222-bbbb-3333cccc444"));
        assert!(!is_guid("bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR"));
        assert!(!is_guid("00001111aaaa2222bbbb3333cccc4444"));
    }

    #[test]
    fn aadsts_table_is_embedded_and_codes_parse() {
        assert_eq!(
            aadsts_code("AADSTS7000215: Invalid client secret provided."),
            Some(7000215)
        );
        assert_eq!(aadsts_code("something else"), None);
        let row = aadsts(7000215).expect("7000215 is in the table");
        assert!(row.fix.contains("Value"));
        assert!(aadsts(50011).is_some());
    }

    #[test]
    fn only_v2_common_and_organizations_get_an_issuer_template() {
        let template = |url: &str| {
            let url = Url::parse(url).expect("url");
            let issuer = url
                .as_str()
                .trim_end_matches("/.well-known/openid-configuration")
                .to_owned();
            multi_tenant_issuer_template(&url, &issuer)
        };
        assert_eq!(
            template(
                "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
            )
            .as_deref(),
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        );
        assert_eq!(
            template("http://127.0.0.1:9090/organizations/v2.0/.well-known/openid-configuration")
                .as_deref(),
            Some("http://127.0.0.1:9090/{tenantid}/v2.0")
        );
        for none in [
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration",
            "https://login.microsoftonline.com/consumers/v2.0/.well-known/openid-configuration",
            "https://login.microsoftonline.com/common/.well-known/openid-configuration",
            "https://idp.example.com/common/v2.0/.well-known/openid-configuration",
        ] {
            assert_eq!(template(none), None, "{none}");
        }
    }

    #[test]
    fn domain_form_urls_get_the_guid_advice() {
        let url = Url::parse(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration",
        )
        .expect("url");
        assert!(issuer_mismatch_advice(&url).contains("GUID"));
    }
}
