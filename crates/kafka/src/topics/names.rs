//! The document topics a service reads or writes: one flattenable set of flags, so every
//! service names them the same way (`--topic-referral`, env `LIENTHONG_TOPIC_REFERRAL`, …).

use std::collections::BTreeMap;

use lienthong_core::DocumentKind;

/// The topic of each document kind.
#[derive(Debug, Clone, clap::Args)]
pub struct DocumentTopics {
    /// Topic of referral events.
    #[arg(
        long,
        env = "LIENTHONG_TOPIC_REFERRAL",
        default_value = "lienthong.referral.v1"
    )]
    pub topic_referral: String,
    /// Topic of appointment events.
    #[arg(
        long,
        env = "LIENTHONG_TOPIC_APPOINTMENT",
        default_value = "lienthong.appointment.v1"
    )]
    pub topic_appointment: String,
    /// Topic of lab-result events.
    #[arg(
        long,
        env = "LIENTHONG_TOPIC_LAB_RESULT",
        default_value = "lienthong.lab-result.v1"
    )]
    pub topic_lab_result: String,
}

impl Default for DocumentTopics {
    fn default() -> Self {
        Self::from_map(&BTreeMap::new())
    }
}

impl DocumentTopics {
    /// The given topics, each kind not given at its default.
    pub fn from_map(topics: &BTreeMap<DocumentKind, String>) -> Self {
        let of = |k: DocumentKind| {
            topics
                .get(&k)
                .cloned()
                .unwrap_or_else(|| k.topic().to_owned())
        };
        Self {
            topic_referral: of(DocumentKind::Referral),
            topic_appointment: of(DocumentKind::Appointment),
            topic_lab_result: of(DocumentKind::LabResult),
        }
    }

    /// The topic of `kind`.
    pub fn of(&self, kind: DocumentKind) -> &str {
        match kind {
            DocumentKind::Referral => &self.topic_referral,
            DocumentKind::Appointment => &self.topic_appointment,
            DocumentKind::LabResult => &self.topic_lab_result,
        }
    }

    /// Every kind with its topic.
    pub fn all(&self) -> BTreeMap<DocumentKind, String> {
        DocumentKind::ALL
            .into_iter()
            .map(|k| (k, self.of(k).to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_kinds_topics_and_overrides_are_kept() {
        let d = DocumentTopics::default();
        for k in DocumentKind::ALL {
            assert_eq!(d.of(k), k.topic());
        }
        let custom =
            DocumentTopics::from_map(&BTreeMap::from([(DocumentKind::LabResult, "t".to_owned())]));
        assert_eq!(custom.of(DocumentKind::LabResult), "t");
        assert_eq!(
            custom.all()[&DocumentKind::Referral],
            DocumentKind::Referral.topic()
        );
    }
}
