//! Where a user may be sent after signing in: only a same-origin relative path, so `/login`
//! cannot be turned into an open redirect (RFC 9700 §4.11).

use url::Url;

/// Longest `return_to` kept; a longer one falls back to `/`.
const MAX_LEN: usize = 2048;

/// Returns a safe same-origin path (with query and fragment) for `candidate`, or `/`.
///
/// The candidate is resolved against the public origin the way a browser would resolve a
/// `Location` header, and is kept only if it stays on that origin. That covers the tricks
/// string checks miss: `//evil.example` and `/\evil.example` (protocol-relative; browsers read
/// `\` as `/`), `javascript:`, tabs and newlines that URL parsers silently drop, and dot
/// segments that collapse into `//`.
pub fn sanitize(candidate: Option<&str>, public_origin: &Url) -> String {
    candidate
        .and_then(|c| same_origin_path(c, public_origin))
        .unwrap_or_else(|| "/".to_owned())
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

    #[test]
    fn relative_paths_are_kept() {
        assert_eq!(sanitize(Some("/app?x=1#top"), &origin()), "/app?x=1#top");
        assert_eq!(sanitize(Some("/"), &origin()), "/");
        assert_eq!(sanitize(None, &origin()), "/");
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
            assert_eq!(sanitize(Some(attack), &origin()), "/", "{attack:?}");
        }
    }

    #[test]
    fn encoded_slashes_stay_a_path_on_this_origin() {
        // The query layer has decoded once; what is left is a literal path segment.
        let out = sanitize(Some("/%2F%2Fevil.example"), &origin());
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
            let out = sanitize(Some(&candidate), &origin());
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.starts_with("//"));
            prop_assert!(!out.chars().any(char::is_control));
            let resolved = origin().join(&out).expect("a path joins");
            prop_assert_eq!(resolved.origin(), origin().origin());
        }

        #[test]
        fn slash_led_inputs_too(candidate in "[/\\\\.%a-z:@?#\t\n]{0,24}") {
            let out = sanitize(Some(&candidate), &origin());
            let resolved = origin().join(&out).expect("a path joins");
            prop_assert_eq!(resolved.origin(), origin().origin());
            prop_assert!(!out.starts_with("//"));
        }
    }
}
