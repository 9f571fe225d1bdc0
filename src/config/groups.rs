//! A connection's `groups` table: whether a group overage is resolved through Microsoft Graph
//! at sign-in, and the caps that keep that resolution bounded.

use url::Url;

use crate::entra;

use super::{ConfigError, invalid};

/// `[connections.groups]` as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroups {
    /// On a group overage, read the user's groups from Microsoft Graph (opt-in: it needs a
    /// Graph permission, docs/ENTRA-GUIDE.md).
    #[serde(default)]
    pub resolve_overage: bool,
    #[serde(default)]
    pub max_pages: Option<usize>,
    #[serde(default)]
    pub max_groups: Option<usize>,
}

/// Graph's default page is 100 groups (docs/reference/ENTRA-2.md §5): 10 pages read 1,000.
pub(crate) const DEFAULT_MAX_PAGES: usize = 10;
pub(crate) const DEFAULT_MAX_GROUPS: usize = 2000;

/// The validated `groups` table; the default (no table) resolves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupsSettings {
    /// Resolve an overage through Graph (`oidc::graph`); `false`: the groups stay unknown.
    pub resolve_overage: bool,
    /// The most Graph pages one sign-in reads; more fails the sign-in rather than judge
    /// `allowed_groups` on part of the list.
    pub max_pages: usize,
    /// The most groups one sign-in accepts, for the same reason.
    pub max_groups: usize,
}

impl Default for GroupsSettings {
    fn default() -> Self {
        GroupsSettings {
            resolve_overage: false,
            max_pages: DEFAULT_MAX_PAGES,
            max_groups: DEFAULT_MAX_GROUPS,
        }
    }
}

/// Checks `connections[i].groups`. Graph is Entra's: the table is refused on other IdPs (the
/// Entra-shaped mock on loopback counts as Entra).
pub(super) fn validate_groups(
    raw: Option<&RawGroups>,
    metadata_url: &Url,
    key: &dyn Fn(&str) -> String,
) -> Result<GroupsSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(GroupsSettings::default());
    };
    let entra_shaped =
        entra::is_entra_url(metadata_url) || crate::loopback::is_loopback_host(metadata_url);
    if raw.resolve_overage && !entra_shaped {
        return Err(invalid(
            key("groups.resolve_overage"),
            "is set on a connection that is not Entra ID; group overage and Microsoft Graph are Entra's",
            "remove the groups table from this connection",
        ));
    }
    let max_pages = raw.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
    if !(1..=100).contains(&max_pages) {
        return Err(invalid(
            key("groups.max_pages"),
            format!("is {max_pages}"),
            "use 1 to 100 (each page holds up to 100 groups)",
        ));
    }
    let max_groups = raw.max_groups.unwrap_or(DEFAULT_MAX_GROUPS);
    if !(1..=100_000).contains(&max_groups) {
        return Err(invalid(
            key("groups.max_groups"),
            format!("is {max_groups}"),
            "use 1 to 100000",
        ));
    }
    Ok(GroupsSettings {
        resolve_overage: raw.resolve_overage,
        max_pages,
        max_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> String {
        format!("connections[0].{k}")
    }

    fn raw(resolve: bool, pages: Option<usize>, groups: Option<usize>) -> RawGroups {
        RawGroups {
            resolve_overage: resolve,
            max_pages: pages,
            max_groups: groups,
        }
    }

    #[test]
    fn resolution_is_off_by_default_and_for_entra_only() {
        let entra = Url::parse(
            "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration",
        )
        .expect("url");
        let other = Url::parse("https://kc.example/realms/x/.well-known/openid-configuration")
            .expect("url");
        assert_eq!(
            validate_groups(None, &entra, &key).expect("default"),
            GroupsSettings::default()
        );
        let on = validate_groups(Some(&raw(true, None, None)), &entra, &key).expect("on");
        assert!(on.resolve_overage);
        assert_eq!((on.max_pages, on.max_groups), (10, 2000));
        let err =
            validate_groups(Some(&raw(true, None, None)), &other, &key).expect_err("not Entra");
        assert!(err.to_string().contains("groups.resolve_overage"), "{err}");
        for bad in [
            raw(true, Some(0), None),
            raw(true, Some(101), None),
            raw(true, None, Some(0)),
        ] {
            assert!(validate_groups(Some(&bad), &entra, &key).is_err());
        }
    }
}
