//! Whether a process is alive and whether it is ready, as the orchestrator asks them: `/livez`
//! answers while the process's runtime runs requests at all; `/readyz` answers 200 only while
//! every condition a part of the process has set is met, else 503 with the reasons. Separate
//! from `/metrics`, whose scrape can be slow or large.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

fn conditions() -> &'static Mutex<BTreeMap<String, Option<String>>> {
    static CONDITIONS: OnceLock<Mutex<BTreeMap<String, Option<String>>>> = OnceLock::new();
    CONDITIONS.get_or_init(Mutex::default)
}

/// Marks the part `part` of the process ready (`Ok`) or not, with the reason.
pub fn set_ready(part: &str, ready: Result<(), String>) {
    let mut all = conditions().lock().unwrap_or_else(|p| p.into_inner());
    all.insert(part.to_owned(), ready.err());
}

/// Whether every part set so far is ready; the reasons of those that are not.
pub fn readiness() -> Result<(), Vec<String>> {
    let all = conditions().lock().unwrap_or_else(|p| p.into_inner());
    let reasons: Vec<String> = all
        .iter()
        .filter_map(|(part, why)| why.as_ref().map(|w| format!("{part}: {w}")))
        .collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is() {
        // Other tests of this process set parts of their own: only these two are looked at.
        let ours = |r: Result<(), Vec<String>>| -> Vec<String> {
            r.err()
                .unwrap_or_default()
                .into_iter()
                .filter(|w| w.starts_with("health-test-"))
                .collect()
        };
        set_ready("health-test-a", Err("opening".into()));
        set_ready("health-test-b", Ok(()));
        assert_eq!(ours(readiness()), ["health-test-a: opening"]);
        set_ready("health-test-a", Ok(()));
        assert!(ours(readiness()).is_empty());
    }
}
