//! Who may read a patient's record: a facility with a care relationship to the patient in
//! this region. The relationship is read from the patient's own documents: the caller (or a
//! facility its hub acts for) issued, sent or received a referral for the patient, holds an
//! appointment for them, or produced a lab report for them, within the configured window; a
//! pending referral addressed to the caller counts however old, so the receiving hospital can
//! reuse the sender's results (Health Insurance Law as amended, in force 2027). A facility
//! seeing the patient for the first time attests presence with the number of the patient's
//! health insurance card, which must match a card the region holds for the patient; the
//! attestation then counts as a relationship for the window. Without any of these, only the
//! EMERGENCY purpose answers (break-the-glass), marked for review.

use std::collections::HashMap;
use std::sync::Mutex;

use lienthong_core::ClinicalEvent;
use time::{Duration, OffsetDateTime};

use crate::store::{Status as DocStatus, StoredDoc};

/// What was decided about one read of a patient's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The caller has a care relationship; the reason names it.
    Allowed(String),
    /// No relationship, but the purpose is EMERGENCY: answered, and to be reviewed.
    BreakGlass,
    /// Refused; the reason says why and what would allow it.
    Refused(String),
}

/// The rule's settings.
#[derive(Debug, Clone, Copy)]
pub struct CareRule {
    /// How long a document (or an attestation) keeps a relationship alive.
    pub window: Duration,
}

/// What the caller brought besides its identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim<'a> {
    /// The purpose is EMERGENCY.
    pub emergency: bool,
    /// Insurance card number from the card the patient presented, if any.
    pub insurance_card: Option<&'a str>,
    /// The caller attested presence for this patient before, within the window.
    pub attested_before: bool,
}

fn card_form(number: &str) -> String {
    number
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// The facilities a document relates to the patient, with the role they played.
fn roles(event: &ClinicalEvent) -> Vec<(&str, &'static str)> {
    let mut out = Vec::new();
    let publisher = event.header().map(|h| h.source_facility_code.as_str());
    match event {
        ClinicalEvent::Referral(e) => {
            if let Some(s) = &e.slip {
                out.extend(
                    s.issuer
                        .as_ref()
                        .map(|f| (f.code.as_str(), "issued a referral")),
                );
                out.extend(
                    s.sending
                        .iter()
                        .map(|f| (f.code.as_str(), "sent the patient on a referral")),
                );
                out.extend(
                    s.receiving
                        .as_ref()
                        .map(|f| (f.code.as_str(), "received a referral")),
                );
            }
        }
        ClinicalEvent::Appointment(e) => {
            out.extend(
                e.appointment
                    .as_ref()
                    .and_then(|a| a.facility.as_ref())
                    .map(|f| (f.code.as_str(), "holds an appointment")),
            );
        }
        ClinicalEvent::LabResult(e) => {
            out.extend(
                e.report
                    .as_ref()
                    .and_then(|r| r.facility.as_ref())
                    .map(|f| (f.code.as_str(), "produced a lab report")),
            );
        }
    }
    out.extend(publisher.map(|p| (p, "published a document")));
    out
}

fn occurred(event: &ClinicalEvent) -> Option<OffsetDateTime> {
    let ts = event.header()?.occurred_at.as_ref()?;
    OffsetDateTime::from_unix_timestamp(ts.seconds).ok()
}

fn holds_card(docs: &[StoredDoc], card: &str) -> bool {
    let wanted = card_form(card);
    !wanted.is_empty()
        && docs.iter().any(|d| {
            d.event.patient().is_some_and(|p| {
                p.insurance_cards
                    .iter()
                    .any(|c| card_form(&c.number) == wanted)
            })
        })
}

impl CareRule {
    /// Decides whether the caller, acting for the facilities `acts_for` accepts, may read the
    /// patient whose documents in this region are `docs`.
    pub fn decide(
        &self,
        docs: &[StoredDoc],
        acts_for: impl Fn(&str) -> bool,
        claim: Claim<'_>,
        now: OffsetDateTime,
    ) -> Access {
        let since = now - self.window;
        for d in docs {
            let recent = occurred(&d.event).is_some_and(|t| t >= since);
            for (facility, role) in roles(&d.event) {
                if facility.is_empty() || !acts_for(facility) {
                    continue;
                }
                let receiving = role == "received a referral";
                // A cancelled referral never brought the patient to its receiver; its issuer
                // had them in care all the same.
                if receiving && d.status == DocStatus::Cancelled {
                    continue;
                }
                let pending_to_caller = receiving && d.status == DocStatus::Pending;
                if recent || pending_to_caller {
                    // No document id: reasons reach the warehouse's access table, which holds
                    // no slip numbers.
                    return Access::Allowed(format!("facility {facility} {role}"));
                }
            }
        }
        if claim.attested_before {
            return Access::Allowed(
                "presence attested with the patient's insurance card".to_owned(),
            );
        }
        match claim.insurance_card {
            Some(card) if holds_card(docs, card) => {
                return Access::Allowed(
                    "presence attested with the patient's insurance card".to_owned(),
                );
            }
            Some(_) if !claim.emergency => {
                return Access::Refused(
                    "the insurance card number does not match a card this region holds for the patient".to_owned(),
                );
            }
            _ => {}
        }
        if claim.emergency {
            return Access::BreakGlass;
        }
        Access::Refused(format!(
            "no care relationship with this patient in this region: the caller issued, sent or received no referral for them, holds no appointment and produced no lab report within {} days; attest the patient's presence with their insurance card number, or state the purpose EMERGENCY (audited for review)",
            self.window.whole_days()
        ))
    }
}

/// Attestations of presence seen by this instance: (facility, patient key) → when. Kept in
/// memory for the window (a restart asks for the card again); bounded.
pub struct Attestations {
    window: Duration,
    seen: Mutex<HashMap<(String, String), OffsetDateTime>>,
}

/// Most attestations held; beyond it the oldest are dropped (they are asked for again).
const MAX_ATTESTATIONS: usize = 200_000;

impl Attestations {
    /// Attestations valid for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// True when `facility` attested presence of `patient_key` within the window.
    pub fn holds(&self, facility: &str, patient_key: &str, now: OffsetDateTime) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(facility.to_owned(), patient_key.to_owned()))
            .is_some_and(|t| *t >= now - self.window)
    }

    /// Records an attestation.
    pub fn record(&self, facility: &str, patient_key: &str, now: OffsetDateTime) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_ATTESTATIONS {
            let cutoff = now - self.window;
            seen.retain(|_, t| *t >= cutoff);
            if seen.len() >= MAX_ATTESTATIONS {
                let mut times: Vec<OffsetDateTime> = seen.values().copied().collect();
                times.sort_unstable();
                let median = times[times.len() / 2];
                seen.retain(|_, t| *t > median);
            }
        }
        seen.insert((facility.to_owned(), patient_key.to_owned()), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_core::fixtures::{Generator, reassign};
    use lienthong_proto::v1 as pb;

    fn rule() -> CareRule {
        CareRule {
            window: Duration::days(365),
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn referral(from: &str, to: &str, status: DocStatus, age_days: i64) -> StoredDoc {
        let mut g = Generator::new(7, now() - Duration::days(age_days));
        let mut e = reassign(ClinicalEvent::Referral(g.referral()), from);
        if let ClinicalEvent::Referral(r) = &mut e {
            r.slip.get_or_insert_with(Default::default).receiving = Some(pb::FacilityRef {
                code: to.into(),
                name: String::new(),
            });
        }
        StoredDoc { event: e, status }
    }

    fn only(facility: &'static str) -> impl Fn(&str) -> bool {
        move |f| f == facility
    }

    #[test]
    fn each_kind_of_relationship_allows() {
        let docs = vec![referral("79025", "01001", DocStatus::Received, 10)];
        for f in ["79025", "01001"] {
            let a = rule().decide(&docs, |x| x == f, Claim::default(), now());
            assert!(
                matches!(a, Access::Allowed(ref why) if why.contains(f)),
                "{f}: {a:?}"
            );
        }
        let mut g = Generator::new(9, now());
        let appointment = StoredDoc {
            event: reassign(ClinicalEvent::Appointment(g.appointment()), "48001"),
            status: DocStatus::Pending,
        };
        let lab = StoredDoc {
            event: reassign(ClinicalEvent::LabResult(g.lab_result()), "46001"),
            status: DocStatus::Pending,
        };
        assert!(
            matches!(rule().decide(std::slice::from_ref(&appointment), only("48001"), Claim::default(), now()), Access::Allowed(ref w) if w.contains("appointment"))
        );
        assert!(
            matches!(rule().decide(std::slice::from_ref(&lab), only("46001"), Claim::default(), now()), Access::Allowed(ref w) if w.contains("lab report"))
        );
    }

    #[test]
    fn no_relationship_is_refused_and_emergency_breaks_the_glass() {
        let docs = vec![referral("79025", "01001", DocStatus::Received, 10)];
        let a = rule().decide(&docs, only("48001"), Claim::default(), now());
        assert!(
            matches!(a, Access::Refused(ref why) if why.contains("no care relationship")),
            "{a:?}"
        );
        let emergency = Claim {
            emergency: true,
            ..Claim::default()
        };
        assert_eq!(
            rule().decide(&docs, only("48001"), emergency, now()),
            Access::BreakGlass
        );
        // No documents at all reads the same as no relationship: nothing tells whether the
        // region knows the patient.
        assert!(matches!(
            rule().decide(&[], only("48001"), Claim::default(), now()),
            Access::Refused(_)
        ));
    }

    #[test]
    fn old_documents_lapse_but_a_pending_referral_to_the_caller_does_not() {
        let old = vec![referral("79025", "01001", DocStatus::Received, 400)];
        assert!(matches!(
            rule().decide(&old, only("01001"), Claim::default(), now()),
            Access::Refused(_)
        ));
        let pending = vec![referral("79025", "01001", DocStatus::Pending, 400)];
        assert!(matches!(
            rule().decide(&pending, only("01001"), Claim::default(), now()),
            Access::Allowed(_)
        ));
        assert!(
            matches!(
                rule().decide(&pending, only("79025"), Claim::default(), now()),
                Access::Refused(_)
            ),
            "the issuer's old referral lapsed"
        );
        let cancelled = vec![referral("79025", "01001", DocStatus::Cancelled, 1)];
        assert!(
            matches!(
                rule().decide(&cancelled, only("01001"), Claim::default(), now()),
                Access::Refused(_)
            ),
            "the patient never came"
        );
        assert!(
            matches!(
                rule().decide(&cancelled, only("79025"), Claim::default(), now()),
                Access::Allowed(_)
            ),
            "the issuer had them in care"
        );
    }

    #[test]
    fn presence_is_attested_only_with_the_patients_own_card() {
        let docs = vec![referral("79025", "01001", DocStatus::Received, 10)];
        let card = docs[0].event.patient().expect("patient").insurance_cards[0]
            .number
            .clone();
        let with = |c: &'static str| Claim {
            insurance_card: Some(c),
            ..Claim::default()
        };
        let spaced: &'static str = Box::leak(format!(" {} ", card.to_lowercase()).into_boxed_str());
        assert!(
            matches!(rule().decide(&docs, only("48001"), with(spaced), now()), Access::Allowed(ref w) if w.contains("attested"))
        );
        assert!(
            matches!(rule().decide(&docs, only("48001"), with("DN4799999999999"), now()), Access::Refused(ref w) if w.contains("does not match"))
        );
        assert!(matches!(
            rule().decide(&docs, only("48001"), with(""), now()),
            Access::Refused(_)
        ));
        let before = Claim {
            attested_before: true,
            ..Claim::default()
        };
        assert!(matches!(
            rule().decide(&docs, only("48001"), before, now()),
            Access::Allowed(_)
        ));
    }

    #[test]
    fn attestations_last_for_the_window() {
        let a = Attestations::new(Duration::days(30));
        let t = now();
        a.record("48001", "pk", t);
        assert!(a.holds("48001", "pk", t + Duration::days(29)));
        assert!(!a.holds("48001", "pk", t + Duration::days(31)));
        assert!(!a.holds("48002", "pk", t));
    }
}
