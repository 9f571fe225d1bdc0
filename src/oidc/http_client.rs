//! The one outbound HTTP client every IdP call goes through: connect and total timeouts, a
//! response size limit, no redirects, JSON only, and the current span's W3C `traceparent` when
//! traces are on.

use std::time::Duration;

use reqwest::{Response, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::config::HttpSettings;

/// Why a call to an IdP failed. Messages name no secret: they are logged and shown to admins.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("could not connect ({0})")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {status}{}", body_hint(.body))]
    Status { status: u16, body: String },
    #[error("answered with a redirect (HTTP {0}), which entrance does not follow")]
    Redirect(u16),
    #[error("answered with more than {0} bytes")]
    TooLarge(usize),
    #[error("answered with content type {0:?} instead of JSON")]
    NotJsonContentType(String),
    #[error("answered with invalid JSON ({0})")]
    InvalidJson(String),
    #[error("request failed ({0})")]
    Other(String),
}

fn body_hint(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A cheap-to-clone handle on the shared client and its limits.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
}

impl HttpClient {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (or their lower-case forms) are
    /// honoured: reqwest's builder reads them by default (its system proxy), no feature needed.
    pub fn new(settings: &HttpSettings) -> Result<HttpClient, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        // Added to the built-in roots, not instead of them: a corporate TLS-inspecting proxy
        // or a private-CA IdP works, and the public IdPs still do.
        for cert in &settings.extra_roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        let client = builder
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            // Following a redirect could send the code, verifier and secret somewhere else
            // (openidconnect-rs's docs warn about this): every redirect is an error.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("entrance/", env!("CARGO_PKG_VERSION")))
            .https_only(false)
            .build()?;
        Ok(HttpClient {
            client,
            timeout: settings.timeout,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET a JSON document (metadata, JWKS).
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let resp = traced(self.client.get(url))
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let (status, body) = self.read_json_body(resp).await?;
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::InvalidJson(e.to_string()))
    }

    /// Sends a request and returns its status and JSON body, whatever the status: the token
    /// endpoint's errors are JSON too and the caller reads them.
    pub async fn send_for_json(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), FetchError> {
        let (status, _, body) = self.send_for_json_with_headers(req).await?;
        Ok((status, body))
    }

    /// [`Self::send_for_json`] with the response headers too: Microsoft Graph's 429 says when
    /// to retry in `Retry-After` (docs/reference/ENTRA-2.md §5).
    pub(crate) async fn send_for_json_with_headers(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, header::HeaderMap, Vec<u8>), FetchError> {
        let resp = traced(req)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let headers = resp.headers().clone();
        let (status, body) = self.read_json_body(resp).await?;
        Ok((status, headers, body))
    }

    async fn read_json_body(&self, resp: Response) -> Result<(StatusCode, Vec<u8>), FetchError> {
        let status = resp.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect(status.as_u16()));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = self.read_limited(resp).await?;
        // A non-JSON error page (a proxy's 502, say) is reported by its status, not its type.
        if status.is_success() && !content_type.contains("json") {
            return Err(FetchError::NotJsonContentType(content_type));
        }
        Ok((status, body))
    }

    /// Reads at most `max_response_bytes`, refusing early on a larger Content-Length: an IdP
    /// (or something pretending to be one) must not be able to exhaust memory.
    async fn read_limited(&self, mut resp: Response) -> Result<Vec<u8>, FetchError> {
        let limit = self.max_response_bytes;
        if resp.content_length().is_some_and(|len| len > limit as u64) {
            return Err(FetchError::TooLarge(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.map_err(e))? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn map_err(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout(self.timeout)
        } else if e.is_connect() {
            FetchError::Connect(root_cause(&e))
        } else {
            FetchError::Other(root_cause(&e))
        }
    }
}

/// The request with the current span's trace context (`traceparent`, W3C Trace Context §3),
/// so the IdP's or a proxy's own traces join the sign-in's; unchanged when traces are off.
fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::telemetry::outbound_headers() {
        Some(headers) => req.headers(headers),
        None => req,
    }
}

/// reqwest's top-level message is generic ("error sending request"); the root cause says what
/// happened ("Connection refused"). Neither contains request bodies or headers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The start of an error body, printable, for logs and admin pages.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}
