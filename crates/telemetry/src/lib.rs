//! Logging, metrics and trace export set-up shared by every lienthong binary.
//!
//! Each binary flattens [`TelemetryArgs`] into its clap arguments and calls [`init`] once,
//! keeping the [`Telemetry`] it returns until it exits (dropping it flushes buffered spans).
//! Each crate that exports metrics lists them in a `metrics` module of [`Metric`]s, described
//! and registered at zero at start, so an alert on `increase(...) > 0` sees the first event.

pub mod browser;
mod catalogue;
pub mod connections;
pub mod health;
pub mod process;
pub mod trace;

pub use catalogue::{Metric, MetricKind, describe, zero};

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Histogram buckets of every `*_seconds` metric: 1 ms to 30 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
use tracing_subscriber::{EnvFilter, filter, fmt, prelude::*};

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log filter could not be parsed.
    #[error(
        "invalid log filter {filter:?}: {cause}; use RUST_LOG syntax such as `info,lienthong=debug`"
    )]
    Filter {
        /// The filter as given.
        filter: String,
        /// Parser error.
        cause: tracing_subscriber::filter::ParseError,
    },
    /// Trace export could not be set up.
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    /// A global subscriber or recorder was already installed.
    #[error("telemetry was already initialised in this process")]
    AlreadyInitialised,
    /// The Prometheus listener could not start.
    #[error(
        "cannot serve Prometheus metrics on {addr}: {message}; pick a free port with --metrics-addr"
    )]
    Metrics {
        /// Address asked for.
        addr: SocketAddr,
        /// Exporter error text.
        message: String,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for terminals.
    Pretty,
    /// One JSON object per line for log collectors.
    Json,
}

/// Telemetry flags common to every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log filter in RUST_LOG syntax.
    #[arg(long = "log", env = "RUST_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// Log format.
    #[arg(
        long,
        env = "LIENTHONG_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
    /// Address of the Prometheus /metrics endpoint; unset means no endpoint.
    #[arg(long, env = "LIENTHONG_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,
    /// Where spans go.
    #[command(flatten)]
    pub trace: trace::TraceArgs,
}

/// What [`init`] set up that needs an orderly end: dropping it flushes the spans still
/// buffered for the trace collector (for at most the exporter's timeout).
#[must_use = "dropping it stops trace export; keep it until the process exits"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The exporter's blocking client must not be driven from an async worker.
            let flushed = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "spans still buffered for the trace collector were lost");
            }
        }
    }
}

/// Installs the global tracing subscriber (logs go to stderr; spans of lienthong's own code go
/// to the trace collector when `--otlp-endpoint` is set, as `service`) and, when asked, the
/// Prometheus exporter. Must be called from within a Tokio runtime when `metrics_addr` is set.
pub fn init(args: &TelemetryArgs, service: &'static str) -> Result<Telemetry, Error> {
    let filter = EnvFilter::try_new(&args.log_filter).map_err(|source| Error::Filter {
        filter: args.log_filter.clone(),
        cause: source,
    })?;
    let trace_args = args.trace.clone();
    // Built off any async worker: the exporter's blocking HTTP client runs a runtime of its own.
    let provider = std::thread::spawn(move || trace::provider(&trace_args, service))
        .join()
        .unwrap_or_else(|_| {
            Err(trace::TraceError::Exporter {
                endpoint: args.trace.otlp_endpoint.clone().unwrap_or_default(),
                reason: "setting up the exporter panicked".into(),
            })
        })?;
    // The log filter decides what is logged, not what is traced: spans of lienthong's own
    // stages are exported whatever the log level.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(trace::tracer(p))
            .with_filter(filter::filter_fn(|m| {
                m.target().starts_with("lienthong") && *m.level() <= tracing::Level::INFO
            }))
    });
    let registry = tracing_subscriber::registry().with(spans);
    let result = match args.log_format {
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(|_| Error::AlreadyInitialised)?;
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr)?;
    }
    Ok(Telemetry { provider })
}

/// Installs the Prometheus recorder as the global metrics recorder and serves, on `addr`,
/// `/metrics`, `/livez` and `/readyz` (see [`health`]). The server and the recorder's upkeep
/// are tasks of the current runtime that live as long as it: they own nothing to flush.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), Error> {
    let failed = |message: String| Error::Metrics { addr, message };
    // Durations as histograms, not summaries: the dashboards aggregate quantiles over every
    // replica (histogram_quantile over summed buckets), which summaries cannot do.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .map_err(|e| failed(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    let listener = std::net::TcpListener::bind(addr).map_err(|e| failed(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| failed(e.to_string()))?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| failed(e.to_string()))?;
    metrics::set_global_recorder(recorder).map_err(|_| Error::AlreadyInitialised)?;
    describe(connections::ALL);
    // Probes and scrapes keep their share while a scanner holds connections open.
    let listener = connections::EndpointListener::new(listener);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = endpoints(handle);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics and health endpoint stopped");
        }
    });
    process::start();
    tracing::info!(%addr, "serving Prometheus metrics at /metrics, health at /livez and /readyz");
    Ok(())
}

/// The endpoint's routes. A request a browser sends for a web page is refused: a page served
/// under a name that resolves to an endpoint bound to loopback (DNS rebinding) would otherwise
/// read it; Prometheus, probes and curl send no such marks.
fn endpoints(handle: metrics_exporter_prometheus::PrometheusHandle) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || std::future::ready(handle.render())),
        )
        .route("/livez", axum::routing::get(|| async { "alive\n" }))
        .route("/readyz", axum::routing::get(readyz))
        .layer(axum::middleware::from_fn(programs_only))
}

async fn programs_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let page = {
        let header = |name: &str| request.headers().get(name).map(|v| v.as_bytes());
        browser::sent_for_a_page(header("origin"), header("sec-fetch-site"))
    };
    match page {
        None => next.run(request).await,
        Some(why) => (
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "the metrics and health endpoints answer programs (Prometheus, probes, curl), not web pages: {why}\n"
            ),
        )
            .into_response(),
    }
}

async fn readyz() -> (axum::http::StatusCode, String) {
    match health::readiness() {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n".into()),
        Err(reasons) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", reasons.join("\n")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_endpoints_answer_programs_and_refuse_web_pages() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let server = tokio::spawn(async move {
            axum::serve(listener, endpoints(handle))
                .await
                .expect("serve");
        });
        let get = |path: &'static str, extra: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: rebound.example:9090\r\n{extra}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("request");
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.expect("answer");
            answer
        };
        for path in ["/metrics", "/livez"] {
            assert!(get(path, "").await.starts_with("HTTP/1.1 200"), "{path}");
            // An address typed into a browser on the host.
            assert!(
                get(path, "Sec-Fetch-Site: none\r\n")
                    .await
                    .starts_with("HTTP/1.1 200")
            );
            for page in [
                "Sec-Fetch-Site: same-origin\r\n",
                "Sec-Fetch-Site: cross-site\r\n",
                "Origin: http://rebound.example:9090\r\n",
            ] {
                let answer = get(path, page).await;
                assert!(
                    answer.starts_with("HTTP/1.1 403") && answer.contains("not web pages"),
                    "{path} {page}: {answer}"
                );
            }
        }
        server.abort();
    }

    #[test]
    fn a_bad_filter_is_a_clear_error() {
        let args = TelemetryArgs {
            log_filter: "info,[[[".into(),
            log_format: LogFormat::Json,
            metrics_addr: None,
            trace: untraced(),
        };
        let err = init(&args, "test").err().expect("must reject");
        assert!(err.to_string().contains("invalid log filter"), "{err}");
    }

    fn untraced() -> trace::TraceArgs {
        trace::TraceArgs {
            otlp_endpoint: None,
            otlp_ca: None,
            otlp_cert: None,
            otlp_key: None,
            trace_sample_ratio: 1.0,
        }
    }

    #[test]
    fn an_unreadable_collector_ca_or_a_bad_endpoint_is_a_clear_error() {
        let mut args = TelemetryArgs {
            log_filter: "info".into(),
            log_format: LogFormat::Json,
            metrics_addr: None,
            trace: untraced(),
        };
        args.trace.otlp_endpoint = Some("https://collector:4318".into());
        args.trace.otlp_ca = Some("/nonexistent/ca.pem".into());
        let err = init(&args, "test").err().expect("must reject");
        assert!(
            err.to_string().contains("/nonexistent/ca.pem")
                && err.to_string().contains("trace collector"),
            "{err}"
        );
        args.trace.otlp_ca = None;
        args.trace.otlp_endpoint = Some("not a url at all".into());
        let err = init(&args, "test").err().expect("must reject");
        assert!(err.to_string().contains("--otlp-endpoint"), "{err}");
    }

    #[tokio::test]
    async fn prometheus_endpoint_serves_recorded_metrics() {
        use std::io::{Read, Write};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        serve_metrics(addr).expect("exporter starts");
        metrics::counter!("lienthong_test_events_total", "outcome" => "accepted").increment(3);
        metrics::histogram!("lienthong_test_seconds").record(0.003);
        let get = move |path: &'static str| {
            tokio::task::spawn_blocking(move || {
                for _ in 0..50 {
                    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                            .expect("write");
                        let mut body = String::new();
                        s.read_to_string(&mut body).expect("read");
                        return body;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                String::new()
            })
        };
        let body = get("/metrics").await.expect("join");
        assert!(
            body.contains("lienthong_test_events_total{outcome=\"accepted\"} 3"),
            "{body}"
        );
        // Durations are histograms (aggregatable over replicas), not summaries.
        assert!(
            body.contains("lienthong_test_seconds_bucket{le=\"0.0025\"} 0")
                && body.contains("lienthong_test_seconds_bucket{le=\"0.005\"} 1"),
            "{body}"
        );
        assert!(!body.contains("quantile="), "no summaries: {body}");
        // Every service's process figures and build, from the start.
        for name in process::ALL.iter().map(|m| m.name) {
            assert!(
                body.contains(&format!("\n{name}")),
                "{name} missing: {body}"
            );
        }
        assert!(
            body.contains(&format!("version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
            "{body}"
        );
        // Liveness and readiness apart from the scrape; readiness follows what parts set.
        let live = get("/livez").await.expect("join");
        assert!(
            live.starts_with("HTTP/1.0 200") && live.ends_with("alive\n"),
            "{live}"
        );
        health::set_ready("endpoint-test", Err("still opening".into()));
        let ready = get("/readyz").await.expect("join");
        assert!(
            ready.starts_with("HTTP/1.0 503") && ready.contains("endpoint-test: still opening"),
            "{ready}"
        );
        health::set_ready("endpoint-test", Ok(()));
        let ready = get("/readyz").await.expect("join");
        assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
    }
}
