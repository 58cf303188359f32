//! Exported metrics as data: each crate lists its own, so a service can describe them and
//! start its counters at zero, and a test can check that every one is documented.

/// What kind of Prometheus series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A current value.
    Gauge,
    /// A distribution (`_seconds` ones use the latency buckets).
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Prometheus name.
    pub name: &'static str,
    /// Series kind.
    pub kind: MetricKind,
    /// Its labels (all of low cardinality).
    pub labels: &'static [&'static str],
    /// What it measures, for /metrics `# HELP` and the operations guide.
    pub help: &'static str,
}

impl Metric {
    /// A counter.
    pub const fn counter(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self::of(MetricKind::Counter, name, labels, help)
    }

    /// A gauge.
    pub const fn gauge(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self::of(MetricKind::Gauge, name, labels, help)
    }

    /// A histogram.
    pub const fn histogram(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self::of(MetricKind::Histogram, name, labels, help)
    }

    const fn of(
        kind: MetricKind,
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            labels,
            help,
        }
    }
}

/// Describes every metric of `all` to the installed recorder (`# HELP` lines).
pub fn describe(all: &[Metric]) {
    for m in all {
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Starts the counter `metric` with these label values at zero: a series that exists before
/// its first event lets `increase(...) > 0` fire on that first event.
pub fn zero(metric: &Metric, labels: &[(&'static str, String)]) {
    debug_assert!(
        labels.iter().all(|(k, _)| metric.labels.contains(k)),
        "{} has no such label",
        metric.name
    );
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    match metric.kind {
        MetricKind::Counter => metrics::counter!(metric.name, labels).absolute(0),
        MetricKind::Gauge => metrics::gauge!(metric.name, labels).set(0.0),
        MetricKind::Histogram => {}
    }
}
