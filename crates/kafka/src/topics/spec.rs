//! Parsing and checking of the topic spec file, with file/line/field in every error.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

/// Kafka `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Delete segments past retention.
    Delete,
    /// Keep the latest record per key.
    Compact,
    /// Both.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

impl CleanupPolicy {
    /// Value as Kafka spells it.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
            Self::CompactDelete => "compact,delete",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: RawDefaults,
    #[serde(default)]
    topic: Vec<RawTopic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    replication_factor: Spanned<i32>,
    min_insync_replicas: Spanned<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: Spanned<String>,
    partitions: Spanned<i32>,
    retention_ms: Spanned<i64>,
    cleanup_policy: CleanupPolicy,
    replication_factor: Option<Spanned<i32>>,
    min_insync_replicas: Option<Spanned<i32>>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// One topic as it should be on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count (can grow, never shrink).
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i32,
    /// `min.insync.replicas`: with acks=all, how many replicas must have a write.
    pub min_insync_replicas: i32,
    /// `retention.ms`; -1 keeps everything.
    pub retention_ms: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// Further topic configs, passed through as given.
    pub extra_config: BTreeMap<String, String>,
}

impl TopicSpec {
    /// Every topic config this spec manages, by Kafka name.
    pub fn configs(&self) -> BTreeMap<String, String> {
        let mut map = self.extra_config.clone();
        map.insert("retention.ms".into(), self.retention_ms.to_string());
        map.insert(
            "cleanup.policy".into(),
            self.cleanup_policy.as_kafka().into(),
        );
        map.insert(
            "min.insync.replicas".into(),
            self.min_insync_replicas.to_string(),
        );
        map
    }
}

/// Replication settings that replace the spec's for every topic (e.g. a one-broker dev stack).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicationOverride {
    /// Replicas per partition.
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas`.
    pub min_insync_replicas: Option<i32>,
}

/// The whole spec file, checked.
#[derive(Debug, Clone)]
pub struct TopicsSpec {
    /// Topics in file order.
    pub topics: Vec<TopicSpec>,
}

impl TopicsSpec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::SpecRead {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks spec text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
            Error::Spec {
                path: PathBuf::from(origin),
                line,
                column,
                message,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let message = e.message().trim();
            let message = match e.span().and_then(|s| key_at(text, s.start)) {
                Some(key) if !message.contains(&format!("`{key}`")) => {
                    format!("field `{key}`: {message}")
                }
                _ => message.to_owned(),
            };
            at(e.span(), message)
        })?;
        let check = |ok: bool, span: std::ops::Range<usize>, msg: String| {
            if ok { Ok(()) } else { Err(at(Some(span), msg)) }
        };

        let d = &raw.defaults;
        check(
            *d.replication_factor.get_ref() >= 1,
            d.replication_factor.span(),
            "defaults.replication_factor must be at least 1".into(),
        )?;
        check(
            *d.min_insync_replicas.get_ref() >= 1,
            d.min_insync_replicas.span(),
            "defaults.min_insync_replicas must be at least 1".into(),
        )?;

        let mut seen = HashSet::new();
        let mut topics = Vec::with_capacity(raw.topic.len());
        for t in raw.topic {
            let name = t.name.get_ref().clone();
            check(
                valid_topic_name(&name),
                t.name.span(),
                format!(
                    "topic.name {name:?} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
                ),
            )?;
            check(
                seen.insert(name.clone()),
                t.name.span(),
                format!("topic.name {name:?} appears twice"),
            )?;
            check(
                *t.partitions.get_ref() >= 1,
                t.partitions.span(),
                format!("topic.partitions of {name} must be at least 1"),
            )?;
            check(
                *t.retention_ms.get_ref() >= -1,
                t.retention_ms.span(),
                format!(
                    "topic.retention_ms of {name} must be -1 (keep forever) or a number of milliseconds"
                ),
            )?;
            let rf = t
                .replication_factor
                .as_ref()
                .unwrap_or(&d.replication_factor);
            let isr = t
                .min_insync_replicas
                .as_ref()
                .unwrap_or(&d.min_insync_replicas);
            check(
                *rf.get_ref() >= 1,
                rf.span(),
                format!("replication_factor of {name} must be at least 1"),
            )?;
            check(
                isr.get_ref() <= rf.get_ref(),
                isr.span(),
                format!(
                    "min_insync_replicas of {name} ({}) exceeds its replication_factor ({}): acks=all writes would always fail",
                    isr.get_ref(),
                    rf.get_ref()
                ),
            )?;
            for key in t.config.keys() {
                let managed = ["retention.ms", "cleanup.policy", "min.insync.replicas"];
                check(
                    !managed.contains(&key.as_str()),
                    t.name.span(),
                    format!("topic.config of {name} sets {key:?}; use the dedicated field instead"),
                )?;
            }
            topics.push(TopicSpec {
                name,
                partitions: *t.partitions.get_ref(),
                replication_factor: *rf.get_ref(),
                min_insync_replicas: *isr.get_ref(),
                retention_ms: *t.retention_ms.get_ref(),
                cleanup_policy: t.cleanup_policy,
                extra_config: t.config,
            });
        }
        Ok(Self { topics })
    }

    /// Applies replication overrides, re-checking min.insync.replicas against the factor.
    pub fn with_override(mut self, o: ReplicationOverride) -> Result<Self> {
        for t in &mut self.topics {
            if let Some(rf) = o.replication_factor {
                t.replication_factor = rf;
            }
            if let Some(isr) = o.min_insync_replicas {
                t.min_insync_replicas = isr;
            }
            if t.replication_factor < 1
                || t.min_insync_replicas < 1
                || t.min_insync_replicas > t.replication_factor
            {
                return Err(Error::Config(format!(
                    "topic {}: min.insync.replicas {} with replication factor {} cannot work; both must be >= 1 and isr <= factor",
                    t.name, t.min_insync_replicas, t.replication_factor
                )));
            }
        }
        Ok(self)
    }
}

fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `key` of the `key = value` line containing `offset`, to name the field in type errors.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TopicsSpec> {
        TopicsSpec::parse(text, Path::new("topics.toml"))
    }

    const HEAD: &str = "[defaults]\nreplication_factor = 3\nmin_insync_replicas = 2\n";

    #[test]
    fn the_shipped_spec_is_valid_and_lists_the_architecture_topics() {
        let spec = parse(super::super::DEFAULT_SPEC).expect("valid");
        let names: Vec<_> = spec.topics.iter().map(|t| t.name.as_str()).collect();
        for t in [
            "lienthong.referral.v1",
            "lienthong.appointment.v1",
            "lienthong.lab-result.v1",
            "lienthong.dlq.v1",
            "lienthong.audit.v1",
        ] {
            assert!(names.contains(&t), "{t} missing");
        }
    }

    #[test]
    fn a_negative_partition_count_names_file_line_and_field() {
        let text = format!(
            "{HEAD}\n[[topic]]\nname = \"a\"\npartitions = 0\nretention_ms = 1\ncleanup_policy = \"delete\"\n"
        );
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(
            err.contains("topics.toml, line 7") && err.contains("topic.partitions"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_field_is_rejected_with_its_line() {
        let text = format!(
            "{HEAD}\n[[topic]]\nname = \"a\"\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"delete\"\nretension = 5\n"
        );
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(
            err.contains("line 10") && err.contains("retension"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_cleanup_policy_is_rejected() {
        let text = format!(
            "{HEAD}\n[[topic]]\nname = \"a\"\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"shred\"\n"
        );
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(
            err.contains("line 9") && err.contains("shred") && err.contains("cleanup_policy"),
            "{err}"
        );
    }

    #[test]
    fn min_isr_above_replication_factor_is_rejected() {
        let text = format!(
            "{HEAD}\n[[topic]]\nname = \"a\"\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"delete\"\nreplication_factor = 1\n"
        );
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(
            err.contains("min_insync_replicas of a (2) exceeds"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_and_invalid_names_are_rejected() {
        let t = "[[topic]]\nname = \"a\"\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"delete\"\n";
        let err = parse(&format!("{HEAD}{t}{t}"))
            .expect_err("dup")
            .to_string();
        assert!(
            err.contains("appears twice") && err.contains("line 10"),
            "{err}"
        );
        let err = parse(&format!("{HEAD}{}", t.replace("\"a\"", "\"bad name!\"")))
            .expect_err("bad")
            .to_string();
        assert!(err.contains("not a valid Kafka topic name"), "{err}");
    }

    #[test]
    fn override_for_a_single_broker_applies_to_every_topic() {
        let spec = parse(super::super::DEFAULT_SPEC)
            .and_then(|s| {
                s.with_override(ReplicationOverride {
                    replication_factor: Some(1),
                    min_insync_replicas: Some(1),
                })
            })
            .expect("valid");
        assert!(
            spec.topics
                .iter()
                .all(|t| t.replication_factor == 1 && t.min_insync_replicas == 1)
        );
        let bad = parse(super::super::DEFAULT_SPEC).and_then(|s| {
            s.with_override(ReplicationOverride {
                replication_factor: Some(1),
                min_insync_replicas: None,
            })
        });
        assert!(bad.is_err());
    }
}
