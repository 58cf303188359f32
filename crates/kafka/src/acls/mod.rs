//! ACLs as code: a checked-in spec (deploy/acls.toml) applied to a cluster whose authorizer
//! refuses what no ACL grants. `apply` creates what is missing and removes what the spec does
//! not grant to the principals it names; principals it does not name are left alone.

mod ffi;
mod model;
mod spec;

use std::collections::BTreeSet;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

pub use model::{AclBinding, Operation, PatternKind, ResourceKind};
pub use spec::{AclSpec, PrincipalSpec};

use crate::connection::KafkaArgs;
use crate::error::{Error, Result};

/// The spec shipped with lienthong (deploy/acls.toml), used when no --spec is given.
pub const DEFAULT_SPEC: &str = include_str!("../../../../deploy/acls.toml");

/// How the cluster differs from the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclDrift {
    /// Granted by the spec, absent on the cluster.
    pub missing: Vec<AclBinding>,
    /// On the cluster for a principal of the spec, not granted by it.
    pub extra: Vec<AclBinding>,
}

impl AclDrift {
    /// True when the cluster matches the spec.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

fn admin(args: &KafkaArgs) -> Result<AdminClient<DefaultClientContext>> {
    args.client_config()?.create().map_err(Error::Client)
}

/// Compares the spec with `found` (the cluster's bindings).
pub fn drift(spec: &AclSpec, found: &[AclBinding]) -> AclDrift {
    let wanted = spec.bindings();
    let principals = spec.principals();
    let present: BTreeSet<&AclBinding> = found.iter().collect();
    AclDrift {
        missing: wanted
            .iter()
            .filter(|b| !present.contains(b))
            .cloned()
            .collect(),
        extra: found
            .iter()
            .filter(|b| principals.contains(&b.principal) && !wanted.contains(*b))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}

/// The allow bindings on the cluster.
pub fn describe(args: &KafkaArgs) -> Result<Vec<AclBinding>> {
    ffi::describe(&admin(args)?, args.timeout())
}

/// Makes the cluster match the spec; returns what was changed.
pub fn apply(args: &KafkaArgs, spec: &AclSpec) -> Result<AclDrift> {
    let admin = admin(args)?;
    let found = ffi::describe(&admin, args.timeout())?;
    let changes = drift(spec, &found);
    ffi::create(&admin, &changes.missing, args.timeout())?;
    ffi::delete(&admin, &changes.extra, args.timeout())?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn drift_names_missing_and_extra_bindings_of_managed_principals_only() {
        let spec = AclSpec::parse(
            "[[principal]]\nname = \"gateway\"\nwrite = [\"t\"]\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        let extra = AclBinding {
            principal: "User:gateway".into(),
            resource: ResourceKind::Topic,
            name: "t".into(),
            pattern: PatternKind::Literal,
            operation: Operation::Read,
        };
        let unmanaged = AclBinding {
            principal: "User:someone-else".into(),
            ..extra.clone()
        };
        let write = AclBinding {
            operation: Operation::Write,
            ..extra.clone()
        };
        let d = drift(&spec, &[extra.clone(), unmanaged, write]);
        assert_eq!(d.extra, vec![extra]);
        assert_eq!(d.missing.len(), 1, "{d:?}");
        assert_eq!(d.missing[0].operation, Operation::Describe);
    }
}
