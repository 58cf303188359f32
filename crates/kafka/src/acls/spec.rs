//! The checked-in ACL spec (deploy/acls.toml): per principal, which topics it reads and writes
//! and which consumer groups it uses. Everything else is refused by the broker's authorizer.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::model::{AclBinding, Operation, PatternKind, ResourceKind};
use crate::error::{Error, Result};

/// One principal's rights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// Kafka user name (the principal is `User:<name>`).
    pub name: String,
    /// What the principal is for (documentation).
    #[serde(default)]
    pub description: String,
    /// Topics it consumes.
    #[serde(default)]
    pub read: Vec<String>,
    /// Topic prefixes it consumes (e.g. `lienthong.analytics.`).
    #[serde(default)]
    pub read_prefixes: Vec<String>,
    /// Topics it produces to.
    #[serde(default)]
    pub write: Vec<String>,
    /// Topics whose configs it reads.
    #[serde(default)]
    pub describe_configs: Vec<String>,
    /// Consumer groups it joins.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Consumer group prefixes it joins (e.g. `lienthong-regional-`).
    #[serde(default)]
    pub group_prefixes: Vec<String>,
    /// Transactional id prefixes it produces under (WRITE + DESCRIBE), for a transactional
    /// producer such as the de-identification service's.
    #[serde(default)]
    pub transactional_id_prefixes: Vec<String>,
}

/// The whole spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSpec {
    /// Principals and their rights.
    #[serde(rename = "principal")]
    pub principals: Vec<PrincipalSpec>,
}

impl AclSpec {
    /// Parses a spec; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let spec: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("ACL spec {}: {e}", origin.display())))?;
        spec.check(origin)?;
        Ok(spec)
    }

    /// Reads and parses a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read ACL spec {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    fn check(&self, origin: &Path) -> Result<()> {
        let mut seen = BTreeSet::new();
        for p in &self.principals {
            let valid = !p.name.is_empty()
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                return Err(Error::Config(format!(
                    "ACL spec {}: principal name {:?} must be letters, digits, '-', '_' or '.'",
                    origin.display(),
                    p.name
                )));
            }
            if !seen.insert(&p.name) {
                return Err(Error::Config(format!(
                    "ACL spec {}: principal {} appears twice; keep one entry per principal",
                    origin.display(),
                    p.name
                )));
            }
            let names = p
                .read
                .iter()
                .chain(&p.read_prefixes)
                .chain(&p.write)
                .chain(&p.describe_configs)
                .chain(&p.groups)
                .chain(&p.group_prefixes)
                .chain(&p.transactional_id_prefixes);
            for n in names {
                if n.trim().is_empty() || n.contains('*') {
                    return Err(Error::Config(format!(
                        "ACL spec {}: principal {}: resource {n:?} must be a name or a prefix (in the *_prefixes lists), never empty or a wildcard",
                        origin.display(),
                        p.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The Kafka principals the spec manages (`User:<name>`).
    pub fn principals(&self) -> BTreeSet<String> {
        self.principals
            .iter()
            .map(|p| format!("User:{}", p.name))
            .collect()
    }

    /// Every binding the spec grants.
    pub fn bindings(&self) -> BTreeSet<AclBinding> {
        let mut out = BTreeSet::new();
        for p in &self.principals {
            let principal = format!("User:{}", p.name);
            use Operation::*;
            use PatternKind::*;
            use ResourceKind::*;
            // Each list of the spec, and what one of its entries grants.
            let lists: [(&Vec<String>, ResourceKind, PatternKind, &[Operation]); 7] = [
                (&p.read, Topic, Literal, &[Read, Describe]),
                (&p.read_prefixes, Topic, Prefixed, &[Read, Describe]),
                (&p.write, Topic, Literal, &[Write, Describe]),
                (&p.describe_configs, Topic, Literal, &[DescribeConfigs]),
                (&p.groups, Group, Literal, &[Read, Describe]),
                (&p.group_prefixes, Group, Prefixed, &[Read, Describe]),
                (
                    &p.transactional_id_prefixes,
                    TransactionalId,
                    Prefixed,
                    &[Write, Describe],
                ),
            ];
            for (names, resource, pattern, operations) in lists {
                for name in names {
                    for &operation in operations {
                        out.insert(AclBinding {
                            principal: principal.clone(),
                            resource,
                            name: name.clone(),
                            pattern,
                            operation,
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_parses_and_keeps_analytics_off_document_topics() {
        let spec = AclSpec::parse(super::super::DEFAULT_SPEC, Path::new("deploy/acls.toml"))
            .expect("valid");
        let bindings = spec.bindings();
        let analytics: Vec<_> = bindings
            .iter()
            .filter(|b| b.principal == "User:analytics")
            .collect();
        assert!(!analytics.is_empty());
        assert!(
            analytics
                .iter()
                .all(|b| b.resource != ResourceKind::Topic
                    || b.name.starts_with("lienthong.analytics.")),
            "{analytics:?}"
        );
        let gateway_reads: Vec<_> = bindings
            .iter()
            .filter(|b| {
                b.principal == "User:gateway"
                    && b.operation == Operation::Read
                    && b.resource == ResourceKind::Topic
            })
            .collect();
        assert!(
            gateway_reads
                .iter()
                .all(|b| b.name == "lienthong.token-revocations.v1"),
            "the gateway consumes only token revocations: {gateway_reads:?}"
        );
        let regional_writes_documents = bindings.iter().any(|b| {
            b.principal == "User:regional"
                && b.operation == Operation::Write
                && b.name == "lienthong.referral.v1"
        });
        assert!(
            !regional_writes_documents,
            "regional stores never produce documents"
        );
    }

    #[test]
    fn wildcards_duplicates_and_unknown_fields_are_refused() {
        for (text, needle) in [
            ("[[principal]]\nname = \"a\"\nread = [\"*\"]\n", "wildcard"),
            (
                "[[principal]]\nname = \"a\"\n[[principal]]\nname = \"a\"\n",
                "appears twice",
            ),
            (
                "[[principal]]\nname = \"a\"\nsuperuser = true\n",
                "unknown field",
            ),
            ("[[principal]]\nname = \"a b\"\n", "principal name"),
        ] {
            let err = AclSpec::parse(text, Path::new("t.toml")).expect_err(text);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
