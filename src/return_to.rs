//! Where a user may be sent after signing in: a same-origin relative path, or an absolute URL
//! on a host the admin listed, so `/login` cannot be turned into an open redirect
//! (RFC 9700 §4.11).

use url::Url;

/// Longest `return_to` kept; a longer one falls back to `/`.
const MAX_LEN: usize = 2048;

/// Returns a safe destination for `candidate`: an absolute URL on one of `allowed_hosts`
/// (apps on sibling hosts behind forward-auth), else a same-origin path, else `/`.
///
/// The candidate is resolved against the public origin the way a browser would resolve a
/// `Location` header, and is kept only if it stays on that origin. That covers the tricks
/// string checks miss: `//evil.example` and `/\evil.example` (protocol-relative; browsers read
/// `\` as `/`), `javascript:`, tabs and newlines that URL parsers silently drop, and dot
/// segments that collapse into `//`.
pub(crate) fn sanitize(
    candidate: Option<&str>,
    public_origin: &Url,
    allowed_hosts: &[String],
) -> String {
    candidate
        .and_then(|c| {
            allowed_absolute(c, public_origin, allowed_hosts)
                .or_else(|| same_origin_path(c, public_origin))
        })
        .unwrap_or_else(|| "/".to_owned())
}

/// An absolute URL is kept only when its host is listed, it has no credentials, and its
/// scheme is https (or http when entrance itself runs on plain http, i.e. on loopback).
fn allowed_absolute(candidate: &str, origin: &Url, allowed_hosts: &[String]) -> Option<String> {
    if allowed_hosts.is_empty()
        || candidate.len() > MAX_LEN
        || candidate.chars().any(char::is_control)
        || candidate.contains('\\')
    {
        return None;
    }
    let url = Url::parse(candidate).ok()?;
    let scheme_ok =
        url.scheme() == "https" || (url.scheme() == "http" && origin.scheme() == "http");
    let host = url.host_str()?.to_ascii_lowercase();
    (scheme_ok
        && url.username().is_empty()
        && url.password().is_none()
        && allowed_hosts.contains(&host))
    .then(|| url.to_string())
}

fn same_origin_path(candidate: &str, origin: &Url) -> Option<String> {
    if candidate.len() > MAX_LEN
        || !candidate.starts_with('/')
        || candidate.starts_with("//")
        || candidate.contains('\\')
        || candidate.chars().any(char::is_control)
    {
        return None;
    }
    let resolved = origin.join(candidate).ok()?;
    if resolved.origin() != origin.origin() {
        return None;
    }
    let mut out = resolved.path().to_owned();
    // Dot segments can collapse to a path that starts with `//`, which a browser would read
    // as another host.
    if out.starts_with("//") {
        return None;
    }
    if let Some(q) = resolved.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = resolved.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin() -> Url {
        Url::parse("https://sso.example.com").expect("url")
    }

    fn allowed() -> Vec<String> {
        vec!["app.example.com".to_owned()]
    }

    #[test]
    fn absolute_urls_only_to_listed_hosts_over_https() {
        let a = allowed();
        assert_eq!(
            sanitize(Some("https://app.example.com/x?y=1"), &origin(), &a),
            "https://app.example.com/x?y=1"
        );
        assert_eq!(
            sanitize(Some("https://APP.example.com/"), &origin(), &a),
            "https://app.example.com/"
        );
        for bad in [
            "http://app.example.com/",
            "https://app.example.com.evil.example/",
            "https://evil.example/?app.example.com",
            "https://user:pw@app.example.com/",
            "https://evil.example\\@app.example.com/",
            "javascript://app.example.com/%0aalert(1)",
        ] {
            assert_eq!(sanitize(Some(bad), &origin(), &a), "/", "{bad}");
        }
        assert_eq!(
            sanitize(Some("https://app.example.com/"), &origin(), &[]),
            "/"
        );
    }

    #[test]
    fn relative_paths_are_kept() {
        assert_eq!(
            sanitize(Some("/app?x=1#top"), &origin(), &[]),
            "/app?x=1#top"
        );
        assert_eq!(sanitize(Some("/"), &origin(), &[]), "/");
        assert_eq!(sanitize(None, &origin(), &[]), "/");
    }

    #[test]
    fn open_redirect_tricks_fall_back_to_root() {
        for attack in [
            "https://evil.example/",
            "http://sso.example.com.evil.example/",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\r\n/evil.example",
            "/x\r\nSet-Cookie: a=b",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "evil.example",
            "/./\\/evil.example",
            "/.//evil.example",
            "/..//evil.example",
            "",
        ] {
            assert_eq!(
                sanitize(Some(attack), &origin(), &allowed()),
                "/",
                "{attack:?}"
            );
        }
    }

    #[test]
    fn encoded_slashes_stay_a_path_on_this_origin() {
        // The query layer has decoded once; what is left is a literal path segment.
        let out = sanitize(Some("/%2F%2Fevil.example"), &origin(), &[]);
        assert_eq!(out, "/%2F%2Fevil.example");
        let resolved = origin().join(&out).expect("join");
        assert_eq!(resolved.host_str(), Some("sso.example.com"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
        ))]
        #[test]
        fn whatever_comes_in_the_result_resolves_to_this_origin(candidate in ".{0,64}") {
            let out = sanitize(Some(&candidate), &origin(), &[]);
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.starts_with("//"));
            prop_assert!(!out.chars().any(char::is_control));
            let resolved = origin().join(&out).expect("a path joins");
            prop_assert_eq!(resolved.origin(), origin().origin());
        }

        #[test]
        fn slash_led_inputs_too(candidate in "[/\\\\.%a-z:@?#\t\n]{0,24}") {
            let out = sanitize(Some(&candidate), &origin(), &[]);
            let resolved = origin().join(&out).expect("a path joins");
            prop_assert_eq!(resolved.origin(), origin().origin());
            prop_assert!(!out.starts_with("//"));
        }
    }
}
