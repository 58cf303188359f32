//! `lienthong analytics risk`: the re-identification risk a de-identification service measures,
//! read from its metrics endpoint.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;

/// Analytics commands.
#[derive(Debug, clap::Subcommand)]
pub enum AnalyticsCommand {
    /// The smallest group (k) of distinct patients sharing the kept quasi-identifiers in the
    /// service's sliding window, the share of events in groups below the policy's floor, and
    /// the age band width in use. Exits 5 when k is below the floor.
    Risk {
        /// The de-identification service's Prometheus endpoint.
        #[arg(
            long,
            env = "LIENTHONG_DEIDENTIFIER_METRICS_URL",
            default_value = "http://127.0.0.1:9468/metrics"
        )]
        metrics_url: String,
    },
}

/// The gauges read, by metric name.
const GAUGES: &[&str] = &[
    "lienthong_analytics_risk_min_group_size",
    "lienthong_analytics_risk_k_floor",
    "lienthong_analytics_risk_share_below_floor",
    "lienthong_analytics_risk_window_events",
    "lienthong_analytics_age_band_years",
];

/// Runs an analytics command.
pub async fn run(cmd: AnalyticsCommand) -> anyhow::Result<ExitCode> {
    let AnalyticsCommand::Risk { metrics_url } = cmd;
    let body = reqwest::Client::new()
        .get(&metrics_url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot read the de-identification service's metrics at {metrics_url}; is it running, and is this its --metrics-addr?"))?
        .text()
        .await?;
    let values = gauges(&body);
    let get = |name: &str| {
        values.get(name).copied().with_context(|| {
            format!(
                "{metrics_url} exports no {name}: it is not a de-identification service's endpoint"
            )
        })
    };
    let (k, floor) = (get(GAUGES[0])?, get(GAUGES[1])?);
    let (share, events, width) = (get(GAUGES[2])?, get(GAUGES[3])?, get(GAUGES[4])?);
    println!("window:                 {events:.0} events");
    println!("smallest group (k):     {k:.0} distinct patients (floor {floor:.0})");
    println!("events in small groups: {:.1}%", share * 100.0);
    println!("age bands:              {width:.0} years");
    if events > 0.0 && k < floor {
        println!("k is below the policy's floor: see docs/operations.md, \"De-identification\"");
        return Ok(ExitCode::from(crate::exit::DRIFT));
    }
    Ok(ExitCode::SUCCESS)
}

/// The unlabelled gauges of a Prometheus text exposition.
fn gauges(body: &str) -> BTreeMap<&str, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name, value.trim().parse().ok()?))
        })
        .filter(|(name, _)| GAUGES.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_from_the_exposition_format() {
        let body = "# HELP lienthong_analytics_risk_min_group_size k\n# TYPE lienthong_analytics_risk_min_group_size gauge\nlienthong_analytics_risk_min_group_size 3\nlienthong_analytics_risk_share_below_floor 0.25\nlienthong_deidentifier_events_total{kind=\"referral\"} 9\n";
        let g = gauges(body);
        assert_eq!(g["lienthong_analytics_risk_min_group_size"], 3.0);
        assert_eq!(g["lienthong_analytics_risk_share_below_floor"], 0.25);
        assert_eq!(g.len(), 2);
    }
}
