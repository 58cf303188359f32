//! The dashboard and alert rules under helm/lienthong/files refer only to metrics the
//! services export, and cover what operators watch.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;

use lienthong_tests::repo_root;

/// `lienthong_*` metric names in a PromQL expression, without histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lienthong_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every string literal of the Rust sources under crates/ and services/.
fn exported_metric_literals() -> String {
    lienthong_tests::rust_sources()
        .into_iter()
        .map(|(_, text)| text)
        .collect()
}

fn assert_exported(exprs: &[String], what: &str) {
    let sources = exported_metric_literals();
    let mut seen = BTreeSet::new();
    for expr in exprs {
        for name in metric_names(expr) {
            assert!(
                sources.contains(&format!("\"{name}\"")),
                "{what} uses {name}, which no service exports: {expr}"
            );
            seen.insert(name);
        }
    }
    assert!(!seen.is_empty(), "{what} refers to no lienthong metric");
}

#[test]
fn alert_rules_use_exported_metrics_and_cover_the_operators_alarms() {
    let text =
        std::fs::read_to_string(repo_root().join("helm/lienthong/files/prometheus-rules.yaml"))
            .expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules parse");
    let mut exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("alert name");
            assert!(
                rule["labels"]["severity"].is_string(),
                "{alert} has a severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{alert} has a summary"
            );
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
            alerts.insert(alert.to_owned());
        }
    }
    assert_exported(&exprs, "the alert rules");
    for needed in [
        "LienthongConsumerLagGrowing",
        "LienthongDeadLetters",
        "LienthongGatewayResourceExhausted",
        "LienthongWarehouseCannotWrite",
        "LienthongAgentBacklogAging",
        "LienthongBreakGlassAccess",
    ] {
        assert!(alerts.contains(needed), "{needed} missing: {alerts:?}");
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("code=\"ResourceExhausted\""))
    );
}

#[test]
fn the_dashboard_uses_exported_metrics_and_shows_every_hop() {
    let text =
        std::fs::read_to_string(repo_root().join("helm/lienthong/files/grafana-dashboard.json"))
            .expect("dashboard file");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard parses");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert_exported(&exprs, "the dashboard");
    let all = exprs.join("\n");
    for hop in [
        "lienthong_gateway_events_total",
        "lienthong_gateway_rejects_total",
        "lienthong_kafka_produce_seconds_bucket",
        "lienthong_consumer_lag",
        "partition",
        "lienthong_dead_letters_total",
        "lienthong_warehouse_commit_seconds_bucket",
        "lienthong_regional_query_seconds_bucket",
    ] {
        assert!(all.contains(hop), "no panel shows {hop}");
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(lienthong_kafka_produce_seconds_bucket[5m]))) / lienthong_x_total",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["lienthong_kafka_produce_seconds", "lienthong_x_total"]
    );
}

#[test]
fn every_exported_metric_is_documented_in_the_operations_guide() {
    let guide =
        std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("operations guide");
    let exported = [
        lienthong_kafka::metrics::ALL,
        lienthong_grpc::metrics::ALL,
        lienthong_gateway::metrics::ALL,
        lienthong_regional_store::metrics::ALL,
        lienthong_warehouse_loader::metrics::ALL,
        lienthong_facility_agent::metrics::ALL,
        lienthong_deidentifier::metrics::ALL,
        lienthong_telemetry::process::ALL,
        lienthong_telemetry::connections::ALL,
    ];
    let missing: Vec<&str> = exported
        .iter()
        .flat_map(|all| all.iter())
        .map(|m| m.name)
        .filter(|name| !guide.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not document {missing:?}"
    );
}
