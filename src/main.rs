//! The `entrance` command: `serve` a configuration, `check` it (the setup doctor), read a
//! running instance's failed logins (`traces`), probe its `/healthz` (`healthcheck`), or run the `demo` with the bundled mock IdP.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use entrance::{Application, Config};

/// mimalloc instead of the system allocator: every request allocates (headers, the session
/// record, the identity), and glibc's malloc showed up as ~10 % of `/auth`'s CPU under load
/// (docs/BENCHMARKS.md, "Profile").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "The OpenID Connect login callback endpoint for Microsoft Entra ID and any OIDC provider"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "ENTRANCE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configuration in FILE (TOML; `ENTRANCE_…` variables override keys).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check the configuration in FILE against its IdPs: one line per check with ok, warning
    /// or error and the fix. Exit status 0 when no check is an error, 1 otherwise, 2 when the
    /// file cannot be loaded.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Check only the connection with this id.
        #[arg(long, value_name = "ID")]
        connection: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Prove each client ID and secret with a client-credentials token request.
        #[arg(long)]
        verify_secret: bool,
    },
    /// Print a running entrance's last failed logins for one connection, newest first: time,
    /// step, reason, AADSTS code, Entra's trace and correlation ids, and the reference id to
    /// find in the log. Asks the admin listener (or, without one, `listen`) on loopback.
    Traces {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The connection's id (`unknown` for callbacks whose connection was not known).
        #[arg(long, value_name = "ID")]
        connection: String,
        /// Print the server's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running entrance configured in FILE whether it serves: `GET /healthz` on
    /// `admin_listen` (or `listen`) over loopback. Exit status 0 when it answers 200, 1
    /// otherwise (a container's HEALTHCHECK).
    Healthcheck {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the running entrance's connections — the file's and those created through setup
    /// links — with their state, from its admin listener's `/readyz`.
    Connections {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print the JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Create, list or revoke setup links: one-time links that let a customer's Entra admin
    /// register the app and check every value live (`https://<public_url>/setup/<token>`).
    /// Asks the running entrance's admin listener (or, without one, `listen`) on loopback.
    SetupLink {
        #[command(subcommand)]
        action: SetupLinkCommand,
    },
    /// Run entrance and the bundled mock IdP together on loopback and print the URL to open.
    Demo {
        /// A configuration with a [demo] table; the embedded config/entrance.toml by default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SetupLinkCommand {
    /// Create a link for a connection not yet configured; prints its URL (shown only now).
    Create {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The new connection's id (as in `/login?connection=ID`).
        #[arg(long, value_name = "ID")]
        connection: String,
        /// The name users see; the id by default.
        #[arg(long)]
        name: Option<String>,
        /// How long the link works: `7d` (the default), `12h`, `90m`; at most 30 days.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List the links (never their tokens).
    List {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Revoke a link by the id `list` shows.
    Revoke {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "ID")]
        id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // For `check` the report is the output; log lines would only repeat it (RUST_LOG still
    // works).
    let default_level = match cli.command {
        Command::Check { .. }
        | Command::Traces { .. }
        | Command::Healthcheck { .. }
        | Command::SetupLink { .. }
        | Command::Connections { .. } => "error",
        _ => "info",
    };
    let json = cli.log_json;
    // `serve` and `demo` install the log output once the configuration is read (it may turn
    // traces on); the lines logged while reading it go to a plain one.
    let startup = || entrance::startup_subscriber(json, default_level);
    if !matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }) {
        entrance::init_logging(json, default_level);
    }
    let result = match cli.command {
        Command::Check {
            config,
            connection,
            json,
            verify_secret,
        } => {
            return entrance::cli::check(&config, connection.as_deref(), json, verify_secret).await;
        }
        Command::Traces {
            config,
            connection,
            json,
        } => return entrance::cli::traces(&config, &connection, json).await,
        Command::Healthcheck { config } => return entrance::cli::healthcheck(&config).await,
        Command::Connections { config, json } => {
            return entrance::cli::connections(&config, json).await;
        }
        Command::SetupLink { action } => {
            use entrance::cli::SetupLinkAction;
            let (config, action) = match action {
                SetupLinkCommand::Create {
                    config,
                    connection,
                    name,
                    expires,
                } => (
                    config,
                    SetupLinkAction::Create {
                        connection,
                        name,
                        expires,
                    },
                ),
                SetupLinkCommand::List { config } => (config, SetupLinkAction::List),
                SetupLinkCommand::Revoke { config, id } => (config, SetupLinkAction::Revoke { id }),
            };
            return entrance::cli::setup_link(&config, action).await;
        }
        Command::Serve { config: path } => {
            let config = tracing::subscriber::with_default(startup(), || Config::load(&path));
            with_telemetry(json, config, |config| serve(config, path)).await
        }
        Command::Demo { config } => {
            let config = tracing::subscriber::with_default(startup(), || match config {
                Some(path) => Config::load(&path),
                None => Config::load_str(entrance::DEMO_TOML),
            });
            with_telemetry(json, config, demo).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("entrance: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `run` with the global log output installed (`start_telemetry`), then flushes the
/// traces still queued.
async fn with_telemetry<F, Fut>(
    json: bool,
    config: Result<Config, entrance::ConfigError>,
    run: F,
) -> Result<(), String>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let (config, telemetry) = start_telemetry(json, config)?;
    let result = run(config).await;
    telemetry.shutdown().await;
    result
}

/// The global log output, with OpenTelemetry traces when `telemetry.otlp_endpoint` or the
/// `OTEL_*` variables name a collector (README, "Tracing (OpenTelemetry)").
fn start_telemetry(
    json: bool,
    config: Result<Config, entrance::ConfigError>,
) -> Result<(Config, entrance::Telemetry), String> {
    let config = config.map_err(|e| e.to_string())?;
    let otlp = entrance::resolve_otlp(config.otlp_endpoint.as_ref(), &|name| {
        std::env::var(name).ok()
    })
    .map_err(|e| e.to_string())?;
    let telemetry =
        entrance::init_telemetry(json, "info", otlp.as_ref()).map_err(|e| e.to_string())?;
    if let Some(otlp) = &otlp {
        tracing::info!(
            endpoint = %otlp.traces_url,
            protocol = if otlp.json { "http/json" } else { "http/protobuf" },
            "exporting traces (OpenTelemetry)"
        );
    }
    Ok((config, telemetry))
}

async fn serve(config: Config, path: PathBuf) -> Result<(), String> {
    let mut app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    app.reload_on_sighup(path)
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    tracing::info!(address = %app.local_addr(), "entrance listening");
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Without the `demo` feature the mock IdP is not in the binary.
#[cfg(not(feature = "demo"))]
async fn demo(_config: Config) -> Result<(), String> {
    Err("this build has no demo: rebuild with the default `demo` feature".to_owned())
}

#[cfg(feature = "demo")]
async fn demo(config: Config) -> Result<(), String> {
    use entrance::ClientCredential;
    use secrecy::ExposeSecret as _;

    let listen = config
        .demo_mock_idp_listen
        .ok_or("the configuration has no [demo] table with mock_idp_listen")?;
    let conn = config
        .connections
        .first()
        .ok_or("the configuration has no connection")?;
    let (client_secrets, client_certificates) = match &conn.credential {
        ClientCredential::Secrets(s) => (
            s.iter()
                .map(|s| s.value.expose_secret().to_owned())
                .collect(),
            Vec::new(),
        ),
        ClientCredential::Certificate(c) => (Vec::new(), vec![c.certificate_pem.clone()]),
        ClientCredential::Federated(_) => {
            return Err("the demo's mock IdP knows client secrets and certificates; a federated credential (client_assertion_file, workload_identity) is for a real tenant".to_owned());
        }
    };
    let idp = mock_idp::MockIdp::start(mock_idp::MockIdpSettings {
        listen,
        client_id: conn.client_id.clone(),
        client_secrets,
        client_certificates,
        redirect_uris: vec![config.redirect_uri()],
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot start the mock IdP on {listen}: {e}"))?;
    let public = config.public_origin();
    let app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    println!();
    println!(
        "  entrance demo (mock IdP, a test tool, at {})",
        idp.base_url()
    );
    println!(
        "  open {public}/  →  pick a sign-in button (query or form_post); then see {public}/me"
    );
    println!("  Ctrl-C stops both.");
    println!();
    let result = app.run_until_stopped(shutdown_signal()).await;
    idp.shutdown().await;
    result.map_err(|e| e.to_string())
}

/// Ctrl-C or SIGTERM (what container runtimes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
