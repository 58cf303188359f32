//! The set of .proto files that make up the contract, and how they map to registry subjects.
//!
//! Topic files are registered under TopicNameStrategy subjects (`<topic>-value`); files they
//! import (common.proto) under their qualified name (`lienthong.v1.common`), and referenced
//! from the importing schema. `google/protobuf/*` imports are built into every registry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lienthong_core::DocumentKind;

use crate::client::{Compatibility, Reference, RegistryClient};
use crate::error::{Error, Result};

/// Compatibility level every lienthong subject gets (ARCHITECTURE.md, "Contracts").
pub const COMPATIBILITY: &str = "BACKWARD";

/// The topic whose values each file's first message is.
const TOPIC_FILES: &[(&str, &str)] = &[
    ("lienthong/v1/referral.proto", "lienthong.referral.v1"),
    ("lienthong/v1/appointment.proto", "lienthong.appointment.v1"),
    ("lienthong/v1/lab_result.proto", "lienthong.lab-result.v1"),
    (
        "lienthong/v1/receipt.proto",
        lienthong_core::routing::RECEIPT_TOPIC,
    ),
    (
        "lienthong/v1/audit.proto",
        lienthong_core::routing::AUDIT_TOPIC,
    ),
    (
        "lienthong/v1/revocation.proto",
        lienthong_core::routing::REVOCATIONS_TOPIC,
    ),
    (
        "lienthong/v1/analytics_referral.proto",
        lienthong_core::routing::ANALYTICS_REFERRAL_TOPIC,
    ),
    (
        "lienthong/v1/analytics_appointment.proto",
        lienthong_core::routing::ANALYTICS_APPOINTMENT_TOPIC,
    ),
    (
        "lienthong/v1/analytics_lab_result.proto",
        lienthong_core::routing::ANALYTICS_LAB_RESULT_TOPIC,
    ),
    (
        "lienthong/v1/analytics_receipt.proto",
        lienthong_core::routing::ANALYTICS_RECEIPT_TOPIC,
    ),
    (
        "lienthong/v1/age_band_widening.proto",
        lienthong_core::routing::AGE_BANDS_TOPIC,
    ),
];

/// One .proto file by import path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoFile {
    /// Import path, e.g. `lienthong/v1/common.proto`.
    pub path: String,
    /// File text.
    pub source: String,
}

impl ProtoFile {
    /// Import paths of other lienthong files this file imports.
    pub fn imports(&self) -> Vec<String> {
        self.source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("import "))
            .filter_map(|rest| {
                rest.trim_start_matches("public ")
                    .trim()
                    .trim_end_matches(';')
                    .trim()
                    .strip_prefix('"')?
                    .strip_suffix('"')
                    .map(str::to_owned)
            })
            .filter(|p| !p.starts_with("google/protobuf/"))
            .collect()
    }

    /// Fully-qualified name of the file's first top-level message: for a topic's file, the
    /// message its values are.
    pub fn first_message(&self) -> Option<String> {
        let declared = |keyword: &str| {
            self.source.lines().find_map(|l| {
                let rest = l.strip_prefix(keyword)?;
                let name = rest.split(|c: char| c == ';' || c == '{' || c.is_whitespace());
                name.into_iter().find(|n| !n.is_empty()).map(str::to_owned)
            })
        };
        let message = declared("message ")?;
        Some(match declared("package ") {
            Some(package) => format!("{package}.{message}"),
            None => message,
        })
    }

    /// The registry subject of this file, with the standard topics.
    pub fn subject(&self) -> String {
        self.subject_with(&BTreeMap::new())
    }

    /// The registry subject of this file when kinds are routed to other topics.
    pub fn subject_with(&self, topics: &BTreeMap<String, String>) -> String {
        match TOPIC_FILES.iter().find(|(p, _)| *p == self.path) {
            Some((_, topic)) => value_subject(topics.get(*topic).map_or(topic, String::as_str)),
            None => self.path.trim_end_matches(".proto").replace('/', "."),
        }
    }
}

/// TopicNameStrategy subject of a topic's values.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What registration did for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Subject.
    pub subject: String,
    /// Schema id.
    pub id: u32,
    /// Version of the subject holding the schema.
    pub version: u32,
    /// True when this call created the version.
    pub created: bool,
    /// For a topic's subject, the topic and the message its values are: what a producer
    /// frames with this id.
    pub value_of: Option<(String, String)>,
}

/// Where one subject stands against a contract: the version holding the contract's file (the
/// one producers of this contract frame their messages with), and the subject's latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Subject.
    pub subject: String,
    /// The version holding this contract's file (with its references), if any.
    pub holds: Option<u32>,
    /// The subject's latest version, if it has any.
    pub latest: Option<u32>,
}

impl Standing {
    /// True when the subject's latest version is this contract's file.
    pub fn is_current(&self) -> bool {
        self.holds.is_some() && self.holds == self.latest
    }
}

/// All contract files, registrable in dependency order.
#[derive(Debug, Clone)]
pub struct SchemaSet {
    files: BTreeMap<String, ProtoFile>,
    /// Standard topic → topic actually used. A set that names topics stands for those topics
    /// alone: it registers and checks their files and what they import, and no other subject
    /// (a test's registration would otherwise add versions to the standard subjects that refer
    /// to its own).
    topics: BTreeMap<String, String>,
}

impl SchemaSet {
    /// The contract compiled into this build.
    pub fn built_in() -> Self {
        Self::from_files(
            lienthong_proto::PROTO_SOURCES
                .iter()
                .map(|(p, s)| ProtoFile {
                    path: (*p).into(),
                    source: (*s).into(),
                }),
        )
    }

    /// Files under a proto root (e.g. `proto/`), for checking changed files before deploying.
    pub fn from_dir(root: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for (path, _) in lienthong_proto::PROTO_SOURCES {
            let full = root.join(path);
            let source = std::fs::read_to_string(&full).map_err(|e| Error::Proto {
                path: full.display().to_string(),
                message: format!("cannot read: {e}"),
            })?;
            files.push(ProtoFile {
                path: (*path).into(),
                source,
            });
        }
        Ok(Self::from_files(files))
    }

    fn from_files(files: impl IntoIterator<Item = ProtoFile>) -> Self {
        Self {
            files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
            topics: BTreeMap::new(),
        }
    }

    /// Registers a kind's schema for another topic (e.g. per-test or per-environment topics).
    pub fn with_topic(mut self, kind: DocumentKind, topic: &str) -> Self {
        self.topics
            .insert(kind.topic().to_owned(), topic.to_owned());
        self
    }

    /// Registers the receipt schema for another topic.
    pub fn with_receipt_topic(mut self, topic: &str) -> Self {
        self.topics.insert(
            lienthong_core::routing::RECEIPT_TOPIC.to_owned(),
            topic.to_owned(),
        );
        self
    }

    /// Registers the access-audit schema for another topic.
    pub fn with_audit_topic(mut self, topic: &str) -> Self {
        self.topics.insert(
            lienthong_core::routing::AUDIT_TOPIC.to_owned(),
            topic.to_owned(),
        );
        self
    }

    /// Registers the token-revocation schema for another topic.
    pub fn with_revocations_topic(mut self, topic: &str) -> Self {
        self.topics.insert(
            lienthong_core::routing::REVOCATIONS_TOPIC.to_owned(),
            topic.to_owned(),
        );
        self
    }

    /// Registers the schema of any standard topic (an analytics topic, say) for another topic.
    pub fn with_topic_renamed(mut self, standard: &str, topic: &str) -> Self {
        self.topics.insert(standard.to_owned(), topic.to_owned());
        self
    }

    /// The files of the set (those of its named topics, or every file when it names none),
    /// with every import before its importer.
    pub fn in_dependency_order(&self) -> Result<Vec<&ProtoFile>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for path in self.roots() {
            self.visit(path, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    /// The files the set stands for, before their imports are added.
    fn roots(&self) -> Vec<&str> {
        if self.topics.is_empty() {
            return self.files.keys().map(String::as_str).collect();
        }
        TOPIC_FILES
            .iter()
            .filter(|(_, topic)| self.topics.contains_key(*topic))
            .map(|(path, _)| *path)
            .collect()
    }

    fn visit<'a>(
        &'a self,
        path: &str,
        done: &mut BTreeSet<String>,
        stack: &mut BTreeSet<String>,
        order: &mut Vec<&'a ProtoFile>,
    ) -> Result<()> {
        if done.contains(path) {
            return Ok(());
        }
        let file = self.files.get(path).ok_or_else(|| Error::Proto {
            path: path.into(),
            message: "imported but not part of the contract".into(),
        })?;
        if !stack.insert(path.to_owned()) {
            return Err(Error::Proto {
                path: path.into(),
                message: "import cycle".into(),
            });
        }
        for dep in file.imports() {
            self.visit(&dep, done, stack, order)?;
        }
        stack.remove(path);
        done.insert(path.to_owned());
        order.push(file);
        Ok(())
    }

    /// Registers every file (imports first) with BACKWARD compatibility on every subject.
    pub async fn register(&self, client: &RegistryClient) -> Result<Vec<Registered>> {
        let mut versions: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let mut out = Vec::new();
        for file in self.in_dependency_order()? {
            let subject = file.subject_with(&self.topics);
            let refs = references(file, &versions)?;
            // Only what is missing is written: services and tests register the same files
            // at once, and writes to one subject contend in the registry's storage (a stall
            // there outlasts a client's timeout); reads do not.
            if client.compatibility(&subject).await?.as_deref() != Some(COMPATIBILITY) {
                client.set_compatibility(&subject, COMPATIBILITY).await?;
            }
            let (id, version, created) = match client.lookup(&subject, &file.source, &refs).await? {
                Some((id, version)) => (id, version, false),
                None => {
                    let id = client.register(&subject, &file.source, &refs).await?;
                    let version = match client.lookup(&subject, &file.source, &refs).await? {
                        Some((_, v)) => v,
                        None => client
                            .versions(&subject)
                            .await?
                            .into_iter()
                            .max()
                            .unwrap_or(1),
                    };
                    (id, version, true)
                }
            };
            tracing::debug!(%subject, id, version, "schema registered");
            versions.insert(file.path.clone(), (subject.clone(), version));
            let topic = subject.strip_suffix("-value").map(str::to_owned);
            let value_of = TOPIC_FILES
                .iter()
                .any(|(path, _)| *path == file.path)
                .then(|| topic.zip(file.first_message()))
                .flatten();
            out.push(Registered {
                created,
                subject,
                id,
                version,
                value_of,
            });
        }
        Ok(out)
    }

    /// Where each subject stands against this set: whether the registry holds the set's file
    /// (with references to the versions holding its imports) and whether that is the latest.
    pub async fn standing(&self, client: &RegistryClient) -> Result<Vec<Standing>> {
        let mut versions: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let mut out = Vec::new();
        for file in self.in_dependency_order()? {
            let subject = file.subject_with(&self.topics);
            let latest = client.versions(&subject).await?.into_iter().max();
            // A file whose imports are not all held cannot be held either.
            let holds = match (latest, references(file, &versions)) {
                (Some(_), Ok(refs)) => client
                    .lookup(&subject, &file.source, &refs)
                    .await?
                    .map(|(_, version)| version),
                _ => None,
            };
            if let Some(version) = holds {
                versions.insert(file.path.clone(), (subject.clone(), version));
            }
            out.push(Standing {
                subject,
                holds,
                latest,
            });
        }
        Ok(out)
    }

    /// The schema id a producer of this contract frames `full_name` with as a value of `topic`:
    /// the version of `<topic>-value` equal to the contract's file, whose references are the
    /// versions equal to the contract's imports. Never the subject's latest version, which
    /// may be a newer contract than the one the payload was encoded with.
    pub async fn writer_id(
        &self,
        client: &RegistryClient,
        topic: &str,
        full_name: &str,
    ) -> Result<u32> {
        let file = TOPIC_FILES
            .iter()
            .filter_map(|(path, _)| self.files.get(*path))
            .find(|f| f.first_message().as_deref() == Some(full_name))
            .ok_or_else(|| Error::Proto {
                path: full_name.to_owned(),
                message: "is not the value message of any topic of the contract".into(),
            })?;
        let mut order = Vec::new();
        self.visit(
            &file.path,
            &mut BTreeSet::new(),
            &mut BTreeSet::new(),
            &mut order,
        )?;
        let mut versions: BTreeMap<String, (String, u32)> = BTreeMap::new();
        // The file itself comes last, after every file it imports.
        for f in order {
            let subject = if f.path == file.path {
                value_subject(topic)
            } else {
                f.subject()
            };
            let refs = references(f, &versions)?;
            let Some((id, version)) = client.lookup(&subject, &f.source, &refs).await? else {
                return Err(Error::NotHeld {
                    subject,
                    path: f.path.clone(),
                });
            };
            if f.path == file.path {
                return Ok(id);
            }
            versions.insert(f.path.clone(), (subject, version));
        }
        Err(Error::Proto {
            path: file.path.clone(),
            message: "missing from its own dependency order".into(),
        })
    }

    /// Checks every file against the latest registered version of its subject.
    pub async fn check(&self, client: &RegistryClient) -> Result<Vec<(String, Compatibility)>> {
        let mut versions: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let mut out = Vec::new();
        for file in self.in_dependency_order()? {
            let subject = file.subject_with(&self.topics);
            let refs = references(file, &versions)?;
            out.push((
                subject.clone(),
                client.check(&subject, &file.source, &refs).await?,
            ));
            // Importers are checked against the imported file's latest registered version.
            if let Some(latest) = client.versions(&subject).await?.into_iter().max() {
                versions.insert(file.path.clone(), (subject, latest));
            }
        }
        Ok(out)
    }
}

fn references(
    file: &ProtoFile,
    versions: &BTreeMap<String, (String, u32)>,
) -> Result<Vec<Reference>> {
    file.imports()
        .into_iter()
        .map(|name| {
            let (subject, version) = versions.get(&name).cloned().ok_or_else(|| Error::Proto {
                path: file.path.clone(),
                message: format!("import {name} is not registered"),
            })?;
            Ok(Reference {
                name,
                subject,
                version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_topic_name_strategy_and_imports_come_first() {
        let set = SchemaSet::built_in();
        let order: Vec<_> = set
            .in_dependency_order()
            .expect("acyclic")
            .into_iter()
            .map(|f| f.subject())
            .collect();
        let at = |s: &str| order.iter().position(|o| o == s);
        let common = at("lienthong.v1.common").expect("common registered");
        for s in [
            "lienthong.referral.v1-value",
            "lienthong.appointment.v1-value",
            "lienthong.lab-result.v1-value",
        ] {
            let importer = at(s).unwrap_or_else(|| panic!("{s} missing from {order:?}"));
            assert!(common < importer, "{s} before its import: {order:?}");
        }
    }

    #[test]
    fn each_topic_file_opens_with_the_message_its_topic_carries() {
        let set = SchemaSet::built_in();
        let first = |topic: &str| {
            let (path, _) = TOPIC_FILES
                .iter()
                .find(|(_, t)| *t == topic)
                .expect("a topic file");
            set.files[*path].first_message()
        };
        for kind in DocumentKind::ALL {
            assert_eq!(first(kind.topic()).as_deref(), Some(kind.message_name()));
        }
        assert_eq!(
            first(lienthong_core::routing::REVOCATIONS_TOPIC).as_deref(),
            Some("lienthong.v1.TokenRevocation")
        );
        // Imports are no topic's file: their first message is not framed by anyone.
        let common = &set.files["lienthong/v1/common.proto"];
        assert_eq!(
            common.first_message().as_deref(),
            Some("lienthong.v1.PartialDateTime")
        );
    }

    #[test]
    fn a_set_that_names_topics_stands_for_them_and_their_imports_alone() {
        let set = SchemaSet::built_in()
            .with_topic(DocumentKind::Referral, "t.referral")
            .with_topic_renamed(
                lienthong_core::routing::ANALYTICS_REFERRAL_TOPIC,
                "t.analytics.referral",
            );
        let subjects: Vec<String> = set
            .in_dependency_order()
            .expect("acyclic")
            .into_iter()
            .map(|f| f.subject_with(&set.topics))
            .collect();
        assert_eq!(
            subjects,
            [
                "lienthong.v1.common",
                "t.referral-value",
                "lienthong.v1.analytics_common",
                "t.analytics.referral-value",
            ],
        );
        let whole = SchemaSet::built_in();
        let all = whole.in_dependency_order().expect("acyclic");
        assert_eq!(all.len(), lienthong_proto::PROTO_SOURCES.len());
    }

    #[test]
    fn imports_skip_well_known_types() {
        let f = ProtoFile { path: "x.proto".into(), source: "import \"google/protobuf/timestamp.proto\";\nimport \"lienthong/v1/common.proto\";\n".into() };
        assert_eq!(f.imports(), vec!["lienthong/v1/common.proto".to_owned()]);
    }
}
