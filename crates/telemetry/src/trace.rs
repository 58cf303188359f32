//! One trace per event across the whole path: the W3C `traceparent` travels from the facility
//! agent to the gateway in gRPC metadata, from the gateway to the consumers in a Kafka header
//! (and from the de-identification service on to the warehouse the same way), and every stage
//! records its span under it. Spans go over OTLP/HTTP to the collector `--otlp-endpoint`
//! names; without it nothing is exported and every helper here is a no-op.
//!
//! Sampling is decided once, where a trace starts (the agent's intake, or the gateway for a
//! caller that sends no context), with `--trace-sample-ratio`; every later stage follows the
//! decision `traceparent` carries and opens its per-event spans only for sampled events, so an
//! unsampled event costs one header lookup. Spans carry identifiers of events and stages
//! (event id, kind, topic, partition, offset), never a patient's data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (gRPC metadata key, Kafka header name) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Trace export flags common to every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// OTLP/HTTP endpoint of a trace collector, such as https://otel-collector:4318 (the path
    /// /v1/traces is added when none is given); unset: no spans are exported.
    #[arg(long, env = "LIENTHONG_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// CA certificate (PEM) the collector's certificate is checked against, when it comes
    /// from a private CA.
    #[arg(long, env = "LIENTHONG_OTLP_CA", global = true)]
    pub otlp_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a collector that requires mutual TLS; with --otlp-key.
    #[arg(
        long,
        env = "LIENTHONG_OTLP_CERT",
        global = true,
        requires = "otlp_key"
    )]
    pub otlp_cert: Option<PathBuf>,
    /// Private key (PEM) of --otlp-cert.
    #[arg(
        long,
        env = "LIENTHONG_OTLP_KEY",
        global = true,
        requires = "otlp_cert"
    )]
    pub otlp_key: Option<PathBuf>,
    /// Share of the traces started here that are recorded, from 0 to 1. Stages that continue
    /// a trace follow the decision of the stage that started it.
    #[arg(long, env = "LIENTHONG_TRACE_SAMPLE_RATIO", default_value_t = 0.01, global = true, value_parser = sample_ratio)]
    pub trace_sample_ratio: f64,
}

fn sample_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a share between 0 and 1 (0.01 records one trace in a hundred)"
        )),
    }
}

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A TLS file could not be read or parsed.
    #[error("cannot use {path} for the trace collector connection: {reason}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The exporter could not be built (a malformed endpoint, for example).
    #[error(
        "cannot export traces to {endpoint}: {reason}; give --otlp-endpoint as https://host:4318"
    )]
    Exporter {
        /// The endpoint as given.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TraceError> {
    std::fs::read(path).map_err(|e| TraceError::TlsFile {
        path: path.clone(),
        reason: e.to_string(),
    })
}

fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// The tracer provider exporting to the configured collector; None when no endpoint is set.
/// Must not be called from within an async context: the exporter's blocking HTTP client runs
/// a runtime of its own.
pub(crate) fn provider(
    args: &TraceArgs,
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, TraceError> {
    let Some(endpoint) = &args.otlp_endpoint else {
        return Ok(None);
    };
    let exporter_failed = |reason: String| TraceError::Exporter {
        endpoint: endpoint.clone(),
        reason,
    };
    let mut client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ca) = &args.otlp_ca {
        let cert = reqwest::Certificate::from_pem(&read(ca)?).map_err(|e| TraceError::TlsFile {
            path: ca.clone(),
            reason: e.to_string(),
        })?;
        client = client.add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&args.otlp_cert, &args.otlp_key) {
        let mut pem = read(cert)?;
        pem.extend_from_slice(&read(key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| TraceError::TlsFile {
            path: cert.clone(),
            reason: e.to_string(),
        })?;
        client = client.identity(identity);
    }
    let client = client.build().map_err(|e| exporter_failed(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| exporter_failed(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                args.trace_sample_ratio,
            ))))
            .with_resource(resource)
            .build(),
    ))
}

/// The tracer the tracing layer records with.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("lienthong")
}

/// The `traceparent` of `span` when it is recorded and sampled; None otherwise (no exporter,
/// an unsampled trace, a disabled span).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() || !sc.is_sampled() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The remote parent `traceparent` names, when it is well formed and sampled.
fn sampled_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier: HashMap<String, String> =
        HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sampled = {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid() && sc.is_sampled()
    };
    sampled.then_some(cx)
}

/// Puts `span` under the trace `traceparent` names. A missing, malformed or unsampled context
/// leaves the span a root (whose sampling `--trace-sample-ratio` decides); true when it now
/// continues a sampled trace.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    match traceparent.and_then(sampled_parent) {
        Some(cx) => span.set_parent(cx).is_ok(),
        None => false,
    }
}

/// Whether `traceparent` names a sampled trace, so that a stage opens its span for it.
pub fn is_sampled(traceparent: Option<&[u8]>) -> bool {
    traceparent
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(sampled_parent)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn only_well_formed_sampled_contexts_are_followed() {
        assert!(is_sampled(Some(SAMPLED.as_bytes())));
        for bad in [
            UNSAMPLED,
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "\u{0}\u{1b}[31m",
        ] {
            assert!(!is_sampled(Some(bad.as_bytes())), "{bad:?} was followed");
        }
        assert!(!is_sampled(Some(&[0xff, 0xfe])));
        assert!(!is_sampled(None));
    }

    #[test]
    fn without_an_exporter_spans_carry_no_context() {
        let span = tracing::info_span!("stage");
        assert!(!continue_trace(&span, Some(SAMPLED)) || traceparent_of(&span).is_none());
        assert_eq!(traceparent_of(&tracing::Span::none()), None);
    }

    #[test]
    fn the_traces_path_is_added_only_when_none_is_given() {
        assert_eq!(
            traces_url("https://collector:4318"),
            "https://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://collector:4318/"),
            "https://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://gw.example/otlp/v1/traces"),
            "https://gw.example/otlp/v1/traces"
        );
    }

    #[test]
    fn the_sample_ratio_is_a_share() {
        assert_eq!(sample_ratio("0.25"), Ok(0.25));
        for bad in ["-0.1", "1.5", "NaN", "all"] {
            assert!(sample_ratio(bad).is_err(), "{bad}");
        }
    }
}
