//! The few HTML pages entrance shows (error pages, the start page), escaped by construction
//! and served under a strict Content-Security-Policy.

use std::sync::OnceLock;

use base64::Engine;
use sha2::{Digest, Sha256};

/// The one stylesheet. `.button` makes a link look like the `<button>`s beside it;
/// `.secondary` is the quieter of two choices (Cancel); `.values`, `.field`, `.check` and
/// `.outcome` are the setup page's (`http::setup`).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.4rem}.admin{background:#f4f4f4;padding:.75rem;border-radius:4px;font-size:.9rem}\
.cid{color:#666;font-size:.8rem}\
button,.button{display:inline-block;font:inherit;font-size:1rem;line-height:1.4;padding:.45rem 1.1rem;\
border:1px solid #1f5fbf;border-radius:4px;background:#1f5fbf;color:#fff;text-decoration:none;cursor:pointer}\
button:hover,.button:hover{background:#174a96}\
.secondary{background:#fff;color:#1f5fbf}.secondary:hover{background:#eef3fb}\
.actions{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center}\
input[type=email]{font:inherit;padding:.4rem;min-width:16rem}\
h2{font-size:1.1rem;margin-top:2rem}code{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px;word-break:break-all}\
.values dt{font-weight:600;margin-top:.5rem}.values dd{margin:.2rem 0 0 0}\
.field label{display:block;font-weight:600}.field input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}\
.field .label{display:block;font-weight:600}.copy{margin-left:.5rem;padding:.1rem .6rem;font-size:.85rem}.field input[type=radio]{width:auto}\
.hint{display:block;color:#666;font-size:.85rem}\
.check{margin:.2rem 0 .8rem;padding:.4rem .6rem;border-left:4px solid #2e7d32;font-size:.9rem}\
.check.error,.outcome.error{border-left:4px solid #c62828;background:#fdecea}.check.warning{border-color:#ef6c00;background:#fff4e5}\
.outcome{padding:.6rem;border-left:4px solid #2e7d32;background:#edf7ed}";

/// The Content-Security-Policy of every response: nothing may load but our one inline style
/// (allowed by its hash), no framing (clickjacking), no `<base>` tricks.
pub(crate) fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; frame-ancestors 'none'"
        )
    })
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page. `body` must already be escaped HTML.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title),
    )
}

/// The script of the form_post relay page: submit its one form.
const RELAY_SCRIPT: &str = "document.forms[0].submit();";

/// The relay page's policy: the base policy plus exactly its one script, by hash.
pub(crate) fn relay_content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(RELAY_SCRIPT));
        format!(
            "{}; script-src 'sha256-{hash}'; form-action 'self'",
            content_security_policy()
        )
    })
}

/// The setup page's one script (issue 17): shows each `Copy` button (rendered `hidden`, so the
/// page without script shows only the values, as selectable text) and copies the text of the
/// element its `data-copy` names. Allowed by its hash alone ([`setup_content_security_policy`]).
pub(crate) const COPY_SCRIPT: &str = "for(const b of document.querySelectorAll('button[data-copy]')){\
const v=document.getElementById(b.dataset.copy);if(!v||!navigator.clipboard)continue;b.hidden=false;\
b.addEventListener('click',()=>navigator.clipboard.writeText(v.textContent.trim()).then(()=>{\
b.textContent='Copied';setTimeout(()=>{b.textContent='Copy'},2000)}))}";

/// The setup page's policy: the base policy plus exactly its copy script, by hash (CSP 3
/// §8.3, hash-source), computed from the script itself so the two cannot diverge.
pub(crate) fn setup_content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(COPY_SCRIPT));
        format!("{}; script-src 'sha256-{hash}'", content_security_policy())
    })
}

/// A `Copy` button for the element with id `target` (shown by [`COPY_SCRIPT`] only).
pub(crate) fn copy_button(target: &str) -> String {
    format!(
        "<button type=\"button\" class=\"copy secondary\" data-copy=\"{}\" hidden>Copy</button>",
        escape(target)
    )
}

/// Re-posts a form_post callback to ourselves. The IdP's cross-site POST arrives without the
/// `SameSite=Lax` session cookie; the same fields posted from our own page are same-site, so
/// the browser sends the cookie with them. Without script the user clicks Continue.
pub(crate) fn relay_page(fields: &[(&str, &str)]) -> String {
    let mut inputs = String::new();
    for (name, value) in fields {
        inputs.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        ));
    }
    page(
        "Signing in…",
        &format!(
            "<form method=\"post\" action=\"/login/callback\">{inputs}\
<p>Signing you in…</p><noscript><button type=\"submit\">Continue</button></noscript></form>\
<script>{RELAY_SCRIPT}</script>"
        ),
    )
}

pub(crate) struct ErrorPage<'a> {
    pub title: &'a str,
    pub user_message: &'a str,
    pub admin_message: Option<&'a str>,
    pub retry_href: Option<&'a str>,
    pub correlation_id: &'a str,
}

pub(crate) fn error_page(p: &ErrorPage<'_>) -> String {
    let mut body = format!(
        "<h1>{}</h1><p>{}</p>",
        escape(p.title),
        escape(p.user_message)
    );
    match p.retry_href {
        Some("/") => body
            .push_str("<p class=\"actions\"><a class=\"button\" href=\"/\">Sign in again</a></p>"),
        Some(href) => body.push_str(&format!(
            "<p class=\"actions\"><a class=\"button\" href=\"{}\">Sign in again</a>\
<a class=\"button secondary\" href=\"/\">Start page</a></p>",
            escape(href)
        )),
        // Every page has a way back, even where signing in again would not help.
        None => body.push_str("<p><a class=\"button secondary\" href=\"/\">Start page</a></p>"),
    }
    if let Some(admin) = p.admin_message {
        body.push_str(&format!(
            "<details class=\"admin\"><summary>For the administrator</summary><p>{}</p></details>",
            escape(admin)
        ));
    }
    body.push_str(&format!(
        "<p class=\"cid\">Reference: {}</p>",
        escape(p.correlation_id)
    ));
    page(p.title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_messages_is_escaped() {
        let html = error_page(&ErrorPage {
            title: "t",
            user_message: "<script>alert(1)</script>",
            admin_message: Some("\"><img src=x onerror=alert(1)>"),
            retry_href: Some("/login?connection=a&b=\"c\""),
            correlation_id: "abc",
        });
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("connection=a&amp;b=&quot;c&quot;"));
    }

    #[test]
    fn the_setup_policy_allows_exactly_the_copy_script() {
        let csp = setup_content_security_policy();
        assert!(csp.starts_with(content_security_policy()));
        // The hash of the script as served, computed here on its own (RFC 4648 base64).
        let hash = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(COPY_SCRIPT.as_bytes()));
        assert!(
            csp.ends_with(&format!("; script-src 'sha256-{hash}'")),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"));
        assert!(!COPY_SCRIPT.contains("</"), "cannot end its <script> early");
        assert!(copy_button("a\"b").contains("data-copy=\"a&quot;b\" hidden"));
    }

    #[test]
    fn csp_allows_only_the_inline_style_by_hash() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"));
    }
}
