//! Whether a region's store may answer: opened, caught up within `--ready-max-lag` of its
//! topics' ends, and in touch with Kafka within `--cutoff-secs`. One place decides it; it is
//! shown as gRPC health of the query service, as `/readyz`, and as the
//! `lienthong_regional_ready` gauge, and the query API refuses a region that is opening or
//! catching up (its answers would be missing documents another replica has).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lienthong_proto::v1::regional_query_service_server::RegionalQueryServiceServer;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Where a region's store stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The store is being opened (or a rebuild swapped in): nothing to answer from yet.
    Opening,
    /// Open, but this many messages behind its topics' ends (beyond the allowed lag).
    CatchingUp {
        /// Messages not yet applied.
        behind: i64,
    },
    /// Caught up when Kafka was last reached, this many seconds ago (beyond the limit).
    CutOff {
        /// Seconds since Kafka last answered.
        seconds: u64,
    },
    /// Open, caught up and in touch with Kafka.
    Serving,
}

impl Condition {
    /// Why the region is not ready, None when it is.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Opening => Some("the store is opening".into()),
            Self::CatchingUp { behind } => {
                Some(format!("catching up: {behind} messages behind its topics"))
            }
            Self::CutOff { seconds } => Some(format!("Kafka unreachable for {seconds} s")),
            Self::Serving => None,
        }
    }

    /// Whether queries may be answered from the store: it holds what its topics held when
    /// last checked (a store cut off from Kafka still answers what it has; it is only taken
    /// out of the Service's rotation).
    pub fn answers(&self) -> bool {
        matches!(self, Self::Serving | Self::CutOff { .. })
    }
}

/// The conditions of the regions an instance serves and the health service that shows them.
#[derive(Clone)]
pub struct RegionHealth {
    conditions: Arc<Mutex<BTreeMap<String, Condition>>>,
    reporter: HealthReporter,
}

impl RegionHealth {
    /// Every region opening; the health service says NOT_SERVING until each serves.
    pub async fn opening(regions: &[String], reporter: HealthReporter) -> Self {
        let health = Self {
            conditions: Arc::new(Mutex::new(
                regions
                    .iter()
                    .map(|r| (r.clone(), Condition::Opening))
                    .collect(),
            )),
            reporter,
        };
        health.publish().await;
        health
    }

    /// Conditions kept with no gRPC health service showing them (benchmarks, tools).
    pub async fn unobserved(regions: &[String]) -> Self {
        Self::opening(regions, tonic_health::server::health_reporter().0).await
    }

    /// The condition of `region` (Opening for a region not served).
    pub fn of(&self, region: &str) -> Condition {
        self.lock()
            .get(region)
            .cloned()
            .unwrap_or(Condition::Opening)
    }

    /// How long Kafka has not answered this instance, once that is beyond the cut-off for any
    /// region it serves (all of them share one cluster); None while it answers.
    pub fn kafka_unreachable(&self) -> Option<u64> {
        self.lock()
            .values()
            .filter_map(|c| match c {
                Condition::CutOff { seconds } => Some(*seconds),
                _ => None,
            })
            .max()
    }

    /// Records `region`'s condition and shows the whole instance's readiness.
    pub async fn set(&self, region: &str, condition: Condition) {
        let changed = {
            let mut all = self.lock();
            let old = all.insert(region.to_owned(), condition.clone());
            old.as_ref() != Some(&condition)
        };
        if changed {
            match condition.reason() {
                None => tracing::info!(region, "region ready"),
                Some(why) => tracing::info!(region, why, "region not ready"),
            }
            self.publish().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Condition>> {
        self.conditions.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn publish(&self) {
        let all = self.lock().clone();
        for (region, condition) in &all {
            lienthong_telemetry::health::set_ready(
                &format!("region {region}"),
                condition.reason().map_or(Ok(()), Err),
            );
            metrics::gauge!(crate::metrics::READY.name, "region" => region.clone()).set(
                if condition.reason().is_none() {
                    1.0
                } else {
                    0.0
                },
            );
        }
        let status = if all.values().all(|c| c.reason().is_none()) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Both the query service and the server as a whole ("").
        self.reporter
            .set_service_status(
                <RegionalQueryServiceServer<crate::query::QueryApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        self.reporter.set_service_status("", status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_store_that_holds_its_topics_answers() {
        assert!(!Condition::Opening.answers());
        assert!(!Condition::CatchingUp { behind: 5000 }.answers());
        assert!(Condition::CutOff { seconds: 40 }.answers());
        assert!(Condition::Serving.answers());
        assert_eq!(Condition::Serving.reason(), None);
        assert!(
            Condition::CatchingUp { behind: 5000 }
                .reason()
                .is_some_and(|r| r.contains("5000 messages behind"))
        );
    }

    #[tokio::test]
    async fn kafka_is_unreachable_once_any_region_is_cut_off() {
        let regions = ["79".to_owned(), "01".to_owned()];
        let health = RegionHealth::unobserved(&regions).await;
        assert_eq!(health.kafka_unreachable(), None, "opening is not cut off");
        health.set("79", Condition::Serving).await;
        health.set("01", Condition::CatchingUp { behind: 3 }).await;
        assert_eq!(health.kafka_unreachable(), None);
        health.set("01", Condition::CutOff { seconds: 4 }).await;
        health.set("79", Condition::CutOff { seconds: 7 }).await;
        assert_eq!(health.kafka_unreachable(), Some(7));
        health.set("79", Condition::Serving).await;
        health.set("01", Condition::Serving).await;
        assert_eq!(health.kafka_unreachable(), None, "answering again");
    }

    #[tokio::test]
    async fn health_says_serving_only_once_every_region_does() {
        use tonic_health::pb::health_check_response::ServingStatus as Wire;
        use tonic_health::pb::health_server::Health;
        let reporter = HealthReporter::new();
        let service = std::sync::Arc::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let status = |name: &str| {
            let request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            });
            let service = std::sync::Arc::clone(&service);
            async move {
                service
                    .check(request)
                    .await
                    .map(|r| r.into_inner().status)
                    .unwrap_or(-1)
            }
        };
        let name = <RegionalQueryServiceServer<crate::query::QueryApi> as tonic::server::NamedService>::NAME;
        let health = RegionHealth::opening(&["79".into(), "01".into()], reporter).await;
        assert_eq!(status(name).await, Wire::NotServing as i32);
        assert_eq!(status("").await, Wire::NotServing as i32);
        health.set("79", Condition::Serving).await;
        assert_eq!(
            status(name).await,
            Wire::NotServing as i32,
            "01 still opens"
        );
        health.set("01", Condition::Serving).await;
        assert_eq!(status(name).await, Wire::Serving as i32);
        assert_eq!(status("").await, Wire::Serving as i32);
        health.set("01", Condition::CutOff { seconds: 31 }).await;
        assert_eq!(status(name).await, Wire::NotServing as i32);
        assert_eq!(health.of("01"), Condition::CutOff { seconds: 31 });
    }
}
