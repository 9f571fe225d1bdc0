//! `entrance check` (the setup doctor) against the in-process mock IdP: every check, healthy
//! and broken, and the real binary's exit status and JSON.

use entrance::{
    Config, HttpClient,
    doctor::{self, Report, Status},
};
use mock_idp::{
    Behaviour, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, Fault, MockIdp,
    MockIdpSettings, TokenError,
};
use time::{Duration, OffsetDateTime, macros::datetime};

/// A fixed "now" so expiry verdicts do not depend on the day the tests run.
const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
const SECRET_ID: &str = "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f";

struct Setup {
    public_url: String,
    metadata_url: String,
    client_id: String,
    /// The whole `client_secret…` line(s).
    secret_line: String,
    extra: String,
}

impl Setup {
    fn healthy(idp: &MockIdp) -> Setup {
        Setup {
            public_url: "https://127.0.0.1:3000".into(),
            metadata_url: idp.metadata_url(),
            client_id: DEFAULT_CLIENT_ID.into(),
            secret_line: format!("client_secret = {DEFAULT_CLIENT_SECRET:?}"),
            extra: "client_secret_expires_at = \"2027-05-01\"".into(),
        }
    }

    fn secret(mut self, secret: &str) -> Setup {
        self.secret_line = format!("client_secret = {secret:?}");
        self
    }

    fn toml(&self) -> String {
        format!(
            r#"
listen = "127.0.0.1:0"
public_url = "{public}"
[http]
connect_timeout_secs = 2
timeout_secs = 5
[[connections]]
id = "contoso"
name = "Contoso"
metadata_url = "{metadata}"
client_id = "{client_id}"
{secret}
{extra}
"#,
            public = self.public_url,
            metadata = self.metadata_url,
            client_id = self.client_id,
            secret = self.secret_line,
            extra = self.extra,
        )
    }

    async fn run(&self, verify_secret: bool) -> Report {
        self.run_at(verify_secret, NOW).await
    }

    async fn run_at(&self, verify_secret: bool, now: OffsetDateTime) -> Report {
        let loaded = Config::load_str_lenient(&self.toml()).expect("lenient config loads");
        let http = HttpClient::new(&loaded.config.http).expect("client");
        doctor::check(&loaded, None, verify_secret, &http, now)
            .await
            .expect("no --connection given")
    }
}

async fn idp() -> MockIdp {
    MockIdp::start(MockIdpSettings::default())
        .await
        .expect("mock IdP starts")
}

/// The one connection's check called `name`, printing the whole report on failure.
fn check<'r>(report: &'r Report, name: &str) -> &'r doctor::Check {
    report.connections[0]
        .check(name)
        .unwrap_or_else(|| panic!("no {name} check in\n{}", report.render()))
}

#[track_caller]
fn assert_status(report: &Report, name: &str, status: Status) -> String {
    let c = check(report, name);
    assert_eq!(c.status, status, "{name}:\n{}", report.render());
    c.message.clone()
}

fn fix(report: &Report, name: &str) -> String {
    check(report, name).fix.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_healthy_connection_passes_every_check() {
    let idp = idp().await;
    let report = Setup::healthy(&idp).run(true).await;
    let checks = &report.connections[0].checks;
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            doctor::METADATA,
            doctor::ISSUER,
            doctor::JWKS,
            doctor::CLIENT_ID,
            doctor::SECRET,
            doctor::SECRET_EXPIRY,
            doctor::REDIRECT_URI,
            doctor::CREDENTIALS
        ]
    );
    for c in checks {
        assert_eq!(c.status, Status::Ok, "{}", report.render());
        assert!(c.fix.is_none());
    }
    assert!(report.passed());
    assert!(
        check(&report, doctor::REDIRECT_URI)
            .message
            .contains("https://127.0.0.1:3000/login/callback")
    );
    assert!(check(&report, doctor::CLIENT_ID).message.contains("GUID"));
    let text = report.render();
    assert!(
        !text.contains(DEFAULT_CLIENT_SECRET),
        "never print the secret"
    );
    assert!(text.contains("  ok      credentials   "), "{text}");
}

/// Issue 14: a connection with `api` and `upstream` tables gets a line for each; with
/// `--verify-secret` the upstream line proves the tenant knows the API (a client-credentials
/// token for its `.default`), and names AADSTS500011 when it does not.
#[tokio::test]
async fn api_and_upstream_tables_get_their_lines_and_a_missing_api_is_named() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.extra = format!(
        "{}
api = {{ audiences = [\"api://x\"], required_scopes = [\"Files.Read\"] }}
{}",
        setup.extra,
        crate::upstream::upstream_toml("")
    );
    let report = setup.run(false).await;
    let api = assert_status(&report, doctor::API, Status::Ok);
    assert!(
        api.contains("api://x")
            && api.contains("Files.Read")
            && api.contains("app-only tokens are refused"),
        "{api}"
    );
    let line = assert_status(&report, doctor::UPSTREAM, Status::Skipped);
    assert!(line.contains("--verify-secret"), "{line}");
    assert_eq!(idp.counters().token, 0);

    let report = setup.run(true).await;
    let line = assert_status(&report, doctor::UPSTREAM, Status::Ok);
    assert!(line.contains(crate::upstream::BACKEND), "{line}");
    assert!(report.passed(), "{}", report.render());

    idp.set_behaviour(mock_idp::Behaviour {
        missing_apis: vec![crate::upstream::BACKEND.into()],
        ..Default::default()
    });
    let report = setup.run(true).await;
    let line = assert_status(&report, doctor::UPSTREAM, Status::Error);
    assert!(line.contains("AADSTS500011"), "{line}");
    assert!(
        fix(&report, doctor::UPSTREAM).contains("consent"),
        "{}",
        report.render()
    );
    assert!(!report.passed());
    // The credentials themselves are fine: only the API is missing.
    assert_status(&report, doctor::CREDENTIALS, Status::Ok);
}

/// Issue 15: `groups.resolve_overage` gets a `groups` line. A delegated connection (no
/// `upstream`) names `User.Read` and calls nothing; an app-only one proves `User.Read.All`
/// with one Graph call under `--verify-secret`, and names it with the tenant when Graph
/// answers 403.
#[tokio::test]
async fn overage_resolution_gets_a_groups_line_that_proves_the_graph_permission() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    let base = setup.extra.clone();
    setup.extra = format!("{base}\ngroups = {{ resolve_overage = true }}");
    let report = setup.run(true).await;
    let line = assert_status(&report, doctor::GROUPS, Status::Ok);
    assert!(line.contains("delegated permission User.Read,"), "{line}");
    assert_eq!(idp.counters().graph, 0);

    setup.extra = format!(
        "{base}\ngroups = {{ resolve_overage = true }}\n{}",
        crate::upstream::upstream_toml("")
    );
    let report = setup.run(false).await;
    assert_status(&report, doctor::GROUPS, Status::Skipped);
    assert_eq!(idp.counters().graph, 0);
    let report = setup.run(true).await;
    let line = assert_status(&report, doctor::GROUPS, Status::Ok);
    assert!(line.contains("User.Read.All"), "{line}");
    assert_eq!(idp.counters().graph, 1, "one Graph call");

    idp.set_behaviour(mock_idp::Behaviour {
        graph_forbidden: true,
        ..Default::default()
    });
    let report = setup.run(true).await;
    assert_status(&report, doctor::GROUPS, Status::Error);
    let fix = fix(&report, doctor::GROUPS);
    assert!(
        fix.contains("User.Read.All")
            && fix.contains(&idp.tenant_id())
            && fix.contains("admin consent"),
        "{fix}"
    );
    assert!(!report.passed());
}

/// Issue 15.2: `entrance check` reads a federated credential's token file and shows what the
/// app registration's federated credential must equal, and its expiry; `--verify-secret`
/// proves it at the token endpoint like a secret.
#[tokio::test]
async fn a_federated_credential_shows_its_claims_and_expiry_and_is_proven() {
    let idp = idp().await;
    let issuer = "https://oidc.cluster.example/k8s/";
    let cluster = idp.federated_issuer(issuer).await.expect("issuer");
    idp.add_federated_credential(mock_idp::FederatedCredential::kubernetes(
        issuer, "sso", "entrance",
    ));
    let dir = std::env::temp_dir().join(format!("entrance-doctor-fed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("token");
    let sub = "system:serviceaccount:sso:entrance";
    let aud = mock_idp::TOKEN_EXCHANGE_AUDIENCE;
    std::fs::write(&path, cluster.token(sub, aud, 3600).expect("token")).expect("write");
    let mut setup = Setup::healthy(&idp);
    setup.secret_line = format!("client_assertion_file = {:?}", path.display().to_string());
    setup.extra = String::new();
    let report = setup.run_at(true, OffsetDateTime::now_utc()).await;
    let line = assert_status(&report, doctor::FEDERATED, Status::Ok);
    assert!(
        line.contains(issuer) && line.contains(sub) && line.contains(aud),
        "{line}"
    );
    let expiry = assert_status(&report, doctor::FEDERATED_EXPIRY, Status::Ok);
    assert!(expiry.contains("minutes"), "{expiry}");
    assert_status(&report, doctor::CREDENTIALS, Status::Ok);
    assert!(report.passed(), "{}", report.render());

    // The platform stopped refreshing the file: the expiry line says so, and Entra's refusal
    // is translated.
    std::fs::write(&path, cluster.token(sub, aud, -120).expect("token")).expect("write");
    let report = setup.run_at(true, OffsetDateTime::now_utc()).await;
    let expiry = assert_status(&report, doctor::FEDERATED_EXPIRY, Status::Error);
    assert!(expiry.contains("not refreshing"), "{expiry}");
    let credentials = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(credentials.contains("700024"), "{credentials}");

    // No file at all: an error line naming it, nothing sent.
    let _ = std::fs::remove_dir_all(&dir);
    let before = idp.counters().token;
    let report = setup.run_at(true, OffsetDateTime::now_utc()).await;
    let line = assert_status(&report, doctor::FEDERATED, Status::Error);
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert_eq!(idp.counters().token, before);
}

#[tokio::test]
async fn without_verify_secret_the_credentials_are_skipped_and_no_token_is_requested() {
    let idp = idp().await;
    let report = Setup::healthy(&idp).run(false).await;
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Skipped);
    assert!(msg.contains("--verify-secret"), "{msg}");
    assert_eq!(idp.counters().token, 0);
    assert!(report.passed());
}

#[tokio::test]
async fn an_unreachable_metadata_url_is_an_error_and_skips_what_needs_it() {
    let idp = idp().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut setup = Setup::healthy(&idp);
    setup.metadata_url = format!(
        "http://127.0.0.1:{closed}/{DEFAULT_TENANT_ID}/v2.0/.well-known/openid-configuration"
    );
    let report = setup.run(true).await;
    let msg = assert_status(&report, doctor::METADATA, Status::Error);
    assert!(msg.contains("could not connect"), "{msg}");
    assert!(fix(&report, doctor::METADATA).contains("reach"));
    for name in [doctor::ISSUER, doctor::JWKS, doctor::CREDENTIALS] {
        assert_status(&report, name, Status::Skipped);
    }
    // The checks that need no network still run.
    assert_status(&report, doctor::SECRET, Status::Ok);
    assert!(!report.passed());
}

#[tokio::test]
async fn a_wrong_tenant_in_the_metadata_url_is_explained_by_its_aadsts_code() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.metadata_url = setup
        .metadata_url
        .replace(DEFAULT_TENANT_ID, "99999999-0000-0000-0000-000000000000");
    let report = setup.run(false).await;
    let msg = assert_status(&report, doctor::METADATA, Status::Error);
    assert!(msg.contains("AADSTS90002"), "{msg}");
    assert!(fix(&report, doctor::METADATA).contains("Directory (tenant) ID"));
}

#[tokio::test]
async fn an_issuer_mismatch_is_an_error_naming_both_issuers() {
    let idp = idp().await;
    idp.set_behaviour(Behaviour {
        metadata_issuer: Some("https://login.microsoftonline.com/another-tenant/v2.0".into()),
        ..Default::default()
    });
    let report = Setup::healthy(&idp).run(false).await;
    assert_status(&report, doctor::METADATA, Status::Ok);
    let msg = assert_status(&report, doctor::ISSUER, Status::Error);
    assert!(
        msg.contains("another-tenant") && msg.contains(&idp.issuer()),
        "{msg}"
    );
    assert!(!fix(&report, doctor::ISSUER).is_empty());
    assert_status(&report, doctor::JWKS, Status::Ok);
}

#[tokio::test]
async fn unreachable_signing_keys_are_an_error() {
    let idp = idp().await;
    idp.set_behaviour(Behaviour {
        jwks_fault: Fault::Status(503),
        ..Default::default()
    });
    let report = Setup::healthy(&idp).run(false).await;
    let msg = assert_status(&report, doctor::JWKS, Status::Error);
    assert!(msg.contains("503"), "{msg}");
}

#[tokio::test]
async fn signing_keys_without_a_usable_key_are_an_error() {
    let idp = idp().await;
    idp.set_behaviour(Behaviour {
        jwks_override: Some(serde_json::json!({
            "keys": [
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}
            ]
        })),
        ..Default::default()
    });
    let report = Setup::healthy(&idp).run(false).await;
    let msg = assert_status(&report, doctor::JWKS, Status::Error);
    assert!(msg.contains("no usable"), "{msg}");
    assert!(fix(&report, doctor::JWKS).contains("signature key"));
}

#[tokio::test]
async fn a_client_id_that_is_not_a_guid_is_an_error_for_entra() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.client_id = "contoso-sso".into();
    let report = setup.run(true).await;
    let msg = assert_status(&report, doctor::CLIENT_ID, Status::Error);
    assert!(msg.contains("not a GUID"), "{msg}");
    assert!(fix(&report, doctor::CLIENT_ID).contains("Application (client) ID"));
    // And Entra (the mock) does not know it either.
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(msg.contains("AADSTS700016"), "{msg}");
}

#[tokio::test]
async fn a_pasted_secret_id_is_an_error_and_entra_refuses_it() {
    let idp = idp().await;
    let report = Setup::healthy(&idp).secret(SECRET_ID).run(true).await;
    let msg = assert_status(&report, doctor::SECRET, Status::Error);
    assert!(msg.contains("Secret ID"), "{msg}");
    assert!(fix(&report, doctor::SECRET).contains("Value"));
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(msg.contains("AADSTS7000215"), "{msg}");
}

#[tokio::test]
async fn a_whitespace_padded_secret_is_a_warning_and_still_works_trimmed() {
    let idp = idp().await;
    let report = Setup::healthy(&idp)
        .secret(&format!("  {DEFAULT_CLIENT_SECRET}\n"))
        .run(true)
        .await;
    let msg = assert_status(&report, doctor::SECRET, Status::Warning);
    assert!(msg.contains("whitespace"), "{msg}");
    assert_status(&report, doctor::CREDENTIALS, Status::Ok);
    assert!(report.passed(), "a warning does not fail the check");
}

#[tokio::test]
async fn a_missing_secret_is_reported_as_a_line_not_a_load_failure() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.secret_line = r#"client_secret_env = "ENTRANCE_TEST_DOCTOR_UNSET_VARIABLE""#.into();
    let report = setup.run(true).await;
    let msg = assert_status(&report, doctor::SECRET, Status::Error);
    assert!(msg.contains("ENTRANCE_TEST_DOCTOR_UNSET_VARIABLE"), "{msg}");
    assert!(fix(&report, doctor::SECRET).starts_with("export "));
    assert_status(&report, doctor::CREDENTIALS, Status::Skipped);
    assert_status(&report, doctor::METADATA, Status::Ok);
    assert_eq!(idp.counters().token, 0);
}

#[tokio::test]
async fn a_plain_http_public_url_is_a_warning() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.public_url = "http://localhost:3000".into();
    let report = setup.run(false).await;
    let msg = assert_status(&report, doctor::REDIRECT_URI, Status::Warning);
    assert!(
        msg.contains("register exactly http://localhost:3000/login/callback"),
        "{msg}"
    );
    assert!(fix(&report, doctor::REDIRECT_URI).contains("https"));
}

#[tokio::test]
async fn a_secret_expiring_within_30_days_is_a_warning_and_an_expired_one_an_error() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.extra = "client_secret_expires_at = \"2026-06-20T00:00:00Z\"".into();
    let report = setup.run(false).await;
    let msg = assert_status(&report, doctor::SECRET_EXPIRY, Status::Warning);
    assert!(
        msg.contains("2026-06-20") && msg.contains("in 18 days"),
        "{msg}"
    );

    setup.extra = "client_secret_expires_at = 2026-05-01".into();
    let report = setup.run(false).await;
    let msg = assert_status(&report, doctor::SECRET_EXPIRY, Status::Error);
    assert!(msg.contains("expired on 2026-05-01"), "{msg}");
    assert!(fix(&report, doctor::SECRET_EXPIRY).contains("new secret"));
    assert!(!report.passed());

    setup.extra = String::new();
    let report = setup.run(false).await;
    assert_status(&report, doctor::SECRET_EXPIRY, Status::Skipped);
}

#[tokio::test]
async fn verify_secret_translates_a_wrong_secret() {
    let idp = idp().await;
    let report = Setup::healthy(&idp)
        .secret("wrongQ~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMg")
        .run(true)
        .await;
    assert_status(&report, doctor::SECRET, Status::Ok);
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(
        msg.contains("AADSTS7000215") && msg.contains("Secret ID") && msg.contains("Value"),
        "{msg}"
    );
    assert!(fix(&report, doctor::CREDENTIALS).contains("Value"));
}

#[tokio::test]
async fn verify_secret_translates_an_expired_secret() {
    let idp = idp().await;
    idp.set_behaviour(Behaviour {
        expired_client_secrets: vec![DEFAULT_CLIENT_SECRET.into()],
        ..Default::default()
    });
    let report = Setup::healthy(&idp).run(true).await;
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(
        msg.contains("AADSTS7000222") && msg.contains("expired"),
        "{msg}"
    );
}

#[tokio::test]
async fn verify_secret_translates_an_unknown_client() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    setup.client_id = "99999999-aaaa-2222-bbbb-3333cccc4444".into();
    let report = setup.run(true).await;
    assert_status(&report, doctor::CLIENT_ID, Status::Ok);
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(
        msg.contains("AADSTS700016")
            && msg.contains("99999999-aaaa")
            && msg.contains(DEFAULT_TENANT_ID),
        "{msg}"
    );
    assert!(fix(&report, doctor::CREDENTIALS).contains("tenant"));
}

#[tokio::test]
async fn verify_secret_translates_an_unknown_tenant() {
    let idp = idp().await;
    idp.set_behaviour(Behaviour {
        token_error: Some(TokenError::entra(
            "invalid_request",
            90002,
            "Tenant 'aaaabbbb-0000-cccc-1111-dddd2222eeee' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
        )),
        ..Default::default()
    });
    let report = Setup::healthy(&idp).run(true).await;
    let msg = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(msg.contains("AADSTS90002"), "{msg}");
    assert!(fix(&report, doctor::CREDENTIALS).contains("Directory (tenant) ID"));
}

#[tokio::test]
async fn a_provider_that_does_not_allow_the_grant_means_could_not_verify() {
    let idp = idp().await;
    for error in ["unsupported_grant_type", "unauthorized_client"] {
        idp.set_behaviour(Behaviour {
            token_error: Some(TokenError {
                status: 400,
                body: serde_json::json!({
                    "error": error,
                    "error_description": "client_credentials is not allowed for this client"
                }),
            }),
            ..Default::default()
        });
        let report = Setup::healthy(&idp).run(true).await;
        let msg = assert_status(&report, doctor::CREDENTIALS, Status::Warning);
        assert!(
            msg.starts_with("could not verify") && msg.contains(error),
            "{msg}"
        );
        assert!(report.passed(), "could not verify is not an error");
    }
}

#[tokio::test]
async fn connection_selects_one_and_an_unknown_id_names_the_known_ones() {
    let idp = idp().await;
    let setup = Setup::healthy(&idp);
    let second = setup
        .toml()
        .split("[[connections]]")
        .nth(1)
        .expect("a connection")
        .replace("id = \"contoso\"", "id = \"fabrikam\"")
        .replace(DEFAULT_CLIENT_SECRET, SECRET_ID);
    let toml = format!("{}\n[[connections]]{second}", setup.toml());
    let loaded = Config::load_str_lenient(&toml).expect("loads");
    let http = HttpClient::new(&loaded.config.http).expect("client");

    let all = doctor::check(&loaded, None, false, &http, NOW)
        .await
        .expect("all");
    assert_eq!(all.connections.len(), 2);
    assert!(!all.passed(), "fabrikam has a Secret ID");

    let one = doctor::check(&loaded, Some("contoso"), false, &http, NOW)
        .await
        .expect("one");
    assert_eq!(one.connections.len(), 1);
    assert!(one.passed());

    let err = doctor::check(&loaded, Some("nope"), false, &http, NOW)
        .await
        .expect_err("unknown id");
    let text = err.to_string();
    assert!(
        text.contains("\"nope\"") && text.contains("contoso, fabrikam"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// The real binary.

fn write_config(toml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("entrance-check-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, toml).expect("write the config");
    path
}

async fn run_binary(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_entrance"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run entrance")
}

#[tokio::test]
async fn the_binary_exits_0_and_prints_json_for_a_healthy_config() {
    let idp = idp().await;
    let mut setup = Setup::healthy(&idp);
    // Real time here: the binary uses the clock.
    let in_a_year = (OffsetDateTime::now_utc() + Duration::days(365)).date();
    setup.extra = format!("client_secret_expires_at = \"{in_a_year}\"");
    let path = write_config(&setup.toml());
    let path_arg = path.to_string_lossy().into_owned();
    let out = run_binary(&["check", "--config", &path_arg, "--json", "--verify-secret"]).await;
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(json["passed"], true);
    let conn = &json["connections"][0];
    assert_eq!(conn["id"], "contoso");
    assert_eq!(conn["name"], "Contoso");
    let checks = conn["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 8);
    for c in checks {
        assert!(c["name"].is_string() && c["message"].is_string(), "{c}");
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["fix"].is_null(), "{c}");
    }
    assert!(!stdout.contains(DEFAULT_CLIENT_SECRET));
}

#[tokio::test]
async fn the_binary_exits_non_zero_for_a_broken_connection_and_2_for_an_unknown_id() {
    let idp = idp().await;
    let path = write_config(&Setup::healthy(&idp).secret(SECRET_ID).toml());
    let path_arg = path.to_string_lossy().into_owned();

    let out = run_binary(&["check", "--config", &path_arg]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("  error   secret        "), "{stdout}");
    assert!(
        stdout.contains("fix: in Certificates & secrets"),
        "{stdout}"
    );

    let out = run_binary(&["check", "--config", &path_arg, "--connection", "nope"]).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("contoso"), "{stderr}");
}

#[tokio::test]
async fn every_secret_of_a_rotation_is_judged_and_verified_by_name() {
    let idp = idp().await;
    let dir = std::env::temp_dir().join(format!("entrance-doc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let new = dir.join("new");
    let old = dir.join("old");
    std::fs::write(&new, DEFAULT_CLIENT_SECRET).expect("write");
    std::fs::write(&old, "oldQ~no-longer-registered-at-the-idp-000").expect("write");
    let mut setup = Setup::healthy(&idp);
    setup.secret_line = format!(
        "client_secret_files = [{:?}, {:?}]",
        new.display().to_string(),
        old.display().to_string()
    );
    let report = setup.run(true).await;
    let secret = assert_status(&report, doctor::SECRET, Status::Ok);
    assert!(secret.contains(&new.display().to_string()), "{secret}");
    let credentials = assert_status(&report, doctor::CREDENTIALS, Status::Error);
    assert!(
        credentials.starts_with(&format!("client_secret_files {}", old.display())),
        "{credentials}"
    );
    // A Secret ID among them is an error naming that one.
    std::fs::write(&old, SECRET_ID).expect("write");
    let report = setup.run(false).await;
    let secret = assert_status(&report, doctor::SECRET, Status::Error);
    assert!(secret.contains(&old.display().to_string()), "{secret}");
    let _ = std::fs::remove_dir_all(&dir);
}
