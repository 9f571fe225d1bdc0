//! Log output — human-readable by default, JSON with `--log-json` or `ENTRANCE_LOG_FORMAT=json`,
//! the level from `RUST_LOG` (default `info`) — and, when an OTLP endpoint is configured,
//! OpenTelemetry traces: the spans exported over OTLP/HTTP, W3C `traceparent` read from
//! requests and written on outbound calls.
//!
//! The subscriber and the tracer provider are process-global (one per process, like the log
//! output): [`exporting`] says whether traces are on, for the few places that act on it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Whether spans are exported (set once, by [`init`] with an endpoint).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether OpenTelemetry traces are on in this process.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Where and how spans are exported, from `telemetry.otlp_endpoint` and the standard
/// `OTEL_*` variables ([`resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The full traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `http/protobuf` (the OTLP default) or `http/json`.
    pub json: bool,
}

/// Why traces could not be set up. Each names the variable or key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{var}={value:?}: entrance exports OTLP over HTTP only\n  fix: use http/protobuf (the collector's port 4318) or http/json"
    )]
    Protocol { var: &'static str, value: String },
    #[error(
        "OTEL_TRACES_EXPORTER={0:?}: entrance exports traces only by OTLP\n  fix: set it to otlp, or none to turn traces off"
    )]
    Exporter(String),
    #[error("cannot set up the OTLP exporter for {url}: {reason}")]
    Build { url: String, reason: String },
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`'s path for traces (OTLP spec, "Endpoint URLs for OTLP/HTTP").
const TRACES_PATH: &str = "v1/traces";

/// Whether and where to export, by the OpenTelemetry SDK configuration spec
/// (`OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`). The configuration file's `telemetry.otlp_endpoint`
/// comes first (a base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`), then the traces-specific
/// variable (used as is), then the general one. No endpoint anywhere: traces stay off.
/// `env` reads a variable (tests pass their own).
pub fn resolve(
    configured: Option<&url::Url>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<OtlpSettings>, TelemetryError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => return Err(TelemetryError::Exporter(other.to_owned())),
    }
    let base = |url: &str| {
        if url.trim_end_matches('/').ends_with(TRACES_PATH) {
            url.to_owned()
        } else {
            format!("{}/{TRACES_PATH}", url.trim_end_matches('/'))
        }
    };
    let traces_url = match (
        configured,
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _, _) => base(url.as_str()),
        (None, Some(url), _) => url,
        (None, None, Some(url)) => base(&url),
        (None, None, None) => return Ok(None),
    };
    let (protocol_var, protocol) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            var("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    let json = match protocol.as_deref() {
        None | Some("http/protobuf") => false,
        Some("http/json") => true,
        Some(other) => {
            return Err(TelemetryError::Protocol {
                var: protocol_var,
                value: other.to_owned(),
            });
        }
    };
    Ok(Some(OtlpSettings { traces_url, json }))
}

/// The installed log output and, with traces on, the tracer provider to flush at exit.
#[must_use = "call shutdown() at exit so the last spans are sent"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter (a graceful shutdown's last step).
    /// The batch processor's own thread does the sending; this waits for it off the runtime.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = result {
                eprintln!("entrance: flushing the last spans failed: {e}");
            }
        }
    }
}

/// A log subscriber without traces, for the lines logged before the configuration is known
/// (use with `tracing::subscriber::with_default`).
pub fn startup_subscriber(json: bool, default_filter: &str) -> impl tracing::Subscriber {
    tracing_subscriber::registry()
        .with(filter(default_filter))
        .with(plain_layer(json))
        .with(json_layer(json))
}

/// Installs the global subscriber; `default_filter` is the level when `RUST_LOG` is unset
/// (`entrance check` logs only errors).
pub fn init_with_default(json: bool, default_filter: &str) {
    // Without an exporter nothing can fail.
    let _ = init(json, default_filter, None);
}

/// Installs the global subscriber, with spans exported to `otlp` when given. Spans are the
/// `tracing` spans the code already has: the OpenTelemetry layer sees those the log level
/// lets through (`RUST_LOG`, `info` by default), so every span meant for a trace is INFO.
pub fn init(
    json: bool,
    default_filter: &str,
    otlp: Option<&OtlpSettings>,
) -> Result<Telemetry, TelemetryError> {
    let provider = otlp.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("entrance"))
            // Thread ids and names say nothing about a sign-in on a work-stealing runtime.
            .with_threads(false)
    });
    let result = tracing_subscriber::registry()
        .with(filter(default_filter))
        .with(otel)
        .with(plain_layer(json))
        .with(json_layer(json))
        .try_init();
    // Already initialised (tests): keep the existing subscriber.
    if result.is_ok() && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

fn filter(default_filter: &str) -> EnvFilter {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // tower-sessions wraps every request in an INFO span of its own ("call") that no log line
    // needs; at INFO it was ~10 % of a `GET /auth`'s instructions. Quiet unless RUST_LOG names it.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("tower_sessions"))
        && let Ok(quiet) = "tower_sessions=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    filter
}

/// The human-readable log layer, unless the output is JSON.
fn plain_layer<S>(json: bool) -> Option<fmt::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Colours only for a terminal: escape codes are noise in a log file or a collector,
    // and colouring each request span's fields cost ~7 % of a `GET /auth`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    (!json).then(|| fmt::layer().with_ansi(ansi))
}

type JsonLayer<S> = fmt::Layer<S, fmt::format::JsonFields, fmt::format::Format<fmt::format::Json>>;

/// The JSON log layer, when asked for.
fn json_layer<S>(json: bool) -> Option<JsonLayer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    json.then(|| fmt::layer().json().with_current_span(true))
}

/// The SDK's tracer provider with a batch processor and the OTLP/HTTP exporter. The SDK reads
/// the rest of the standard variables itself: `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_BSP_*`,
/// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`/`TIMEOUT`, `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn tracer_provider(otlp: &OtlpSettings) -> Result<SdkTracerProvider, TelemetryError> {
    // The batch processor exports from a thread of its own with a blocking client (reqwest's,
    // rustls): no runtime is needed to send, and none of the exporter's calls is traced.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&otlp.traces_url)
        .with_protocol(if otlp.json {
            Protocol::HttpJson
        } else {
            Protocol::HttpBinary
        })
        .build()
        .map_err(|e| TelemetryError::Build {
            url: otlp.traces_url.clone(),
            reason: e.to_string(),
        })?;
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name("entrance");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

/// Makes `span` a child of the W3C trace context in `headers` (`traceparent`, `tracestate`),
/// when traces are on and the request carries one, and returns the span's trace id (hex, 32
/// characters), which then serves as the request's correlation id. Starts the span.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<String> {
    if !exporting() {
        return None;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        // Fails only for a span the OpenTelemetry layer does not know (filtered out).
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let id = cx.span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// The current span's W3C trace context as headers for an outbound call (W3C Trace Context
/// §3: `traceparent`, and `tracestate` when there is one); `None` when traces are off.
pub(crate) fn outbound_headers() -> Option<HeaderMap> {
    if !exporting() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut headers = HeaderMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(&mut headers));
    Some(headers)
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).expect("url")
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(resolve(None, &env(&[])).expect("ok"), None);
        assert_eq!(
            resolve(None, &env(&[("OTEL_SERVICE_NAME", "sso")])).expect("ok"),
            None
        );
    }

    #[test]
    fn the_file_comes_first_then_the_traces_variable_then_the_general_one() {
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318"),
        ]);
        let file = url("http://file:4318");
        let got = resolve(Some(&file), &vars).expect("ok").expect("on");
        assert_eq!(got.traces_url, "http://file:4318/v1/traces");
        let got = resolve(None, &vars).expect("ok").expect("on");
        assert_eq!(got.traces_url, "http://t:4318/custom");
        let got = resolve(
            None,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318/")]),
        )
        .expect("ok")
        .expect("on");
        assert_eq!(got.traces_url, "http://g:4318/v1/traces");
        assert!(!got.json);
        // A base URL that already names the traces path is not given it twice.
        let full = url("http://file:4318/v1/traces");
        let got = resolve(Some(&full), &env(&[])).expect("ok").expect("on");
        assert_eq!(got.traces_url, "http://file:4318/v1/traces");
    }

    #[test]
    fn protocols_and_switches() {
        let file = url("http://c:4318");
        let got = resolve(
            Some(&file),
            &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        )
        .expect("ok")
        .expect("on");
        assert!(got.json);
        let got = resolve(
            Some(&file),
            &env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
        )
        .expect("ok")
        .expect("on");
        assert!(!got.json);
        let err = resolve(
            Some(&file),
            &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        )
        .expect_err("grpc is refused");
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
        assert_eq!(
            resolve(Some(&file), &env(&[("OTEL_SDK_DISABLED", "true")])).expect("ok"),
            None
        );
        assert_eq!(
            resolve(Some(&file), &env(&[("OTEL_TRACES_EXPORTER", "none")])).expect("ok"),
            None
        );
        assert!(resolve(Some(&file), &env(&[("OTEL_TRACES_EXPORTER", "zipkin")])).is_err());
    }
}
