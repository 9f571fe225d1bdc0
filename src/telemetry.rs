//! Log output: human-readable by default, JSON with `--log-json` or `ENTRANCE_LOG_FORMAT=json`;
//! the level from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber; `default_filter` is the level when `RUST_LOG` is unset
/// (`entrance check` logs only errors).
pub fn init_with_default(json: bool, default_filter: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // tower-sessions wraps every request in an INFO span of its own ("call") that no log line
    // needs; at INFO it was ~10 % of a `GET /auth`'s instructions. Quiet unless RUST_LOG names it.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("tower_sessions"))
        && let Ok(quiet) = "tower_sessions=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        // Colours only for a terminal: escape codes are noise in a log file or a collector,
        // and colouring each request span's fields cost ~7 % of a `GET /auth`.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry.with(fmt::layer().with_ansi(ansi)).try_init()
    };
    // Already initialised (tests): keep the existing subscriber.
    let _ = result;
}
