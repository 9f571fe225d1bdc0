//! Configuration tests: each rule a key breaks, with the key and the fix named.

use std::path::PathBuf;

use secrecy::ExposeSecret;

use super::*;
use crate::certificate::AssertionAlg;

fn raw(extra_conn: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
public_url = "https://sso.example.com"
[[connections]]
id = "contoso"
metadata_url = "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration"
client_id = "00001111-aaaa-2222-bbbb-3333cccc4444"
{extra_conn}
"#
    )
}

fn parse(toml: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = Figment::new()
        .merge(Toml::string(toml))
        .extract()
        .map_err(Box::new)?;
    Config::from_raw(raw, &|name| {
        (name == "SECRET").then(|| "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR".to_owned())
    })
}

fn err_key(toml: &str) -> String {
    match parse(toml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

/// A file in a fresh temporary directory, removed with it.
fn temp_file(name: &str, contents: &[u8]) -> (PathBuf, impl Drop) {
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(format!("entrance-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    (path, Dir(dir))
}

#[test]
fn an_extra_ca_bundle_is_loaded_with_every_certificate() {
    let a = mock_idp::TestCertificate::generate_valid_for_days("ca-a", 30).expect("cert");
    let b = mock_idp::TestCertificate::generate_valid_for_days("ca-b", 30).expect("cert");
    let bundle = format!("# corporate roots\n{}\n{}", a.cert_pem, b.cert_pem);
    let (path, _dir) = temp_file("ca.pem", bundle.as_bytes());
    // `[http]` must come after the top-level keys: put it last.
    let toml = format!(
        "{}\n[http]\nextra_ca_file = {:?}\n",
        raw(r#"client_secret_env = "SECRET""#),
        path.display().to_string()
    );
    let cfg = parse(&toml).expect("valid");
    assert_eq!(cfg.http.extra_roots.len(), 2);
    crate::oidc::http_client::HttpClient::new(&cfg.http).expect("the client takes the roots");
    assert!(
        parse(&raw(r#"client_secret_env = "SECRET""#))
            .expect("valid")
            .http
            .extra_roots
            .is_empty()
    );
}

#[test]
fn a_bad_extra_ca_file_stops_startup_naming_the_key() {
    let key_of = |contents: Option<&[u8]>| {
        let (path, _dir) = temp_file("ca.pem", contents.unwrap_or(b""));
        let path = if contents.is_some() {
            path
        } else {
            path.with_file_name("missing.pem")
        };
        let toml = format!(
            "{}\n[http]\nextra_ca_file = {:?}\n",
            raw(r#"client_secret_env = "SECRET""#),
            path.display().to_string()
        );
        err_key(&toml)
    };
    assert_eq!(key_of(None), "http.extra_ca_file", "missing file");
    assert_eq!(
        key_of(Some(b"not a certificate")),
        "http.extra_ca_file",
        "no PEM block"
    );
    assert_eq!(
        key_of(Some(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )),
        "http.extra_ca_file",
        "a block that is not a certificate"
    );
}

#[test]
fn traces_per_connection_defaults_to_50_and_is_bounded() {
    let base = raw(r#"client_secret_env = "SECRET""#);
    assert_eq!(parse(&base).expect("valid").traces_per_connection, 50);
    let set = |n: usize| format!("{base}\n[traces]\nper_connection = {n}\n");
    assert_eq!(parse(&set(5)).expect("valid").traces_per_connection, 5);
    assert_eq!(err_key(&set(1_000_000)), "traces.per_connection");
}

#[test]
fn telemetry_otlp_endpoint_is_an_http_url_or_unset() {
    let base = raw(r#"client_secret_env = "SECRET""#);
    assert_eq!(parse(&base).expect("valid").otlp_endpoint, None);
    let set = |v: &str| format!("{base}\n[telemetry]\notlp_endpoint = \"{v}\"\n");
    let cfg = parse(&set("http://otel-collector:4318")).expect("valid");
    assert_eq!(
        cfg.otlp_endpoint.as_ref().map(url::Url::as_str),
        Some("http://otel-collector:4318/")
    );
    for bad in [
        "otel-collector:4318",
        "grpc://otel-collector:4317",
        "http://c:4318/?k=v",
        "not a url",
    ] {
        assert_eq!(err_key(&set(bad)), "telemetry.otlp_endpoint", "{bad}");
    }
}

#[test]
fn a_good_config_validates_and_derives_the_redirect_uri_and_issuer() {
    let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
    assert_eq!(cfg.redirect_uri(), "https://sso.example.com/login/callback");
    assert_eq!(cfg.session.cookie_name, "__Host-entrance");
    assert!(cfg.session.secure_cookie);
    let c = &cfg.connections[0];
    assert_eq!(
        c.expected_issuer,
        "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0"
    );
    assert_eq!(c.scopes, ["openid", "profile", "email"]);
}

fn multi_tenant(authority: &str, extra: &str) -> String {
    raw(&format!("client_secret_env = \"SECRET\"\n{extra}")).replace(
        "aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0",
        &format!("{authority}/v2.0"),
    )
}

#[test]
fn a_multi_tenant_url_requires_allowed_tenants() {
    for authority in ["common", "organizations"] {
        match parse(&multi_tenant(authority, "")) {
            Err(ConfigError::Invalid { key, problem, fix }) => {
                assert_eq!(key, "connections[0].allowed_tenants");
                assert!(problem.contains(authority), "{problem}");
                assert!(fix.contains("\"*\""), "{fix}");
            }
            other => panic!("expected allowed_tenants to be required, got {other:?}"),
        }
        let cfg = parse(&multi_tenant(
            authority,
            r#"allowed_tenants = ["AAAABBBB-0000-cccc-1111-dddd2222eeee"]"#,
        ))
        .expect("valid");
        let c = &cfg.connections[0];
        assert_eq!(
            c.issuer_template.as_deref(),
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        );
        assert_eq!(
            c.allowed_tenants,
            TenantAllowList::Only(vec!["aaaabbbb-0000-cccc-1111-dddd2222eeee".into()])
        );
    }
    let any = parse(&multi_tenant("common", r#"allowed_tenants = ["*"]"#)).expect("valid");
    assert_eq!(any.connections[0].allowed_tenants, TenantAllowList::Any);
}

#[test]
fn allowed_tenants_must_be_guids_or_a_lone_star() {
    for bad in [
        r#"allowed_tenants = []"#,
        r#"allowed_tenants = ["contoso.onmicrosoft.com"]"#,
        r#"allowed_tenants = ["*", "aaaabbbb-0000-cccc-1111-dddd2222eeee"]"#,
    ] {
        assert_eq!(
            err_key(&multi_tenant("common", bad)),
            "connections[0].allowed_tenants",
            "{bad}"
        );
    }
}

#[test]
fn a_single_tenant_url_may_set_allowed_tenants() {
    let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
    let c = &cfg.connections[0];
    assert_eq!(c.allowed_tenants, TenantAllowList::Any);
    assert_eq!(c.issuer_template, None);
    let cfg = parse(&raw(
        "client_secret_env = \"SECRET\"\nallowed_tenants = [\"aaaabbbb-0000-cccc-1111-dddd2222eeee\"]",
    ))
    .expect("valid");
    assert!(matches!(
        cfg.connections[0].allowed_tenants,
        TenantAllowList::Only(_)
    ));
}

#[test]
fn a_secret_id_guid_is_refused_for_entra() {
    let toml = raw(r#"client_secret = "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f""#);
    match parse(&toml) {
        Err(ConfigError::Invalid { key, problem, .. }) => {
            assert_eq!(key, "connections[0].client_secret");
            assert!(problem.contains("Secret ID"), "{problem}");
        }
        other => panic!("expected Secret ID error, got {other:?}"),
    }
}

#[test]
fn a_guid_secret_is_only_a_warning_elsewhere() {
    let toml = r#"
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:3000"
[[connections]]
id = "other"
metadata_url = "https://idp.example.org/.well-known/openid-configuration"
client_id = "entrance"
client_secret = "c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f"
"#;
    assert!(parse(toml).is_ok());
}

#[test]
fn secret_lists_keep_their_order_and_label_each_secret() {
    let dir = std::env::temp_dir().join(format!("entrance-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("old");
    std::fs::write(&file, "oldQ~secret-from-a-file-000000000000000\n").expect("write");
    let toml = raw(&format!(
        "client_secrets_env = [\"NEW\"]\nclient_secret_files = [{:?}]",
        file.display().to_string()
    ));
    let raw_cfg: RawConfig = Figment::new()
        .merge(Toml::string(&toml))
        .extract()
        .expect("parses");
    let cfg = Config::from_raw(raw_cfg, &|name| {
        (name == "NEW").then(|| "newQ~secret-from-the-env-00000000000000".to_owned())
    })
    .expect("valid");
    let labels: Vec<String> = cfg.connections[0]
        .credential
        .secret_labels()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        labels,
        vec![
            "client_secrets_env NEW".to_owned(),
            format!("client_secret_files {}", file.display())
        ]
    );
    match &cfg.connections[0].credential {
        ClientCredential::Secrets(s) => {
            assert_eq!(
                s[1].value.expose_secret(),
                "oldQ~secret-from-a-file-000000000000000"
            );
        }
        other => panic!("expected secrets, got {other:?}"),
    }
    // The single key still works and is labelled by its key and variable.
    let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
    assert_eq!(
        cfg.connections[0].credential.secret_labels(),
        vec!["client_secret_env SECRET"]
    );
}

#[test]
fn secret_lists_are_checked_by_item() {
    assert_eq!(
        err_key(&raw(
            "client_secret_env = \"SECRET\"\nclient_secrets_env = [\"SECRET\"]"
        )),
        "connections[0].client_secrets_env"
    );
    assert_eq!(
        err_key(&raw("client_secrets_env = []")),
        "connections[0].client_secrets_env"
    );
    assert_eq!(
        err_key(&raw("client_secrets_env = [\"SECRET\", \"UNSET_VAR\"]")),
        "connections[0].client_secrets_env[1]"
    );
    assert_eq!(
        err_key(&raw("client_secret_files = [\"/nonexistent/secret\"]")),
        "connections[0].client_secret_files[0]"
    );
}

#[test]
fn missing_secret_names_the_key() {
    assert_eq!(err_key(&raw("")), "connections[0].client_secret_env");
    assert_eq!(
        err_key(&raw(r#"client_secret_env = "UNSET_VAR""#)),
        "connections[0].client_secret_env"
    );
}

#[test]
fn non_https_metadata_off_loopback_is_refused() {
    let toml = raw(r#"client_secret_env = "SECRET""#).replace(
        "https://login.microsoftonline",
        "http://login.microsoftonline",
    );
    assert_eq!(err_key(&toml), "connections[0].metadata_url");
}

#[test]
fn bad_urls_are_refused() {
    let toml =
        raw(r#"client_secret_env = "SECRET""#).replace("https://sso.example.com", "not a url");
    assert_eq!(err_key(&toml), "public_url");
    let toml = raw(r#"client_secret_env = "SECRET""#)
        .replace("https://sso.example.com", "http://sso.example.com");
    assert_eq!(err_key(&toml), "public_url");
    let toml =
        raw(r#"client_secret_env = "SECRET""#).replace("/.well-known/openid-configuration", "/");
    assert_eq!(err_key(&toml), "connections[0].metadata_url");
}

#[test]
fn duplicate_ids_are_refused() {
    let one = raw(r#"client_secret_env = "SECRET""#);
    let second = one
        .split("[[connections]]")
        .nth(1)
        .expect("has a connection")
        .to_owned();
    let toml = format!("{one}\n[[connections]]{second}");
    assert_eq!(err_key(&toml), "connections[1].id");
}

#[test]
fn domains_are_lower_cased_host_names_each_under_one_connection() {
    let cfg = parse(&raw(
        "client_secret_env = \"SECRET\"\ndomains = [\"Contoso.COM\", \"contoso.com.\", \"eu.contoso.com\"]",
    ))
    .expect("valid");
    assert_eq!(
        cfg.connections[0].domains,
        ["contoso.com", "eu.contoso.com"]
    );
    for bad in [
        "\"@contoso.com\"",
        "\"*.contoso.com\"",
        "\"https://contoso.com\"",
        "\"contoso\"",
        "\"\"",
    ] {
        assert_eq!(
            err_key(&raw(&format!(
                "client_secret_env = \"SECRET\"\ndomains = [{bad}]"
            ))),
            "connections[0].domains",
            "{bad}"
        );
    }
    let one = raw("client_secret_env = \"SECRET\"\ndomains = [\"contoso.com\"]");
    let second = one
        .split("[[connections]]")
        .nth(1)
        .expect("has a connection")
        .replace("id = \"contoso\"", "id = \"fabrikam\"")
        .replace("[\"contoso.com\"]", "[\"fabrikam.com\", \"CONTOSO.com\"]");
    let err = parse(&format!("{one}\n[[connections]]{second}")).expect_err("shared domain");
    let text = err.to_string();
    assert!(text.contains("connections[1].domains"), "{text}");
    assert!(
        text.contains("\"contoso\"") && text.contains("\"fabrikam\""),
        "{text}"
    );
}

#[test]
fn allowed_groups_and_roles_must_name_something() {
    let cfg = parse(&raw(
        "client_secret_env = \"SECRET\"\nallowed_groups = [\" g1 \"]\nallowed_roles = [\"App.Admin\"]",
    ))
    .expect("valid");
    assert_eq!(cfg.connections[0].access.groups, ["g1"]);
    assert_eq!(cfg.connections[0].access.roles, ["App.Admin"]);
    assert!(
        !parse(&raw("client_secret_env = \"SECRET\""))
            .expect("valid")
            .connections[0]
            .access
            .is_restricted()
    );
    for (line, key) in [
        ("allowed_groups = []", "connections[0].allowed_groups"),
        ("allowed_roles = [\"\"]", "connections[0].allowed_roles"),
    ] {
        assert_eq!(
            err_key(&raw(&format!("client_secret_env = \"SECRET\"\n{line}"))),
            key
        );
    }
}

#[test]
fn the_forward_auth_header_budget_has_a_default_and_bounds() {
    let ok = raw("client_secret_env = \"SECRET\"");
    assert_eq!(
        parse(&ok).expect("valid").forward_auth.max_header_bytes,
        4096
    );
    let set = |n: usize| {
        ok.replacen(
            "[[connections]]",
            &format!("[forward_auth]\nmax_header_bytes = {n}\n[[connections]]"),
            1,
        )
    };
    assert_eq!(
        parse(&set(8192))
            .expect("valid")
            .forward_auth
            .max_header_bytes,
        8192
    );
    assert_eq!(err_key(&set(10)), "forward_auth.max_header_bytes");
}

#[test]
fn server_limits_have_defaults_and_bounds() {
    let ok = raw("client_secret_env = \"SECRET\"");
    let server = parse(&ok).expect("valid").server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.request_timeout, Duration::from_secs(60));
    assert_eq!(server.max_connections, 4096);
    let set = |line: &str| {
        ok.replacen(
            "[[connections]]",
            &format!("[server]\n{line}\n[[connections]]"),
            1,
        )
    };
    let server = parse(&set(
        "header_read_timeout_secs = 2\nrequest_timeout_secs = 1\nmax_connections = 2",
    ))
    .expect("valid")
    .server;
    assert_eq!(server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(server.request_timeout, Duration::from_secs(1));
    assert_eq!(server.max_connections, 2);
    for (line, key) in [
        (
            "header_read_timeout_secs = 0",
            "server.header_read_timeout_secs",
        ),
        (
            "header_read_timeout_secs = 301",
            "server.header_read_timeout_secs",
        ),
        ("request_timeout_secs = 0", "server.request_timeout_secs"),
        ("request_timeout_secs = 3601", "server.request_timeout_secs"),
        ("max_connections = 0", "server.max_connections"),
        ("max_connections = 2000000", "server.max_connections"),
    ] {
        assert_eq!(err_key(&set(line)), key, "{line}");
    }
}

/// Issue 12.9: the client-IP header is believed only from listed proxies. A header without
/// them stops startup (it used to be believed from anyone), naming both keys and the fix.
#[test]
fn a_client_ip_header_needs_trusted_proxies() {
    let ok = raw("client_secret_env = \"SECRET\"");
    let set = |lines: &str| {
        ok.replacen(
            "[[connections]]",
            &format!("[rate_limit]\n{lines}\n[[connections]]"),
            1,
        )
    };
    let (key, problem, fix) = err_of(&set("client_ip_header = \"X-Forwarded-For\""));
    assert_eq!(key, "rate_limit.client_ip_header");
    assert!(
        problem.contains("rate_limit.trusted_proxies is empty"),
        "{problem}"
    );
    assert!(fix.contains("trusted_proxies = [\"127.0.0.1\"]"), "{fix}");

    let limits = parse(&set(
        "client_ip_header = \"X-Real-IP\"\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]",
    ))
    .expect("valid")
    .rate_limit
    .expect("on by default");
    assert_eq!(limits.trusted_proxies.len(), 3);
    assert!(
        limits.trusted_proxies[1].contains("10.9.8.7".parse().expect("ip")),
        "{:?}",
        limits.trusted_proxies
    );

    let (key, problem, _) = err_of(&set(
        "client_ip_header = \"X-Real-IP\"\ntrusted_proxies = [\"10.0.0.1/8\"]",
    ));
    assert_eq!(key, "rate_limit.trusted_proxies[0]");
    assert!(problem.contains("host bits"), "{problem}");
    assert_eq!(
        err_key(&set(
            "client_ip_header = \"X-Real-IP\"\ntrusted_proxies = [\"proxy.internal\"]"
        )),
        "rate_limit.trusted_proxies[0]"
    );
}

#[test]
fn the_admin_table_defaults_to_no_traces_on_the_public_listener() {
    let ok = raw("client_secret_env = \"SECRET\"");
    assert!(!parse(&ok).expect("valid").admin_on_loopback);
    let on = ok.replacen(
        "[[connections]]",
        "[admin]\nallow_loopback_without_proxy = true\n[[connections]]",
        1,
    );
    assert!(parse(&on).expect("valid").admin_on_loopback);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let toml = raw(r#"client_secret_env = "SECRET"
clientid = "typo""#);
    let err = parse(&toml).expect_err("unknown key");
    assert!(err.to_string().contains("clientid"), "{err}");
}

#[test]
fn the_annotated_entra_example_is_valid() {
    let raw: RawConfig = Figment::new()
        .merge(Toml::string(include_str!(
            "../../config/entra.example.toml"
        )))
        .extract()
        .expect("example parses");
    let cfg = Config::from_raw(raw, &|name| {
        (name == "CONTOSO_CLIENT_SECRET")
            .then(|| "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR".to_owned())
    })
    .expect("example validates");
    assert_eq!(cfg.redirect_uri(), "https://sso.example.com/login/callback");
}

#[test]
fn a_cookie_domain_must_contain_the_public_host_and_switches_the_prefix() {
    let toml = raw(r#"client_secret_env = "SECRET""#).replace(
        "[[connections]]",
        "[session]\ncookie_domain = \"example.com\"\n[[connections]]",
    );
    let cfg = parse(&toml).expect("valid");
    assert_eq!(cfg.session.cookie_name, "__Secure-entrance");
    let toml = toml.replace(
        "cookie_domain = \"example.com\"",
        "cookie_domain = \"evil.example\"",
    );
    assert_eq!(err_key(&toml), "session.cookie_domain");
}

#[test]
fn the_embedded_demo_config_is_valid() {
    let raw: RawConfig = Figment::new()
        .merge(Toml::string(DEMO_TOML))
        .extract()
        .expect("demo parses");
    Config::from_raw(raw, &|_| None).expect("demo validates");
}

fn with_session(session: &str) -> String {
    raw(r#"client_secret_env = "SECRET""#).replacen(
        "[[connections]]",
        &format!("[session]\n{session}\n[[connections]]"),
        1,
    )
}

#[test]
fn sqlite_is_the_default_store() {
    let cfg = parse(&raw(r#"client_secret_env = "SECRET""#)).expect("valid");
    match cfg.session.store {
        StoreKind::Sqlite { path } => assert_eq!(path, Path::new("entrance-sessions.db")),
        other => panic!("expected sqlite, got {other:?}"),
    }
    assert_eq!(cfg.session.store_timeout, Duration::from_millis(1000));
    assert_eq!(cfg.session.cache_entries, 10_000);
}

#[test]
fn the_session_read_cache_is_sized_or_turned_off_by_cache_entries() {
    let cfg = parse(&with_session("cache_entries = 0")).expect("0 turns it off");
    assert_eq!(cfg.session.cache_entries, 0);
    assert_eq!(
        err_key(&with_session("cache_entries = 100000000")),
        "session.cache_entries"
    );
}

#[test]
fn store_settings_are_checked_by_key() {
    assert_eq!(
        err_key(&with_session(r#"store = "redis""#)),
        "session.redis_url"
    );
    assert_eq!(
        err_key(&with_session(
            "store = \"redis\"\nredis_url = \"http://127.0.0.1:6379\""
        )),
        "session.redis_url"
    );
    assert_eq!(
        err_key(&with_session(
            "store = \"redis\"\nredis_url = \"redis://h\"\nredis_pool_size = 0"
        )),
        "session.redis_pool_size"
    );
    assert_eq!(err_key(&with_session(r#"store = "disk""#)), "session.store");
    assert_eq!(
        err_key(&with_session(r#"sqlite_path = """#)),
        "session.sqlite_path"
    );
    assert_eq!(
        err_key(&with_session("store_timeout_ms = 0")),
        "session.store_timeout_ms"
    );
    let cfg = parse(&with_session(
        "store = \"redis\"\nredis_url = \"rediss://user:pw@cache.example:6380/0\"",
    ))
    .expect("valid");
    match cfg.session.store {
        StoreKind::Redis(r) => {
            assert_eq!(r.key_prefix, "entrance:session:");
            assert_eq!(r.pool_size, 4);
        }
        other => panic!("expected redis, got {other:?}"),
    }
}

#[test]
fn a_redis_password_is_never_repeated_in_errors() {
    let err = parse(&with_session(
        "store = \"redis\"\nredis_url = \"redis://u:hunter2@\"",
    ))
    .expect_err("no host");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn doctor_keys_parse_as_dates_and_guids() {
    let cfg = parse(&raw(r#"client_secret_env = "SECRET"
client_secret_expires_at = 2027-05-01
home_tenant = "aaaabbbb-0000-cccc-1111-dddd2222eeee"
verify_scope = "api://x/.default""#))
    .expect("valid");
    let c = &cfg.connections[0];
    assert_eq!(
        c.client_secret_expires_at,
        Some(time::macros::datetime!(2027-05-01 00:00 UTC))
    );
    assert_eq!(c.verify_scope.as_deref(), Some("api://x/.default"));
    let cfg = parse(&raw(r#"client_secret_env = "SECRET"
client_secret_expires_at = "2027-05-01T09:30:00+02:00""#))
    .expect("valid");
    assert_eq!(
        cfg.connections[0].client_secret_expires_at,
        Some(time::macros::datetime!(2027-05-01 07:30 UTC))
    );
    assert_eq!(
        err_key(&raw(r#"client_secret_env = "SECRET"
client_secret_expires_at = "next May""#)),
        "connections[0].client_secret_expires_at"
    );
    assert_eq!(
        err_key(&raw(r#"client_secret_env = "SECRET"
home_tenant = "contoso.com""#)),
        "connections[0].home_tenant"
    );
}

#[test]
fn the_lenient_path_keeps_secret_and_client_id_problems_for_the_doctor() {
    let toml = format!(
        "{}\n[[connections]]\nid = \"b\"\nmetadata_url = \"https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration\"\nclient_id = \"not-a-guid\"\nclient_secret = \" c3a1f4b2-7d4e-4b8a-9f1e-2a3b4c5d6e7f \"\n",
        raw("")
    );
    // Strict: the first connection's missing secret stops everything.
    assert_eq!(err_key(&toml), "connections[0].client_secret_env");
    let raw_cfg: RawConfig = Figment::new()
        .merge(Toml::string(&toml))
        .extract()
        .expect("parses");
    let lenient = Config::from_raw_lenient(raw_cfg, &|_| None).expect("lenient loads");
    assert_eq!(lenient.config.connections.len(), 2);
    assert_eq!(lenient.secrets.len(), 2);
    let secret = |i: usize| lenient.secrets[i].first().expect("a secret connection");
    assert!(secret(0).value.is_err());
    assert_eq!(secret(1).source, SecretSource::Inline);
    let untrimmed = secret(1).value.as_ref().expect("read");
    assert!(untrimmed.expose_secret().starts_with(' '));
    assert_eq!(lenient.config.connections[1].client_id, "not-a-guid");
}

/// Writes a test certificate and key to fresh files; returns the TOML lines naming them.
fn cert_files(tc: &mock_idp::TestCertificate, key_pem: &str) -> String {
    let dir = std::env::temp_dir().join(format!("entrance-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &tc.cert_pem).expect("write cert");
    std::fs::write(&key, key_pem).expect("write key");
    format!(
        "client_certificate_file = {:?}\nclient_private_key_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    )
}

fn err_of(toml: &str) -> (String, String, String) {
    match parse(toml) {
        Err(ConfigError::Invalid { key, problem, fix }) => (key, problem, fix),
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

#[test]
fn a_certificate_connection_loads_with_ps256_by_default_and_rs256_on_request() {
    let tc = mock_idp::TestCertificate::generate_valid_for_days("cfg", 90).expect("cert");
    let files = cert_files(&tc, tc.key_pem());
    let cfg = parse(&raw(&files)).expect("valid");
    let cert = cfg.connections[0]
        .credential
        .certificate()
        .expect("a certificate credential");
    assert_eq!(cert.alg, AssertionAlg::Ps256);
    assert!(cert.subject.contains("cfg"), "{}", cert.subject);
    let cfg = parse(&raw(&format!(
        "{files}\nclient_assertion_alg = \"RS256\"\nclient_auth = \"private_key_jwt\""
    )))
    .expect("valid");
    let cert = cfg.connections[0].credential.certificate().expect("cert");
    assert_eq!(cert.alg, AssertionAlg::Rs256);
    // The secret never prints, and neither does the key.
    assert!(!format!("{cfg:?}").contains("PRIVATE KEY"));
}

#[test]
fn secret_and_certificate_together_or_half_a_certificate_are_refused() {
    let tc = mock_idp::TestCertificate::generate_valid_for_days("cfg", 90).expect("cert");
    let files = cert_files(&tc, tc.key_pem());
    let (key, problem, fix) = err_of(&raw(&format!("{files}\nclient_secret_env = \"SECRET\"")));
    assert_eq!(key, "connections[0].client_certificate_file");
    assert!(problem.contains("both"), "{problem}");
    assert!(fix.contains("keep one"), "{fix}");
    let only_cert = files.lines().next().expect("cert line").to_owned();
    assert_eq!(
        err_key(&raw(&only_cert)),
        "connections[0].client_private_key_file"
    );
    assert_eq!(
        err_key(&raw(&format!("{files}\nclient_assertion_alg = \"ES256\""))),
        "connections[0].client_assertion_alg"
    );
    assert_eq!(
        err_key(&raw(
            "client_secret_env = \"SECRET\"\nclient_assertion_alg = \"PS256\""
        )),
        "connections[0].client_assertion_alg"
    );
    assert_eq!(
        err_key(&raw(&format!(
            "{files}\nclient_auth = \"client_secret_post\""
        ))),
        "connections[0].client_auth"
    );
    assert_eq!(
        err_key(&raw(&format!(
            "{files}\nclient_secret_expires_at = 2030-01-01"
        ))),
        "connections[0].client_secret_expires_at"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_by_name() {
    let a = mock_idp::TestCertificate::generate_valid_for_days("a", 90).expect("a");
    let b = mock_idp::TestCertificate::generate_valid_for_days("b", 90).expect("b");
    let (key, problem, fix) = err_of(&raw(&cert_files(&a, b.key_pem())));
    assert_eq!(key, "connections[0].client_private_key_file");
    assert!(problem.contains("does not belong"), "{problem}");
    assert!(fix.contains("client_certificate_file"), "{fix}");
    let missing = raw(
        "client_certificate_file = \"/nonexistent/cert.pem\"\nclient_private_key_file = \"/nonexistent/key.pem\"",
    );
    assert_eq!(err_key(&missing), "connections[0].client_certificate_file");
}

#[test]
fn an_expired_certificate_stops_startup_but_not_the_doctor() {
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    let tc = mock_idp::TestCertificate::generate("old", now - 400 * day, now - day).expect("cert");
    let toml = raw(&cert_files(&tc, tc.key_pem()));
    let (key, problem, fix) = err_of(&toml);
    assert_eq!(key, "connections[0].client_certificate_file");
    assert!(problem.contains("expired"), "{problem}");
    assert!(fix.contains("upload a new certificate"), "{fix}");
    // `entrance check` loads it and reports the expiry as a line of its own.
    let raw_cfg: RawConfig = Figment::new()
        .merge(Toml::string(&toml))
        .extract()
        .expect("parses");
    let lenient = Config::from_raw_lenient(raw_cfg, &|_| None).expect("lenient loads");
    assert!(lenient.secrets[0].is_empty());
    assert!(
        lenient.config.connections[0]
            .credential
            .certificate()
            .is_some()
    );
}

#[test]
fn a_raw_configuration_prints_no_secret() {
    let raw: RawConfig = Figment::new()
        .merge(Toml::string(
            r#"
listen = "127.0.0.1:0"
public_url = "https://sso.example.com"
[session]
store = "redis"
redis_url = "redis://:r3dis-s3cret@cache:6379"
[[connections]]
id = "c"
metadata_url = "https://idp.example/.well-known/openid-configuration"
client_id = "x"
client_secret = "inline-s3cret"
"#,
        ))
        .extract()
        .expect("parses");
    let text = format!("{raw:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn the_demo_secret_is_the_mocks() {
    assert_eq!(DEMO_CLIENT_SECRET, mock_idp::DEFAULT_CLIENT_SECRET);
}

#[test]
fn the_embedded_demo_config_warns_about_nothing() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts WARN and ERROR events.
    struct Warnings(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() <= tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Warnings(count.clone()));
    tracing::subscriber::with_default(subscriber, || {
        Config::load_str(DEMO_TOML).expect("demo loads");
    });
    assert_eq!(
        count.load(Ordering::Relaxed),
        0,
        "entrance demo warns about itself"
    );

    // A real secret written inline still warns.
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Warnings(count.clone()));
    let toml = DEMO_TOML.replace(
        DEMO_CLIENT_SECRET,
        "Zq88Q~someRealLookingSecretValue0123456789",
    );
    tracing::subscriber::with_default(subscriber, || {
        Config::load_str(&toml).expect("loads");
    });
    assert!(count.load(Ordering::Relaxed) > 0);
}

/// Issue 15.2: a connection proves itself one way — secret(s), certificate or federated
/// assertion — and Azure Workload Identity's variables fill in and are held to the config.
mod federated {
    use super::*;

    fn parse_with(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        Config::from_raw(raw, &|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn without_client_id(extra: &str) -> String {
        raw(extra).replace("client_id = \"00001111-aaaa-2222-bbbb-3333cccc4444\"\n", "")
    }

    #[test]
    fn a_token_file_is_the_credential_and_must_exist() {
        let (path, _dir) = temp_file("token", b"header.payload.sig\n");
        let line = format!("client_assertion_file = {:?}", path.display().to_string());
        let cfg = parse_with(&raw(&line), &[]).expect("a federated connection");
        match &cfg.connections[0].credential {
            ClientCredential::Federated(f) => {
                assert_eq!(
                    f.source,
                    crate::federated::AssertionSource::File(path.clone())
                );
            }
            other => panic!("expected a federated credential, got {other:?}"),
        }
        let missing = raw("client_assertion_file = \"/nonexistent/token\"");
        let err = parse_with(&missing, &[]).expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }

    #[test]
    fn a_federated_credential_beside_a_secret_or_another_source_is_refused() {
        let (path, _dir) = temp_file("token", b"t");
        let file = format!("client_assertion_file = {:?}", path.display().to_string());
        for extra in [
            format!("{file}\nclient_secret_env = \"SECRET\""),
            format!("{file}\nclient_assertion_env = \"TOKEN\""),
            format!("{file}\nworkload_identity = true"),
        ] {
            let err =
                parse_with(&raw(&extra), &[("SECRET", "x"), ("TOKEN", "t")]).expect_err(&extra);
            assert!(
                err.to_string().contains("client_assertion_file"),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn workload_identity_reads_the_webhook_variables() {
        let (path, _dir) = temp_file("azure-identity-token", b"t");
        let file = path.display().to_string();
        let cfg = parse_with(
            &without_client_id("workload_identity = true"),
            &[
                ("AZURE_FEDERATED_TOKEN_FILE", file.as_str()),
                ("AZURE_CLIENT_ID", "00001111-aaaa-2222-bbbb-3333cccc4444"),
                ("AZURE_TENANT_ID", "aaaabbbb-0000-cccc-1111-dddd2222eeee"),
            ],
        )
        .expect("workload identity");
        assert_eq!(
            cfg.connections[0].client_id,
            "00001111-aaaa-2222-bbbb-3333cccc4444"
        );
        // Without the file variable: says how the webhook sets it.
        let err = parse_with(&raw("workload_identity = true"), &[]).expect_err("no file");
        assert!(
            err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{err}"
        );
        // Another tenant than the metadata URL's, another app than client_id: refused.
        let err = parse_with(
            &raw("workload_identity = true"),
            &[
                ("AZURE_FEDERATED_TOKEN_FILE", file.as_str()),
                ("AZURE_TENANT_ID", "bbbbcccc-1111-dddd-2222-eeee3333ffff"),
            ],
        )
        .expect_err("tenant mismatch");
        assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
        let err = parse_with(
            &raw("workload_identity = true"),
            &[
                ("AZURE_FEDERATED_TOKEN_FILE", file.as_str()),
                ("AZURE_CLIENT_ID", "22223333-cccc-4444-dddd-5555eeee6666"),
            ],
        )
        .expect_err("client mismatch");
        assert!(err.to_string().contains("AZURE_CLIENT_ID"), "{err}");
    }
}
