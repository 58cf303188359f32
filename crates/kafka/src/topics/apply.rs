//! Making the cluster match the spec, and reporting what differs.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::spec::{TopicSpec, TopicsSpec};
use crate::connection::KafkaArgs;
use crate::error::{Error, Result};

/// One thing `apply` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChange {
    /// The topic did not exist and was created.
    Created {
        /// Topic.
        topic: String,
        /// Partitions created.
        partitions: i32,
        /// Replication factor.
        replication_factor: i32,
    },
    /// Partitions were added.
    PartitionsIncreased {
        /// Topic.
        topic: String,
        /// Before.
        from: i32,
        /// After.
        to: i32,
    },
    /// A topic config was changed.
    ConfigChanged {
        /// Topic.
        topic: String,
        /// Config name.
        key: String,
        /// Value before (None when unset).
        from: Option<String>,
        /// Value after.
        to: String,
    },
}

impl fmt::Display for TopicChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created {
                topic,
                partitions,
                replication_factor,
            } => {
                write!(
                    f,
                    "created {topic} ({partitions} partitions, replication factor {replication_factor})"
                )
            }
            Self::PartitionsIncreased { topic, from, to } => {
                write!(f, "{topic}: partitions {from} -> {to}")
            }
            Self::ConfigChanged {
                topic,
                key,
                from,
                to,
            } => {
                write!(
                    f,
                    "{topic}: {key} {} -> {to}",
                    from.as_deref().unwrap_or("(unset)")
                )
            }
        }
    }
}

/// A topic as found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replicas of partition 0.
    pub replication_factor: i32,
    /// Topic configs that the spec manages (and any others that are not defaults).
    pub configs: BTreeMap<String, String>,
}

fn admin(args: &KafkaArgs) -> Result<AdminClient<DefaultClientContext>> {
    args.client_config()?.create().map_err(Error::Client)
}

fn options(args: &KafkaArgs) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(args.timeout()))
        .operation_timeout(Some(args.timeout()))
}

/// Reads partitions, replication factor and configs of the named topics; absent topics are left out.
pub async fn describe(args: &KafkaArgs, names: &[String]) -> Result<Vec<TopicState>> {
    let admin = admin(args)?;
    describe_with(&admin, args, names).await
}

async fn describe_with(
    admin: &AdminClient<DefaultClientContext>,
    args: &KafkaArgs,
    names: &[String],
) -> Result<Vec<TopicState>> {
    let metadata = admin
        .inner()
        .fetch_metadata(None, args.timeout())
        .map_err(|source| Error::Unreachable {
            bootstrap: args.bootstrap.clone(),
            timeout: args.timeout(),
            source,
        })?;
    let mut found = Vec::new();
    for name in names {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == name) else {
            continue;
        };
        let replication_factor = t
            .partitions()
            .first()
            .map_or(0, |p| p.replicas().len() as i32);
        found.push(TopicState {
            name: name.clone(),
            partitions: t.partitions().len() as i32,
            replication_factor,
            configs: BTreeMap::new(),
        });
    }
    if found.is_empty() {
        return Ok(found);
    }
    let specifiers: Vec<_> = found
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let results = admin.describe_configs(&specifiers, &options(args)).await?;
    for (state, result) in found.iter_mut().zip(results) {
        let resource = result.map_err(|code| Error::Topic {
            topic: state.name.clone(),
            message: format!("cannot read configs: {code}"),
        })?;
        for entry in resource.entries {
            if let Some(value) = entry.value {
                state.configs.insert(entry.name, value);
            }
        }
    }
    Ok(found)
}

/// Creates missing topics, adds partitions and sets configs so the cluster matches `spec`.
/// Returns what changed; an empty list means the cluster already matched.
///
/// Shrinking partitions or changing the replication factor of an existing topic cannot be done
/// by configuration: those are reported as errors for an operator to handle (partition
/// reassignment), and nothing else about that topic is skipped.
pub async fn apply(args: &KafkaArgs, spec: &TopicsSpec) -> Result<Vec<TopicChange>> {
    let admin = admin(args)?;
    let names: Vec<String> = spec.topics.iter().map(|t| t.name.clone()).collect();
    let current: BTreeMap<String, TopicState> = describe_with(&admin, args, &names)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let opts = options(args);
    let mut changes = Vec::new();

    let missing: Vec<&TopicSpec> = spec
        .topics
        .iter()
        .filter(|t| !current.contains_key(&t.name))
        .collect();
    if !missing.is_empty() {
        let configs: Vec<BTreeMap<String, String>> = missing.iter().map(|t| t.configs()).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|(t, cfg)| {
                cfg.iter().fold(
                    NewTopic::new(
                        &t.name,
                        t.partitions,
                        TopicReplication::Fixed(t.replication_factor),
                    ),
                    |nt, (k, v)| nt.set(k, v),
                )
            })
            .collect();
        for (t, result) in missing
            .iter()
            .zip(admin.create_topics(&new_topics, &opts).await?)
        {
            match result {
                Ok(_) => changes.push(TopicChange::Created {
                    topic: t.name.clone(),
                    partitions: t.partitions,
                    replication_factor: t.replication_factor,
                }),
                // Another apply raced us; the next run reconciles configs.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::Topic {
                        topic: t.name.clone(),
                        message: create_hint(code, t),
                    });
                }
            }
        }
    }

    for t in spec.topics.iter() {
        let Some(state) = current.get(&t.name) else {
            continue;
        };
        if state.replication_factor != t.replication_factor {
            return Err(Error::Topic {
                topic: t.name.clone(),
                message: format!(
                    "replication factor is {} but the spec says {}; topics apply cannot change it: \
                     reassign partitions with kafka-reassign-partitions, or fix the spec",
                    state.replication_factor, t.replication_factor
                ),
            });
        }
        if state.partitions > t.partitions {
            return Err(Error::Topic {
                topic: t.name.clone(),
                message: format!(
                    "has {} partitions but the spec says {}; Kafka cannot remove partitions: raise the spec to {}",
                    state.partitions, t.partitions, state.partitions
                ),
            });
        }
        if state.partitions < t.partitions {
            let np = NewPartitions::new(&t.name, t.partitions as usize);
            for result in admin.create_partitions(&[np], &opts).await? {
                result.map_err(|(_, code)| Error::Topic {
                    topic: t.name.clone(),
                    message: format!("cannot add partitions: {code}"),
                })?;
            }
            changes.push(TopicChange::PartitionsIncreased {
                topic: t.name.clone(),
                from: state.partitions,
                to: t.partitions,
            });
        }
        let wanted = t.configs();
        let differing: Vec<TopicChange> = wanted
            .iter()
            .filter(|(k, v)| state.configs.get(*k) != Some(*v))
            .map(|(k, v)| TopicChange::ConfigChanged {
                topic: t.name.clone(),
                key: k.clone(),
                from: state.configs.get(k).cloned(),
                to: v.clone(),
            })
            .collect();
        if !differing.is_empty() {
            // AlterConfigs replaces the topic's whole dynamic config, so send every managed key.
            let alter = wanted.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(&t.name)),
                |a, (k, v)| a.set(k, v),
            );
            for result in admin.alter_configs(&[alter], &opts).await? {
                result.map_err(|(_, code)| Error::Topic {
                    topic: t.name.clone(),
                    message: format!("cannot change configs: {code}"),
                })?;
            }
            changes.extend(differing);
        }
    }
    for change in &changes {
        tracing::debug!(%change, "topic changed");
    }
    Ok(changes)
}

fn create_hint(code: RDKafkaErrorCode, t: &TopicSpec) -> String {
    match code {
        RDKafkaErrorCode::InvalidReplicationFactor => format!(
            "cannot create with replication factor {}: the cluster has fewer brokers; on a single-broker dev stack pass --replication-factor 1 --min-insync-replicas 1",
            t.replication_factor
        ),
        other => format!("cannot create: {other}"),
    }
}
