//! `GET /setup/{token}` and `POST /setup/{token}`: the page a customer's Entra admin opens from
//! a setup link (issue 17). It shows the exact values to register and the steps in the Entra
//! admin center's own words, then a form whose values are checked live by the setup doctor's
//! own code (`doctor::check_setup`, the checks of `entrance check --verify-secret`), each
//! failing line with its fix beside the field it concerns. Server-rendered; its one script
//! (allowed by hash, `pages::COPY_SCRIPT`) only adds Copy buttons beside the values.
//!
//! The credential is a client secret, or — recommended — a certificate entrance generates for
//! the link (`POST /setup/{token}/certificate`, `certificate::generate`): its private key is
//! sealed in the link's record at once and never leaves entrance; the certificate is offered
//! as `/setup/{token}/certificate.cer` (DER) and `.pem` to upload in Entra, with its thumbprint.
//!
//! Safety: the link's token is the only key (256 random bits, stored as a hash,
//! `session::setup_links`); a POST must come from the page itself (the sign-out Origin rule,
//! `logout::from_our_own_page`, and the link's own form token); the routes are rate-limited
//! per client (`limits`); every value is bounded; the secret is never written back into the
//! page; metadata is fetched only from Entra's hosts or a host the operator configured.

use axum::{
    Extension,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use url::Url;

use super::{
    AppState, CorrelationId,
    limits::ClientIp,
    logout,
    pages::{COPY_SCRIPT, copy_button, escape},
};
use crate::{
    certificate::{self, AssertionAlg, CertificateCredential, Thumbprints},
    config::{self, ConfigError, SetupValues},
    doctor::{self, Check, Status},
    entra,
    http::error::AppError,
    session::{
        sealed,
        setup_links::{
            self, ActivateError, Activated, Found, LinkCertificate, SetupLink, StoredConnection,
            StoredCredential, Unusable,
        },
    },
};

/// The routes' prefix; the rest of the path is the link's token, which no log line shows
/// (`http::edge::loggable_path`).
pub(crate) const PREFIX: &str = "/setup/";

/// Bounds on what the form takes: generous for real values, small for a store or a log.
const MAX_TENANT: usize = 2048;
const MAX_CLIENT_ID: usize = 128;
const MAX_SECRET: usize = 1024;
const MAX_DATE: usize = 40;

/// The form as posted. Its `Debug` never shows the secret.
#[derive(Default, Deserialize)]
pub(super) struct SetupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    secret_expires: String,
    /// `certificate` (the link's generated certificate) or `secret` (the default).
    #[serde(default)]
    credential: String,
}

impl SetupForm {
    fn uses_certificate(&self) -> bool {
        self.credential == CREDENTIAL_CERTIFICATE
    }
}

const CREDENTIAL_CERTIFICATE: &str = "certificate";

impl std::fmt::Debug for SetupForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupForm")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("secret_expires", &self.secret_expires)
            .field("credential", &self.credential)
            .finish()
    }
}

/// The form field a check line belongs beside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Tenant,
    ClientId,
    Secret,
    Expiry,
    /// The generated certificate (the credential choice's first option).
    Certificate,
    /// Not one field's: shown above the form.
    General,
}

impl Field {
    /// Where the doctor's checks are shown.
    fn of_check(name: &str, certificate: bool) -> Field {
        match name {
            doctor::METADATA | doctor::ISSUER | doctor::JWKS => Field::Tenant,
            doctor::CLIENT_ID => Field::ClientId,
            doctor::CERTIFICATE | doctor::CERTIFICATE_EXPIRY => Field::Certificate,
            doctor::CREDENTIALS if certificate => Field::Certificate,
            doctor::SECRET | doctor::CREDENTIALS => Field::Secret,
            doctor::SECRET_EXPIRY => Field::Expiry,
            _ => Field::General,
        }
    }

    /// Where a configuration problem with this table key is shown.
    fn of_key(key: &str) -> Field {
        match key {
            "metadata_url" | "home_tenant" | "allowed_tenants" => Field::Tenant,
            "client_id" => Field::ClientId,
            "client_secret" => Field::Secret,
            "client_secret_expires_at" => Field::Expiry,
            _ => Field::General,
        }
    }
}

/// What the page says about a submission: one line per check, each with its field.
#[derive(Default)]
struct Feedback {
    lines: Vec<(Field, Check)>,
}

impl Feedback {
    fn error(&mut self, field: Field, name: &'static str, message: String, fix: &str) {
        self.lines.push((
            field,
            Check {
                name,
                status: Status::Error,
                message,
                fix: Some(fix.to_owned()),
            },
        ));
    }

    fn has_errors(&self) -> bool {
        self.lines.iter().any(|(_, c)| c.status == Status::Error)
    }
}

/// The link a token opens, if it can be used now, with the stored connection it renews (if
/// any); otherwise the error page that says why.
async fn open(
    state: &AppState,
    token: &str,
) -> Result<(SetupLink, Option<StoredConnection>), AppError> {
    match setup_links::find(&state.store, token).await? {
        Found::Unknown => Err(AppError::SetupLink(Unusable::Unknown)),
        Found::Link { link, renews } => Ok((
            (*link)
                .usable(state.clock.now_unix())
                .map_err(AppError::SetupLink)?,
            renews.map(|c| *c),
        )),
    }
}

/// `GET /setup/{token}`: the values to register, the steps, and the empty form.
pub(super) async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let (link, rotating) = open(&state, &token).await?;
    // A rotation keeps the app registration: its values are filled in.
    let form = match &rotating {
        None => SetupForm::default(),
        Some(c) => SetupForm {
            tenant: c.metadata_url.clone(),
            client_id: c.client_id.clone(),
            ..SetupForm::default()
        },
    };
    Ok(with_copy_script(
        Html(render(
            &state,
            &token,
            &link,
            rotating.as_ref(),
            &form,
            &Feedback::default(),
        ))
        .into_response(),
    ))
}

/// The setup page's policy, which allows its one copy script by hash (`pages`).
fn with_copy_script(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::pages::setup_content_security_policy()),
    );
    res
}

/// `POST /setup/{token}`: checks the values with the doctor and shows the page again with each
/// line beside its field, the values kept (the secret never).
pub(super) async fn submit(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (link, rotating) = open(&state, &token).await?;
    let form: SetupForm = from_own_page(&state, &link, &headers, body)?;
    let (mut feedback, metadata_url) = check(&state, &link, rotating.as_ref(), &form).await;
    if !feedback.has_errors()
        && let Some(metadata_url) = metadata_url
        && let Some((activated, page)) =
            activate(&state, &link, &form, metadata_url, &mut feedback).await?
    {
        let (event, message) = match activated {
            Activated::Created => ("setup_completed", "connection created through a setup link"),
            Activated::Rotated => (
                "setup_rotated",
                "a setup link added a new credential to a connection; the previous one is kept until the first sign-in with the new",
            ),
        };
        tracing::info!(
            target: "entrance::audit",
            event,
            link = %link.id,
            connection = %link.connection,
            name = %link.name,
            link_created_at = link.created_at,
            link_created_by = link.created_by.as_deref().unwrap_or(""),
            credential = if form.uses_certificate() { "certificate" } else { "secret" },
            client_ip = %client_ip,
            correlation_id = %cid.0,
            "{message}"
        );
        return Ok(Html(page).into_response());
    }
    tracing::info!(
        target: "entrance::audit",
        event = "setup_checked",
        link = %link.id,
        connection = %link.connection,
        passed = !feedback.has_errors(),
        client_ip = %client_ip,
        correlation_id = %cid.0,
        "setup values checked"
    );
    let status = if feedback.has_errors() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(with_copy_script(
        (
            status,
            Html(render(
                &state,
                &token,
                &link,
                rotating.as_ref(),
                &form,
                &feedback,
            )),
        )
            .into_response(),
    ))
}

/// The Origin rule of sign-out (`logout::from_our_own_page`), which every setup POST passes.
fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if logout::from_our_own_page(
        headers
            .get(logout::SEC_FETCH_SITE)
            .map(HeaderValue::as_bytes),
        headers.get(header::ORIGIN).map(HeaderValue::as_bytes),
        &state.config.public_origin(),
    ) {
        Ok(())
    } else {
        Err(AppError::SetupForm)
    }
}

/// A POST's form, if it came from the link's own page: the Origin rule of sign-out
/// (`logout::from_our_own_page`), then the link's form token.
fn from_own_page<T: serde::de::DeserializeOwned + HasCsrf>(
    state: &AppState,
    link: &SetupLink,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AppError> {
    same_origin(state, headers)?;
    let form: T = super::form_body(headers, body)?;
    if !link.csrf_matches(form.csrf()) {
        return Err(AppError::SetupForm);
    }
    Ok(form)
}

trait HasCsrf {
    fn csrf(&self) -> &str;
}

impl HasCsrf for SetupForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The certificate button's form: its token only.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl HasCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /setup/{token}/certificate`: generates the link's certificate (RSA 2048, self-signed,
/// `certificate::generate`, on a blocking thread) unless it has one, seals its private key
/// under `ENTRANCE_DATA_KEY` into the link's record at once, and sends the admin back to the
/// page, where the downloads and the thumbprint now are (POST/redirect/GET).
pub(super) async fn generate_certificate(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    client_ip: ClientIp,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (link, _) = open(&state, &token).await?;
    let _: CsrfForm = from_own_page(&state, &link, &headers, body)?;
    if link.certificate.is_none() {
        let Some(key) = state.config.data_key.clone() else {
            return Err(AppError::SetupLinkConflict(
                "this entrance cannot keep a generated certificate (it has no ENTRANCE_DATA_KEY); use a client secret, or ask whoever sent you this link".to_owned(),
            ));
        };
        let now_unix = state.clock.now_unix();
        let now = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(now_unix).unwrap_or(0));
        let connection = link.connection.clone();
        let generated = tokio::task::spawn_blocking(move || {
            let g = certificate::generate(&format!("entrance {connection}"), now)
                .map_err(|e| e.to_string())?;
            let private_key_sealed =
                sealed::seal(&key, &g.private_key_pem, &connection).map_err(|e| e.to_string())?;
            Ok::<_, String>(LinkCertificate {
                certificate_pem: g.certificate_pem,
                private_key_sealed,
            })
        })
        .await
        .map_err(|e| AppError::Internal(format!("generating a certificate: {e}")))?
        .map_err(|e| AppError::Internal(format!("generating a certificate: {e}")))?;
        let kept = match setup_links::attach_certificate(
            &state.store,
            &link.id,
            generated,
            now_unix,
        )
        .await
        {
            Ok(kept) => kept,
            Err(ActivateError::Unusable(u)) => return Err(AppError::SetupLink(u)),
            Err(ActivateError::Session(e)) => return Err(e.into()),
            Err(e @ ActivateError::Taken(_)) => return Err(AppError::Internal(e.to_string())),
        };
        tracing::info!(
            target: "entrance::audit",
            event = "setup_certificate_generated",
            link = %link.id,
            connection = %link.connection,
            thumbprint = %thumbprint(&kept).unwrap_or_default(),
            client_ip = %client_ip,
            correlation_id = %cid.0,
            "certificate generated for a setup link"
        );
    }
    let location = format!("{PREFIX}{token}#certificate");
    Ok((
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(|e| AppError::Internal(e.to_string()))?,
        )],
    )
        .into_response())
}

/// The SHA-1 thumbprint in hex, as the Entra portal lists it under Certificates.
fn thumbprint(cert: &LinkCertificate) -> Option<String> {
    certificate::certificate_der(&cert.certificate_pem)
        .ok()
        .map(|der| Thumbprints::of(&der).sha1_hex)
}

/// `GET /setup/{token}/certificate.cer`: the link's certificate as DER, the form Entra's
/// Upload certificate takes (with `.pem` and `.crt`).
pub(super) async fn certificate_cer(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    download(&state, &token, false).await
}

/// `GET /setup/{token}/certificate.pem`: the same certificate as PEM.
pub(super) async fn certificate_pem(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    download(&state, &token, true).await
}

async fn download(state: &AppState, token: &str, pem: bool) -> Result<Response, AppError> {
    let (link, _) = open(state, token).await?;
    let Some(cert) = &link.certificate else {
        return Err(AppError::SetupLinkConflict(
            "no certificate was generated for this link yet: choose \"Generate a certificate\" on the setup page".to_owned(),
        ));
    };
    let name: String = link
        .connection
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let (body, content_type, ext) = if pem {
        (
            cert.certificate_pem.clone().into_bytes(),
            "application/x-pem-file",
            "pem",
        )
    } else {
        (
            certificate::certificate_der(&cert.certificate_pem)
                .map_err(|e| AppError::Internal(e.to_string()))?,
            // RFC 2585 §4.1.
            "application/pkix-cert",
            "cer",
        )
    };
    let disposition = format!("attachment; filename=\"entrance-{name}.{ext}\"");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .map_err(|e| AppError::Internal(e.to_string()))?,
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// Keeps the checked connection (its secret sealed under `ENTRANCE_DATA_KEY`) and spends the
/// link, in one store write (`setup_links::activate`); every replica applies it within
/// `rotation::STORED_POLL`. Returns the page that says so, or `None` with the reason added to
/// `feedback` when it cannot be kept.
async fn activate(
    state: &AppState,
    link: &SetupLink,
    form: &SetupForm,
    metadata_url: String,
    feedback: &mut Feedback,
) -> Result<Option<(Activated, String)>, AppError> {
    let Some(key) = &state.config.data_key else {
        feedback.error(
            Field::General,
            ACTIVATION,
            "every check passed, but this entrance cannot keep the connection: it has no key to encrypt the client secret with (ENTRANCE_DATA_KEY)".to_owned(),
            "ask whoever sent you this link to set ENTRANCE_DATA_KEY; then submit again (this link stays valid)",
        );
        return Ok(None);
    };
    // A certificate's key was sealed when it was generated (under the connection id, the
    // associated data the connection opens it with); a secret is sealed now.
    let credential = match (form.uses_certificate(), &link.certificate) {
        (true, Some(cert)) => StoredCredential {
            client_secret_sealed: String::new(),
            client_secret_expires_at: String::new(),
            certificate: Some((**cert).clone()),
        },
        _ => {
            let secret = secrecy::SecretString::from(form.client_secret.trim().to_owned());
            let sealed = sealed::seal(key, &secret, &link.connection)
                .map_err(|e| AppError::Internal(format!("sealing the client secret: {e}")))?;
            StoredCredential {
                client_secret_sealed: sealed,
                client_secret_expires_at: form.secret_expires.trim().to_owned(),
                certificate: None,
            }
        }
    };
    let stored = StoredConnection {
        id: link.connection.clone(),
        name: link.name.clone(),
        metadata_url,
        client_id: form.client_id.trim().to_owned(),
        credential,
        previous: None,
        created_at: state.clock.now_unix(),
        link: link.id.clone(),
    };
    let reserved: Vec<String> = state
        .config
        .connections
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let (grant, grant_sha256) = setup_links::new_test_grant();
    let activated = match setup_links::activate(
        &state.store,
        &link.id,
        stored,
        &reserved,
        grant_sha256,
        state.clock.now_unix(),
    )
    .await
    {
        Ok(activated) => activated,
        Err(ActivateError::Unusable(u)) => return Err(AppError::SetupLink(u)),
        Err(ActivateError::Taken(id)) => {
            return Err(AppError::SetupLinkConflict(format!(
                "a connection with the id {id:?} exists already; ask whoever sent you this link for a new one"
            )));
        }
        Err(ActivateError::Session(e)) => return Err(e.into()),
    };
    // This replica applies it at its next poll and fetches the tenant's metadata; the page
    // waits for that (a bounded time), so its Sign in button works at once — and, after a
    // rotation, signs in with the new credential (which then retires the previous one).
    for _ in 0..ACTIVATION_WAIT_STEPS {
        if state.connection(&link.connection).is_ok_and(|c| {
            c.provider().is_ok()
                && (activated == Activated::Created || c.config.previous_credential.is_some())
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let name = escape(&link.name);
    let mut body = match activated {
        Activated::Created => format!(
            "<h1>Sign-in for {name} is set up</h1>\
<p class=\"outcome ok\" role=\"status\">Every check passed and the connection is saved. It is live \
on every server within a few seconds; this setup link is now used up.</p>"
        ),
        Activated::Rotated => format!(
            "<h1>The new credential for {name} is saved</h1>\
<p class=\"outcome ok\" role=\"status\">Every check passed. The new credential is used from now \
on, on every server within a few seconds; the previous one is still tried after it until the first \
sign-in with the new one, and then no longer. After that sign-in (the test below will do), delete \
the previous certificate or secret in Microsoft Entra (Certificates &amp; secrets). This setup link \
is now used up.</p>"
        ),
    };
    body.push_str(&format!(
        "<p class=\"actions\"><a class=\"button\" href=\"/login?connection={id}\">Sign in with {name}</a></p>",
        id = escape(&super::urlencode(&link.connection)),
    ));
    body.push_str(&format!(
        "<h2>Test sign-in</h2><p>Sign in once through the new connection without signing in \
to any application: the page after shows what entrance received and the headers applications \
will get. Works for {minutes} minutes.</p>\
<form method=\"post\" action=\"{TEST_PATH}\" class=\"actions\">\
<input type=\"hidden\" name=\"link\" value=\"{link_id}\">\
<input type=\"hidden\" name=\"grant\" value=\"{grant}\">\
<button type=\"submit\" class=\"secondary\">Test sign-in</button></form>",
        minutes = setup_links::TEST_GRANT_LIFETIME / 60,
        link_id = escape(&link.id),
        grant = escape(&grant),
    ));
    body.push_str(&if_microsoft_shows(&state.config.redirect_uri()));
    body.push_str("<h2>What was checked</h2>");
    for field in [
        Field::General,
        Field::Tenant,
        Field::ClientId,
        Field::Certificate,
        Field::Secret,
        Field::Expiry,
    ] {
        body.push_str(&lines_for(feedback, field));
    }
    let title = match activated {
        Activated::Created => format!("Sign-in for {} is set up", link.name),
        Activated::Rotated => format!("The new credential for {} is saved", link.name),
    };
    Ok(Some((activated, super::pages::page(&title, &body))))
}

/// Where the done page's Test sign-in posts.
pub(crate) const TEST_PATH: &str = "/setup/test";

/// The Test sign-in button's form.
#[derive(Deserialize)]
pub(super) struct TestForm {
    #[serde(default)]
    link: String,
    #[serde(default)]
    grant: String,
}

/// `POST /setup/test`: the done page's Test sign-in. The link is spent by then, so the grant
/// the done page holds (random, kept hashed in the link's record, good for
/// `TEST_GRANT_LIFETIME`) authorises it, with the Origin rule of every setup POST. Starts a
/// login through the new connection marked as a test (`PendingLogin::test_of_link`), which the
/// callback finishes with [`test_result_page`] instead of a session.
pub(super) async fn test_sign_in(
    State(state): State<AppState>,
    session: tower_sessions::Session,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    same_origin(&state, &headers)?;
    let form: TestForm = super::form_body(&headers, body)?;
    let link = setup_links::by_id(&state.store, &form.link)
        .await?
        .filter(|l| l.test_grant_matches(&form.grant, state.clock.now_unix()))
        .ok_or(AppError::SetupForm)?;
    let conn = state.connection(&link.connection)?;
    super::login::start(
        &state,
        &session,
        &conn,
        "/".to_owned(),
        None,
        None,
        Some(link.id),
    )
    .await
}

/// What a test sign-in's callback shows instead of signing in: the claims entrance received,
/// and the headers `/auth` would send applications (`auth::identity_header_map`).
pub(super) fn test_result_page(state: &AppState, id: &crate::oidc::identity::Identity) -> Response {
    let mut body = "<h1>Test sign-in worked</h1>\
<p class=\"outcome ok\" role=\"status\">Microsoft Entra signed you in through the new \
connection. No application session was created: you are not signed in to anything.</p>\
<h2>What entrance received</h2><dl class=\"values\">"
        .to_owned();
    let groups = if id.groups_overage {
        "overage: more groups than fit in a token (read from Microsoft Graph when configured)"
            .to_owned()
    } else {
        id.groups.join(", ")
    };
    for (label, value) in [
        ("Name", id.name.clone().unwrap_or_default()),
        ("Email", id.email.clone().unwrap_or_default()),
        ("Tenant (tid)", id.tid.clone().unwrap_or_default()),
        ("Object ID (oid)", id.oid.clone().unwrap_or_default()),
        ("Groups", groups),
        ("Roles", id.roles.join(", ")),
    ] {
        body.push_str(&format!(
            "<dt>{label}</dt><dd>{}</dd>",
            if value.is_empty() {
                "—".to_owned()
            } else {
                escape(&value)
            }
        ));
    }
    body.push_str("</dl><h2>Headers applications will get</h2><dl class=\"values\">");
    for (name, value) in &super::auth::identity_header_map(state, id) {
        body.push_str(&format!(
            "<dt>{}</dt><dd><code>{}</code></dd>",
            escape(name.as_str()),
            escape(&String::from_utf8_lossy(value.as_bytes()))
        ));
    }
    body.push_str("</dl>");
    Html(super::pages::page("Test sign-in worked", &body)).into_response()
}

/// A test sign-in the IdP answered with an error: the code's fix from the AADSTS table,
/// with the exact Redirect URI for AADSTS50011.
pub(super) fn test_error_page(state: &AppState, error: &str, description: &str) -> Response {
    let mut body = format!(
        "<h1>Test sign-in failed</h1>\
<p class=\"outcome error\" role=\"alert\">Microsoft Entra answered: {}: {}</p>",
        escape(error),
        escape(description)
    );
    if let Some(row) = entra::aadsts_code(description).and_then(entra::aadsts) {
        body.push_str(&format!(
            "<p class=\"check error\" data-check=\"aadsts\"><strong>AADSTS{}</strong>: {}<br>Fix: {}",
            row.code,
            escape(&row.meaning),
            escape(&row.fix)
        ));
        if row.code == 50011 {
            body.push_str(&format!(
                " The Redirect URI to register is exactly <code>{}</code>.",
                escape(&state.config.redirect_uri())
            ));
        }
        body.push_str("</p>");
    }
    body.push_str("<p>Fix it in the Microsoft Entra admin center, then go back to the setup page and choose Test sign-in again.</p>");
    (
        StatusCode::BAD_GATEWAY,
        Html(super::pages::page("Test sign-in failed", &body)),
    )
        .into_response()
}

/// What to do if Microsoft shows one of the codes a first sign-in meets. Entra shows
/// AADSTS50011 and AADSTS700016 on its own page without sending the browser back (the mock
/// does too, `mock-idp/src/entra.rs` `error_page`), so the page says it before the click.
/// The fixes are the AADSTS table's (`entra::aadsts`).
fn if_microsoft_shows(redirect_uri: &str) -> String {
    let mut out = "<h2>If Microsoft shows an error code</h2><dl class=\"values\">".to_owned();
    for code in [50011, 700016, 50105, 65001] {
        let Some(row) = entra::aadsts(code) else {
            continue;
        };
        let exact = if code == 50011 {
            format!(
                " The Redirect URI to register (platform Web) is exactly <code>{}</code>.",
                escape(redirect_uri)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<dt>AADSTS{code}</dt><dd>{fix}{exact}</dd>",
            fix = escape(&row.fix),
        ));
    }
    out.push_str("</dl>");
    out
}

/// How long the done page waits for the new connection to be ready here, in 100 ms steps
/// (`rotation::STORED_POLL`, then a metadata and key fetch).
const ACTIVATION_WAIT_STEPS: usize = 50;

/// The line name of a setup that passed every check but could not be kept.
const ACTIVATION: &str = "activation";

/// Every check on the submitted values: the form's own bounds, then the connection's
/// validation (`config::setup_connection`), then the doctor's live checks. Also returns the
/// metadata URL the tenant field named, when it did.
async fn check(
    state: &AppState,
    link: &SetupLink,
    rotating: Option<&StoredConnection>,
    form: &SetupForm,
) -> (Feedback, Option<String>) {
    let mut feedback = Feedback::default();
    let certificate = form.uses_certificate();
    let mut bounds = vec![
        (Field::Tenant, "tenant", &form.tenant, MAX_TENANT),
        (Field::ClientId, "client_id", &form.client_id, MAX_CLIENT_ID),
    ];
    // With the certificate chosen, whatever is in the secret's fields is ignored.
    if !certificate {
        bounds.push((Field::Secret, "secret", &form.client_secret, MAX_SECRET));
        bounds.push((
            Field::Expiry,
            "secret_expiry",
            &form.secret_expires,
            MAX_DATE,
        ));
    }
    for (field, name, value, max) in bounds {
        if value.len() > max {
            feedback.error(
                field,
                name,
                format!(
                    "this value is {} characters long; at most {max} are taken",
                    value.len()
                ),
                "paste only the value itself",
            );
        } else if value.chars().any(char::is_control) {
            feedback.error(
                field,
                name,
                "this value holds control characters (a line break, a tab)".to_owned(),
                "paste only the value itself, on one line",
            );
        }
    }
    let credential = if certificate {
        match link_credential(state, link) {
            Ok(cred) => Some(cred),
            Err((message, fix)) => {
                feedback.error(Field::Certificate, doctor::CERTIFICATE, message, fix);
                None
            }
        }
    } else {
        None
    };
    if !certificate && form.secret_expires.trim().is_empty() {
        feedback.error(
            Field::Expiry,
            doctor::SECRET_EXPIRY,
            "the secret's expiry date is missing".to_owned(),
            "enter the date in the Expires column beside the secret (Certificates & secrets → Client secrets), so the secret can be renewed in time",
        );
    }
    let metadata_url = match metadata_url(state, &form.tenant) {
        Ok(url) => url,
        Err((message, fix)) => {
            feedback.error(Field::Tenant, doctor::METADATA, message, fix);
            None
        }
    };
    // A rotation adds a credential to the same app registration; another registration (or
    // tenant) would be another connection, with its users' sessions and ids.
    if let (Some(current), Some(url)) = (rotating, &metadata_url) {
        if *url != current.metadata_url {
            feedback.error(
                Field::Tenant,
                doctor::METADATA,
                format!(
                    "this link adds a credential to the connection of tenant {}, not another tenant",
                    current.metadata_url
                ),
                "enter the tenant the connection uses (filled in when the page opens); for another tenant, ask whoever sent you this link for a link to a new connection",
            );
        }
        if form.client_id.trim() != current.client_id {
            feedback.error(
                Field::ClientId,
                doctor::CLIENT_ID,
                format!(
                    "this link adds a credential to the app registration {}, not another one",
                    current.client_id
                ),
                "add the new certificate or secret to that app registration (Certificates & secrets) and keep its Application (client) ID here",
            );
        }
    }
    if feedback.has_errors() {
        return (feedback, None);
    }
    let Some(metadata_url) = metadata_url else {
        return (feedback, None);
    };
    let values = SetupValues {
        id: &link.connection,
        name: &link.name,
        metadata_url: &metadata_url,
        client_id: form.client_id.trim(),
        client_secret: &form.client_secret,
        client_secret_expires_at: &form.secret_expires,
        certificate: credential,
    };
    let (conn, secrets) = match config::setup_connection(&values) {
        Ok(c) => c,
        Err(ConfigError::Invalid { key, problem, fix }) => {
            let field = Field::of_key(&key);
            feedback.error(field, doctor::METADATA, problem, &fix);
            return (feedback, None);
        }
        Err(e) => {
            feedback.error(
                Field::General,
                doctor::METADATA,
                e.to_string(),
                "check every field",
            );
            return (feedback, None);
        }
    };
    let now = time::OffsetDateTime::from_unix_timestamp(state.clock.now_unix())
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let report = doctor::check_setup(
        &conn,
        &secrets,
        &state.config.public_url,
        &state.config.redirect_uri(),
        &state.http,
        now,
    )
    .await;
    feedback.lines.extend(
        report
            .checks
            .into_iter()
            .map(|c| (Field::of_check(c.name, certificate), c)),
    );
    (feedback, Some(metadata_url))
}

type Refusal = (String, &'static str);

/// The link's generated certificate with its key opened, for the live check; or why the
/// certificate cannot be used (none generated yet, no key to open it with).
fn link_credential(
    state: &AppState,
    link: &SetupLink,
) -> Result<std::sync::Arc<CertificateCredential>, Refusal> {
    let Some(cert) = &link.certificate else {
        return Err((
            "no certificate was generated for this link yet".to_owned(),
            "choose \"Generate a certificate\" above, upload it in Entra, then submit again",
        ));
    };
    let Some(key) = &state.config.data_key else {
        return Err((
            "this entrance has no key to open the certificate's private key with (ENTRANCE_DATA_KEY)".to_owned(),
            "ask whoever sent you this link to set ENTRANCE_DATA_KEY, or use a client secret",
        ));
    };
    let unusable = |e: &dyn std::fmt::Display| {
        tracing::error!(link = %link.id, error = %e, "a setup link's generated certificate does not open");
        (
            "the generated certificate cannot be used".to_owned(),
            "ask whoever sent you this link for a new one",
        )
    };
    let private_key =
        sealed::open(key, &cert.private_key_sealed, &link.connection).map_err(|e| unusable(&e))?;
    CertificateCredential::from_pem(
        cert.certificate_pem.as_bytes(),
        private_key.expose_secret().as_bytes(),
        AssertionAlg::Ps256,
    )
    .map(std::sync::Arc::new)
    .map_err(|e| unusable(&e))
}

const TENANT_FIX: &str = "paste the Directory (tenant) ID from the app registration's Overview page (a GUID), or the \"OpenID Connect metadata document\" URL from its Endpoints blade";

/// The metadata URL the tenant field names: an Entra tenant (GUID or domain), or a metadata
/// URL on Entra's hosts or on a host a configured connection already uses — never any other
/// host, so a setup link cannot make entrance call addresses inside the operator's network.
fn metadata_url(state: &AppState, tenant: &str) -> Result<Option<String>, Refusal> {
    let tenant = tenant.trim();
    if tenant.is_empty() {
        return Err((
            "the Directory (tenant) ID is missing".to_owned(),
            TENANT_FIX,
        ));
    }
    if !tenant.contains("://") {
        return entra::tenant_metadata_url(tenant).map(Some).ok_or_else(|| {
            (
                format!("{tenant:?} is neither a Directory (tenant) ID nor a domain"),
                TENANT_FIX,
            )
        });
    }
    let url =
        Url::parse(tenant).map_err(|e| (format!("{tenant:?} is not a URL ({e})"), TENANT_FIX))?;
    let same_host = |other: &Url| {
        other.host_str() == url.host_str()
            && other.port_or_known_default() == url.port_or_known_default()
            && other.scheme() == url.scheme()
    };
    let configured = state
        .connections
        .load()
        .iter()
        .any(|c| same_host(&c.config.metadata_url));
    if entra::is_entra_url(&url) || configured {
        Ok(Some(tenant.to_owned()))
    } else {
        Err((
            format!(
                "{} is not a Microsoft Entra sign-in host",
                url.host_str().unwrap_or("this URL's host")
            ),
            "paste the \"OpenID Connect metadata document\" URL from the app registration's Endpoints blade (https://login.microsoftonline.com/…), or just the Directory (tenant) ID",
        ))
    }
}

/// The whole page: the values to register, the steps, the form with each field's lines.
fn render(
    state: &AppState,
    token: &str,
    link: &SetupLink,
    rotating: Option<&StoredConnection>,
    form: &SetupForm,
    feedback: &Feedback,
) -> String {
    let origin = state.config.public_origin();
    let redirect_uri = state.config.redirect_uri();
    let front_channel = format!("{origin}/logout/frontchannel");
    let name = escape(&link.name);
    let expires = time::OffsetDateTime::from_unix_timestamp(link.expires_at)
        .map(|t| t.date().to_string())
        .unwrap_or_default();

    let (h1, mut body) = match rotating {
        None => (
            format!("Set up sign-in for {}", link.name),
            format!(
                "<h1>Set up sign-in for {name}</h1>\
<p>This page connects <strong>{name}</strong>'s Microsoft Entra ID to single sign-on. It takes a \
Microsoft Entra administrator (the <em>Application Developer</em> role or higher) about ten \
minutes. The link works until {expires} and only once.</p>"
            ),
        ),
        Some(current) => (
            format!("A new credential for {}", link.name),
            format!(
                "<h1>A new credential for {name}</h1>\
<p class=\"outcome\" role=\"status\">Sign-in for <strong>{name}</strong> is set up already, with \
the app registration <code>{client_id}</code>. This page adds a new {kind} to it: sign-ins go on \
with the current one until the new one is checked and saved, and the current one is removed from \
entrance after the first sign-in with the new. Keep the Redirect URI and the tenant as they are; \
skip to step 2. The link works until {expires} and only once.</p>",
                client_id = escape(&current.client_id),
                kind = "certificate (recommended) or client secret",
            ),
        ),
    };
    body.push_str(&summary(feedback));
    body.push_str(&format!(
        "<h2>1. Register the application</h2>\
<p>Copy these values exactly:</p>\
<dl class=\"values\">\
<dt>Redirect URI (platform <strong>Web</strong>)</dt><dd><code id=\"redirect_uri\">{redirect}</code>{copy_redirect}</dd>\
<dt>Front-channel logout URL</dt><dd><code id=\"front_channel_logout_url\">{front}</code>{copy_front}</dd>\
<dt>Supported account types</dt><dd>Accounts in this organizational directory only (Single tenant)</dd>\
</dl>\
<ol>\
<li>In the <strong>Microsoft Entra admin center</strong>, open <strong>Identity → Applications → \
App registrations</strong> and choose <strong>New registration</strong>.</li>\
<li><strong>Name</strong>: anything you recognise. <strong>Supported account types</strong>: \
<em>Accounts in this organizational directory only</em>. <strong>Redirect URI</strong>: select \
platform <strong>Web</strong> (not <em>Single-page application</em>) and paste the Redirect URI \
above. Choose <strong>Register</strong>.</li>\
<li>Open <strong>Authentication</strong>, paste the Front-channel logout URL above into \
<strong>Front-channel logout URL</strong>, and choose <strong>Save</strong>.</li>\
<li>Give it a credential: the certificate below (recommended), or a client secret.</li>\
<li>On the <strong>Overview</strong> page, copy the <strong>Application (client) ID</strong> and \
the <strong>Directory (tenant) ID</strong>.</li>\
</ol>",
        redirect = escape(&redirect_uri),
        front = escape(&front_channel),
        copy_redirect = copy_button("redirect_uri"),
        copy_front = copy_button("front_channel_logout_url"),
    ));
    body.push_str(&credential_section(state, token, link));
    body.push_str(&format!(
        "<h2>3. Enter the values</h2>\
<p>They are checked with Microsoft Entra as soon as you submit; nothing is kept while a check \
fails.</p>\
<form method=\"post\" action=\"{action}\" class=\"setup\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">",
        action = escape(&format!("{}{token}", PREFIX)),
        csrf = escape(&link.csrf),
    ));
    let certificate_chosen = if form.credential.is_empty() {
        link.certificate.is_some()
    } else {
        form.uses_certificate()
    };
    let fields = [
        (
            Field::Tenant,
            "tenant",
            "Directory (tenant) ID",
            "From the Overview page; or the OpenID Connect metadata document URL from Endpoints.",
            "text",
            form.tenant.as_str(),
        ),
        (
            Field::ClientId,
            "client_id",
            "Application (client) ID",
            "From the Overview page (not the Object ID).",
            "text",
            form.client_id.as_str(),
        ),
        (
            Field::Secret,
            "client_secret",
            "Client secret Value",
            "The Value column, not the Secret ID. Never shown again here: paste it again after a failed check.",
            "password",
            "",
        ),
        (
            Field::Expiry,
            "secret_expires",
            "Client secret Expires",
            "The date in the Expires column, e.g. 2027-05-01.",
            "date",
            form.secret_expires.as_str(),
        ),
    ];
    for (field, input, label, hint, kind, value) in fields {
        if field == Field::Secret {
            body.push_str(&credential_choice(link, certificate_chosen));
            body.push_str(&lines_for(feedback, Field::Certificate));
        }
        // The secret's fields are needed only when the secret is chosen: the server says so.
        let required = if matches!(field, Field::Tenant | Field::ClientId) {
            " required"
        } else {
            ""
        };
        body.push_str(&format!(
            "<p class=\"field\"><label for=\"{input}\">{label}</label>\
<input id=\"{input}\" name=\"{input}\" type=\"{kind}\" value=\"{value}\" autocomplete=\"off\"{required}>\
<span class=\"hint\">{hint}</span></p>",
            label = escape(label),
            hint = escape(hint),
            value = escape(value),
        ));
        body.push_str(&lines_for(feedback, field));
    }
    body.push_str(
        "<p class=\"actions\"><button type=\"submit\">Check the values</button></p></form>",
    );
    body.push_str(&format!("<script>{COPY_SCRIPT}</script>"));
    super::pages::page(&h1, &body)
}

/// Step 2: the certificate entrance generates for this link (the button, or its downloads and
/// thumbprint), and the client secret as the other way.
fn credential_section(state: &AppState, token: &str, link: &SetupLink) -> String {
    let mut out = "<h2 id=\"certificate\">2. Give it a credential</h2>\
<p><strong>A certificate (recommended).</strong> entrance generates one for this connection: its \
private key never leaves entrance, so no secret travels, and nothing needs copying back.</p>"
        .to_owned();
    let base = format!("{PREFIX}{token}/certificate");
    match &link.certificate {
        Some(cert) => {
            let (thumb, until) =
                match certificate::parse_certificate(cert.certificate_pem.as_bytes()) {
                    Ok((der, parsed)) => (
                        Thumbprints::of(&der).sha1_hex,
                        certificate::validity(&parsed).1.date().to_string(),
                    ),
                    Err(_) => (String::new(), String::new()),
                };
            out.push_str(&format!(
                "<dl class=\"values\"><dt>Certificate thumbprint</dt><dd><code id=\"thumbprint\">{thumb}</code>{copy}</dd>\
<dt>Valid until</dt><dd>{until}</dd></dl>\
<p class=\"actions\"><a class=\"button\" href=\"{cer}\" download>Download the certificate (.cer)</a>\
<a class=\"button secondary\" href=\"{pem}\" download>Download as .pem</a></p>\
<ol><li>Open <strong>Certificates &amp; secrets → Certificates → Upload certificate</strong>, select the \
downloaded file and choose <strong>Add</strong>.</li>\
<li>Check that the <strong>Thumbprint</strong> column shows the thumbprint above.</li>\
<li>Below, choose <em>the generated certificate</em>.</li></ol>",
                copy = copy_button("thumbprint"),
                cer = escape(&format!("{base}.cer")),
                pem = escape(&format!("{base}.pem")),
            ));
        }
        None if state.config.data_key.is_some() => out.push_str(&format!(
            "<form method=\"post\" action=\"{action}\" class=\"actions\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\">Generate a certificate</button></form>",
            action = escape(&base),
            csrf = escape(&link.csrf),
        )),
        None => out.push_str(
            "<p class=\"check warning\">This entrance cannot keep a generated certificate (it \
has no ENTRANCE_DATA_KEY): use a client secret.</p>",
        ),
    }
    out.push_str(
        "<p><strong>Or a client secret.</strong> Open <strong>Certificates &amp; secrets → Client \
secrets → New client secret</strong>, pick an expiry and choose <strong>Add</strong>. Copy the \
<strong>Value</strong> column at once (Entra shows it only now) — not the <em>Secret ID</em> \
beside it — and note the <strong>Expires</strong> date.</p>",
    );
    out
}

/// The form's credential choice: the link's certificate, or the client secret below it.
fn credential_choice(link: &SetupLink, certificate: bool) -> String {
    let checked = |yes: bool| if yes { " checked" } else { "" };
    let unavailable = if link.certificate.is_some() {
        ""
    } else {
        " (generate it above first)"
    };
    format!(
        "<p class=\"field\"><span class=\"label\">Credential</span>\
<label><input id=\"credential_certificate\" type=\"radio\" name=\"credential\" value=\"certificate\"{c}> \
The generated certificate (recommended){unavailable}</label>\
<label><input id=\"credential_secret\" type=\"radio\" name=\"credential\" value=\"secret\"{s}> \
A client secret: its Value and Expires below</label></p>",
        c = checked(certificate),
        s = checked(!certificate),
    )
}

/// Above the form: how the last submission went, and the lines that concern no one field.
fn summary(feedback: &Feedback) -> String {
    if feedback.lines.is_empty() {
        return String::new();
    }
    let mut out = if feedback.has_errors() {
        let n = feedback
            .lines
            .iter()
            .filter(|(_, c)| c.status == Status::Error)
            .count();
        format!(
            "<p class=\"outcome error\" role=\"alert\">{n} check{} failed: see the fix beside each field below.</p>",
            if n == 1 { "" } else { "s" }
        )
    } else {
        "<p class=\"outcome ok\" role=\"status\">Every check passed: Microsoft Entra accepted the \
Application (client) ID and the credential.</p>"
            .to_owned()
    };
    out.push_str(&lines_for(feedback, Field::General));
    out
}

/// The lines for one field: errors and warnings with their fix, and what passed.
fn lines_for(feedback: &Feedback, field: Field) -> String {
    let mut out = String::new();
    for (_, check) in feedback.lines.iter().filter(|(f, _)| *f == field) {
        let class = match check.status {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
            Status::Skipped => continue,
        };
        out.push_str(&format!(
            "<p class=\"check {class}\" data-check=\"{name}\"><strong>{class}</strong>: {message}",
            name = check.name,
            message = escape(&check.message),
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("<br>Fix: {}", escape(fix)));
        }
        out.push_str("</p>");
    }
    out
}
