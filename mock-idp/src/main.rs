//! `mock-idp`: runs the Entra-shaped mock OpenID provider as a process (TEST TOOL only).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use mock_idp::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, MockIdp, MockIdpSettings,
};

/// Entra-ID-shaped mock OpenID provider for tests. Signs in a fixed fake user without any
/// UI. Never use it to protect anything.
#[derive(Debug, Parser)]
#[command(name = "mock-idp", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Allow listening on a non-loopback address (the mock authenticates nobody).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Tenant (directory) ID used in the issuer and endpoint paths.
    #[arg(long, default_value = DEFAULT_TENANT_ID)]
    tenant_id: String,
    /// Application (client) ID the mock accepts.
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    client_id: String,
    /// Accepted client secret (repeatable).
    #[arg(long = "client-secret", default_values_t = [DEFAULT_CLIENT_SECRET.to_owned()])]
    client_secrets: Vec<String>,
    /// Registered redirect URI, matched exactly (repeatable).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// The origin clients reach the mock at when it differs from `http://LISTEN` (a
    /// container publishing its port, docker-compose.yml): the issuer and endpoints use it.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Show a page with a Continue button before signing in (a user who takes their time at
    /// the IdP; `Behaviour::continue_page`).
    #[arg(long)]
    continue_page: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-idp: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // The mock signs anyone in; exposing it beyond this host must be a deliberate choice.
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        return Err(format!(
            "refusing to listen on non-loopback address {} (pass --allow-non-loopback to override)",
            args.listen
        )
        .into());
    }
    let client_id = args.client_id.clone();
    let idp = MockIdp::start(MockIdpSettings {
        listen: args.listen,
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        client_secrets: args.client_secrets,
        redirect_uris: args.redirect_uris,
        public_url: args.public_url,
        ..MockIdpSettings::default()
    })
    .await?;
    if args.continue_page {
        idp.set_behaviour(mock_idp::Behaviour {
            continue_page: true,
            ..Default::default()
        });
    }
    println!(
        "mock-idp: TEST TOOL - an Entra-shaped mock OpenID provider; it authenticates nobody."
    );
    println!("metadata URL: {}", idp.metadata_url());
    println!("client id:    {client_id}");
    shutdown_signal().await?;
    idp.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `docker stop` sends; the mock runs as a container's PID 1 in the
/// compose rig, where SIGINT is not sent).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
