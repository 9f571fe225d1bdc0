//! Entra-shaped responses of the mock IdP: token-endpoint error bodies, the Microsoft-style
//! error and sign-out pages, the form_post page, the opt-in Continue page, and the small text
//! helpers they need.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `Content-Type` Entra uses for every JSON document.
pub(super) const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Entra's timestamp format in error bodies: `2026-01-01 00:00:00Z`.
pub(super) fn entra_timestamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A JSON response with Entra's content type and `Cache-Control: no-store` (token responses
/// must not be cached, RFC 6749 §5.1; Entra sends the same on errors).
pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The token-endpoint error body exactly as in `tests/fixtures/entra/token-response.error.json`:
/// `error_description` starts with `AADSTSnnnn: ` and ends with the trace/correlation/timestamp
/// trailer; `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri` beside it.
pub(super) fn token_error_body(error: &str, code: u32, text: &str) -> Value {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let timestamp = entra_timestamp();
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        // Only a string in the body (Entra's lookup page); the mock never contacts it.
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    })
}

/// A token-endpoint error response: 401 for `invalid_client`, as Entra answers, 400 otherwise.
pub(super) fn token_error(error: &str, code: u32, text: &str) -> Response {
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    json_response(status, &token_error_body(error, code, text))
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Entra's own error page, shown instead of redirecting when the client or the redirect URI
/// cannot be trusted (AADSTS50011, AADSTS700016, AADSTS900144 on /authorize). Status 400.
pub(super) fn error_page(code: u32, text: &str) -> Response {
    let request_id = uuid::Uuid::new_v4();
    let correlation_id = uuid::Uuid::new_v4();
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in to your account</title></head>\n\
         <body><h1>Sorry, but we're having trouble signing you in.</h1>\n\
         <p id=\"error\">AADSTS{code}: {text}</p>\n\
         <dl><dt>Request Id</dt><dd>{request_id}</dd><dt>Correlation Id</dt><dd>{correlation_id}</dd>\
         <dt>Timestamp</dt><dd>{ts}</dd></dl>\n\
         <p>Mock IdP (test tool): this page is not a redirect back to the application.</p>\n\
         </body></html>\n",
        text = html_escape(text),
        ts = entra_timestamp(),
    );
    html_response(StatusCode::BAD_REQUEST, html)
}

/// The page that carries a `response_mode=form_post` response: a form auto-submitted by an
/// inline script, with a submit button for browsers without JavaScript.
pub(super) fn form_post_page(action: &str, fields: &[(&str, &str)]) -> Response {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\" />\n",
                html_escape(k),
                html_escape(v)
            )
        })
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Working...</title></head>\n\
         <body>\n<form method=\"POST\" name=\"hiddenform\" action=\"{action}\">\n{inputs}\
         <noscript><p>Script is disabled. Click Submit to continue.</p>\
         <input type=\"submit\" value=\"Submit\" /></noscript>\n</form>\n\
         <script language=\"javascript\">document.forms[0].submit();</script>\n</body></html>\n",
        action = html_escape(action),
    );
    html_response(StatusCode::OK, html)
}

/// A stand-in for Entra's sign-in page ([`super::Behaviour::continue_page`]): one Continue
/// button in a form without an `action`, so it posts to the page's own address — the
/// authorize request with its query — adding `{field}=1`. No script.
pub fn continue_page(field: &str) -> Response {
    html_response(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in</title></head>\n\
             <body><h1>Sign in to Contoso</h1><p>Mock IdP (test tool): no password is asked.</p>\
             <form method=\"post\"><input type=\"hidden\" name=\"{}\" value=\"1\" />\
             <button type=\"submit\">Continue</button></form></body></html>\n",
            html_escape(field)
        ),
    )
}

/// The generic page Entra leaves the user on after sign-out without a (registered)
/// `post_logout_redirect_uri`.
pub(super) fn signed_out_page() -> Response {
    html_response(
        StatusCode::OK,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign out</title></head>\n\
         <body><h1>You signed out of your account</h1>\
         <p>It's a good idea to close all browser windows.</p>\
         <p>Mock IdP (test tool).</p></body></html>\n"
            .to_owned(),
    )
}

/// Form-urldecodes one component (`+` is a space, `%XX` a byte), as RFC 6749 §2.3.1 asks
/// for the parts of HTTP Basic client credentials. `None` on a malformed escape or non-UTF-8.
pub(super) fn form_urldecode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_urldecode_handles_plus_and_escapes() {
        assert_eq!(form_urldecode("a+b%2B%3D~").as_deref(), Some("a b+=~"));
        assert_eq!(form_urldecode("%zz"), None);
        assert_eq!(form_urldecode("%4"), None);
    }

    #[test]
    fn error_body_has_fixture_shape() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/entra/token-response.error.json"
        ))
        .expect("fixture is JSON");
        let body = token_error_body("invalid_client", 7000215, "Invalid client secret provided.");
        let keys = |v: &Value| {
            let mut k: Vec<String> = v
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        assert_eq!(keys(&body), keys(&fixture));
        let desc = body["error_description"].as_str().unwrap_or_default();
        assert!(desc.starts_with("AADSTS7000215: "));
        assert!(desc.contains("Trace ID: ") && desc.contains("Timestamp: "));
    }
}
