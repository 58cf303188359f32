//! Helpers for tests and benchmarks of the de-identification service: analytics topics of
//! their own, and how far its group has committed.

use std::time::Duration;

use lienthong_deidentifier::{AnalyticsKind, AnalyticsTopics};
use lienthong_registry::{RegistryArgs, RegistryClient, SchemaSet};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{create_topic, kafka};

/// Fresh analytics topics (3 partitions each) with their schemas registered, named under the
/// prefix the analytics principal may read (`lienthong.analytics.test-<run>.…`).
pub async fn analytics_topics_with_schemas(
    registry: &RegistryArgs,
) -> anyhow::Result<AnalyticsTopics> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let name = |k: AnalyticsKind| {
        format!(
            "lienthong.analytics.test-{run}.{}",
            k.topic().trim_start_matches("lienthong.analytics.")
        )
    };
    let topics = AnalyticsTopics {
        analytics_topic_referral: name(AnalyticsKind::Referral),
        analytics_topic_appointment: name(AnalyticsKind::Appointment),
        analytics_topic_lab_result: name(AnalyticsKind::LabResult),
        analytics_topic_receipt: name(AnalyticsKind::Receipt),
    };
    let mut set = SchemaSet::built_in();
    for kind in AnalyticsKind::ALL {
        create_topic(&kafka(), topics.of(kind), 3).await?;
        set = set.with_topic_renamed(kind.topic(), topics.of(kind));
    }
    set.register(&RegistryClient::new(registry)?).await?;
    Ok(topics)
}

/// Messages of `inputs` (partitions 0..`partitions`) whose offsets `group` committed.
pub fn committed(group: &str, inputs: &[String], partitions: i32) -> i64 {
    let Ok(mut cfg) = kafka().client_config() else {
        return 0;
    };
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let Ok(c) = cfg.create::<BaseConsumer>() else {
        return 0;
    };
    let mut tpl = TopicPartitionList::new();
    for t in inputs {
        for p in 0..partitions {
            tpl.add_partition(t, p);
        }
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0)
}
