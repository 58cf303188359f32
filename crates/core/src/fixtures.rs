//! Realistic synthetic documents for tests, demos and benchmarks, and a catalogue of invalid
//! ones with the error codes each must produce. Deterministic for a seed; no real person.

use lienthong_proto::v1 as pb;
use time::{Duration, OffsetDateTime};

use crate::datetime::VIETNAM;
use crate::document_id;
use crate::event::ClinicalEvent;
use crate::province;
use crate::routing::DocumentKind;

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý",
];
const MIDDLE: &[&str] = &[
    "Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quốc", "Thu", "Gia",
];
const GIVEN: &[&str] = &[
    "An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Hương", "Khánh", "Linh", "Mai", "Nam",
    "Phúc", "Quân", "Sơn", "Thảo", "Trang", "Tuấn", "Việt", "Yến",
];
const ICD: &[&str] = &[
    "J18.9", "I10", "E11.9", "K35.8", "I21.0", "N18.5", "C34.9", "A09", "S06.0", "O80",
];
/// (indicator code, name, unit).
type Indicator = (&'static str, &'static str, &'static str);
const SERVICES: &[(&str, &[Indicator])] = &[
    (
        "22.0121.1369",
        &[
            ("HGB", "Huyết sắc tố", "g/L"),
            ("WBC", "Số lượng bạch cầu", "G/L"),
            ("PLT", "Số lượng tiểu cầu", "G/L"),
        ],
    ),
    ("23.0075.1494", &[("GLU", "Glucose", "mmol/L")]),
    (
        "23.0051.1494",
        &[("CRE", "Creatinin", "µmol/L"), ("URE", "Urê", "mmol/L")],
    ),
];

/// A small deterministic generator (SplitMix64): fixtures must not change between runs.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u64,
    now: OffsetDateTime,
    /// The seed and the slips issued so far are part of every slip number, so no two
    /// generators of different seeds, and no generator twice, issue the same slip (two
    /// documents under one id would be a version conflict, as in life).
    seed: u64,
    slips: u64,
}

impl Generator {
    /// A generator for `seed`, with dates placed shortly before `now`.
    pub fn new(seed: u64, now: OffsetDateTime) -> Self {
        Self {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            now: now.to_offset(VIETNAM),
            seed,
            slips: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A slip number with `prefix`, unique among every generator's.
    fn slip_number(&mut self, prefix: &str) -> String {
        self.slips += 1;
        format!(
            "{prefix}{:06}.{:x}.{}",
            self.below(1_000_000),
            self.seed,
            self.slips
        )
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn province(&mut self) -> &'static str {
        let codes: Vec<_> = province::old_codes().collect();
        codes[self.below(codes.len() as u64) as usize]
    }

    /// A valid facility code in a random province.
    pub fn facility(&mut self) -> String {
        format!("{}{:03}", self.province(), 1 + self.below(99))
    }

    fn stamp(&self, t: OffsetDateTime, minutes: bool) -> pb::PartialDateTime {
        let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
        if minutes {
            pb::PartialDateTime {
                value: format!("{y:04}{m:02}{d:02}{:02}{:02}", t.hour(), t.minute()),
                precision: pb::DatePrecision::Minute as i32,
            }
        } else {
            pb::PartialDateTime {
                value: format!("{y:04}{m:02}{d:02}"),
                precision: pb::DatePrecision::Day as i32,
            }
        }
    }

    /// A patient with a valid citizen ID consistent with birth year and sex.
    pub fn patient(&mut self) -> pb::Patient {
        let birth_year = 1930 + self.below(95) as i32;
        let male = self.below(2) == 0;
        let century_digit = ((birth_year - 1900) / 100) * 2 + i32::from(!male);
        let prov = self.province();
        let citizen_id = format!(
            "0{prov}{century_digit}{:02}{:06}",
            birth_year % 100,
            self.below(1_000_000)
        );
        let month = 1 + self.below(12);
        let day = 1 + self.below(28);
        let middle = if male {
            *self.pick(&MIDDLE[..3])
        } else {
            "Thị"
        };
        let full_name = format!("{} {middle} {}", self.pick(FAMILY), self.pick(GIVEN));
        let card_prov = self.province();
        pb::Patient {
            citizen_id,
            id_kind: pb::PersonIdKind::CitizenId as i32,
            full_name,
            birth_date: Some(pb::PartialDateTime {
                value: format!("{birth_year:04}{month:02}{day:02}"),
                precision: pb::DatePrecision::Day as i32,
            }),
            sex: if male { pb::Sex::Male } else { pb::Sex::Female } as i32,
            ethnicity_code: "01".into(),
            nationality_code: "000".into(),
            address: format!("Số {} đường Lê Lợi, phường Bến Thành", 1 + self.below(200)),
            residence_province_code: prov.into(),
            insurance_cards: vec![pb::InsuranceCard {
                number: format!("DN4{card_prov}{:010}", self.below(10_000_000_000)),
                valid_from: Some(self.stamp(self.now - Duration::days(300), false)),
                valid_to: Some(self.stamp(self.now + Duration::days(60), false)),
                registered_facility_code: format!("{card_prov}001"),
            }],
            facility_patient_number: format!("BN{:08}", self.below(100_000_000)),
        }
    }

    fn episode(&mut self) -> (pb::EpisodeDates, OffsetDateTime, OffsetDateTime) {
        let admitted = self.now - Duration::hours(48 + self.below(200) as i64);
        let discharged = admitted + Duration::hours(2 + self.below(40) as i64);
        (
            pb::EpisodeDates {
                admitted_at: Some(self.stamp(admitted, true)),
                inpatient_admitted_at: None,
                discharged_at: Some(self.stamp(discharged, true)),
            },
            admitted,
            discharged,
        )
    }

    fn doctor(&mut self, role: pb::PractitionerRole) -> pb::Practitioner {
        let licence = format!(
            "{:06}/{}-CCHN",
            self.below(1_000_000),
            self.pick(&["HNO", "HCM", "BYT", "DNA"])
        );
        pb::Practitioner {
            licence_number: licence.clone(),
            role: role as i32,
            raw: licence,
            name: String::new(),
            title: String::new(),
        }
    }

    fn diagnosis(&mut self) -> pb::Diagnosis {
        let main = self.below(ICD.len() as u64) as usize;
        // A secondary code is never the main one (a repeat is a violation).
        let secondary = (main + 1 + self.below(ICD.len() as u64 - 1) as usize) % ICD.len();
        pb::Diagnosis {
            main_icd10: ICD[main].into(),
            secondary_icd10: vec![ICD[secondary].into()],
            traditional_codes: vec![],
            text: "Viêm phổi, tăng huyết áp".into(),
        }
    }

    fn header(
        &self,
        kind: DocumentKind,
        document_id: String,
        facility: &str,
        occurred: OffsetDateTime,
    ) -> pb::EventHeader {
        pb::EventHeader {
            event_id: document_id::event_id(kind, &document_id, 1),
            document_id,
            document_version: 1,
            action: pb::Action::Created as i32,
            occurred_at: Some(prost_types::Timestamp {
                seconds: occurred.unix_timestamp(),
                nanos: 0,
            }),
            recorded_at: None,
            source_facility_code: facility.into(),
            source_system: "lienthong-fixtures".into(),
            source_system_version: env!("CARGO_PKG_VERSION").into(),
            trace: None,
            patient_key: String::new(),
            patient_key_id: String::new(),
        }
    }

    /// A valid referral event.
    pub fn referral(&mut self) -> pb::ReferralEvent {
        let from = self.facility();
        let mut to = self.facility();
        while to == from {
            to = self.facility();
        }
        let (episode, _, discharged) = self.episode();
        let slip_number = self.slip_number("CT");
        let slip = pb::ReferralSlip {
            episode_id: format!("{from}.{:010}", self.below(10_000_000_000)),
            record_number: format!("HS{:06}", self.below(1_000_000)),
            book_number: format!("{:04}", self.below(10_000)),
            slip_number: slip_number.clone(),
            issuer: Some(pb::FacilityRef {
                code: from.clone(),
                name: String::new(),
            }),
            sending: vec![pb::FacilityRef {
                code: from.clone(),
                name: String::new(),
            }],
            receiving: Some(pb::FacilityRef {
                code: to,
                name: String::new(),
            }),
            patient: Some(self.patient()),
            occupation_code: String::new(),
            episode: Some(episode),
            clinical_signs: "Sốt 39°C, ho có đờm, khó thở nhẹ".into(),
            diagnosis: Some(self.diagnosis()),
            course_of_illness: "Vào viện ngày thứ 3 của bệnh, điều trị kháng sinh không đáp ứng"
                .into(),
            test_summary: "X-quang: đám mờ đáy phổi phải; CRP 85 mg/L".into(),
            treatment: "Ceftriaxone 2g/ngày".into(),
            condition_at_transfer: "Tỉnh, SpO2 93% khí trời".into(),
            discharge_type: pb::DischargeType::TransferredProfessional as i32,
            reason: pb::ReferralReason::BeyondCapability as i32,
            planned_treatment: "Chuyển tuyến trên điều trị tiếp".into(),
            transport: "Xe cứu thương".into(),
            escort: Some(pb::Practitioner {
                role: pb::PractitionerRole::Escort as i32,
                name: "Lê Thị Hoa".into(),
                title: "Điều dưỡng".into(),
                ..Default::default()
            }),
            physician: Some(self.doctor(pb::PractitionerRole::Physician)),
            head_of_facility: Some(self.doctor(pb::PractitionerRole::HeadOfFacility)),
            valid_until: Some(self.stamp(discharged + Duration::days(14), false)),
            chronic_validity: false,
            signature: b"<Signature>synthetic</Signature>".to_vec(),
            layout: pb::XmlLayout::Qd3176 as i32,
            issued_at: Some(self.stamp(discharged, false)),
        };
        let header = self.header(
            DocumentKind::Referral,
            document_id::referral(&from, &slip_number),
            &from,
            discharged,
        );
        pb::ReferralEvent {
            header: Some(header),
            slip: Some(slip),
        }
    }

    /// A valid follow-up appointment event.
    pub fn appointment(&mut self) -> pb::AppointmentEvent {
        let fac = self.facility();
        let (episode, _, discharged) = self.episode();
        let slip_number = self.slip_number("HK");
        let next_days = self.below(30) as i64;
        let appointment = pb::FollowUpAppointment {
            episode_id: format!("{fac}.{:010}", self.below(10_000_000_000)),
            slip_number: slip_number.clone(),
            facility: Some(pb::FacilityRef {
                code: fac.clone(),
                name: String::new(),
            }),
            patient: Some(self.patient()),
            episode: Some(episode),
            appointment_at: Some(self.stamp(discharged + Duration::days(7 + next_days), true)),
            diagnosis: Some(self.diagnosis()),
            beneficiary_category: "1.1".into(),
            physician: Some(self.doctor(pb::PractitionerRole::Physician)),
            head_of_facility: Some(self.doctor(pb::PractitionerRole::HeadOfFacility)),
            issued_at: Some(self.stamp(discharged, false)),
        };
        let header = self.header(
            DocumentKind::Appointment,
            document_id::appointment(&fac, &slip_number),
            &fac,
            discharged,
        );
        pb::AppointmentEvent {
            header: Some(header),
            appointment: Some(appointment),
        }
    }

    /// A valid lab-result event.
    pub fn lab_result(&mut self) -> pb::LabResultEvent {
        let fac = self.facility();
        let (episode, admitted, _) = self.episode();
        let (service, indicators) = *self.pick(SERVICES);
        let at = admitted + Duration::hours(1);
        let reader = self.doctor(pb::PractitionerRole::ResultReader);
        let lines = indicators
            .iter()
            .enumerate()
            .map(|(i, (code, name, unit))| {
                let v = 1.0 + self.below(2000) as f64 / 10.0;
                pb::LabResultLine {
                    line_number: i as u32 + 1,
                    indicator_code: (*code).into(),
                    indicator_name: (*name).into(),
                    value_text: format!("{v}"),
                    value_numeric: Some(pb::NumericValue { value: v }),
                    unit: (*unit).into(),
                    reference_range: None,
                    description: String::new(),
                    conclusion: String::new(),
                    result_at: Some(self.stamp(at, true)),
                    readers: vec![reader.clone()],
                    loinc_code: String::new(),
                    result_instant: Some(prost_types::Timestamp {
                        seconds: at.unix_timestamp() - i64::from(at.second()),
                        nanos: 0,
                    }),
                }
            })
            .collect();
        let episode_id = format!("{fac}.{:010}", self.below(10_000_000_000));
        let report = pb::LabReport {
            episode_id: episode_id.clone(),
            facility: Some(pb::FacilityRef {
                code: fac.clone(),
                name: String::new(),
            }),
            patient: Some(self.patient()),
            service_code: service.into(),
            episode: Some(episode),
            lines,
        };
        let header = self.header(
            DocumentKind::LabResult,
            document_id::lab_report(&fac, &episode_id, service),
            &fac,
            at,
        );
        pb::LabResultEvent {
            header: Some(header),
            report: Some(report),
        }
    }

    /// A valid event of any kind, rotating through the kinds.
    pub fn any(&mut self, i: usize) -> ClinicalEvent {
        match i % 3 {
            0 => ClinicalEvent::Referral(self.referral()),
            1 => ClinicalEvent::Appointment(self.appointment()),
            _ => ClinicalEvent::LabResult(self.lab_result()),
        }
    }
}

/// Moves a generated event to `facility`, recomputing document and event ids.
pub fn reassign(mut event: ClinicalEvent, facility: &str) -> ClinicalEvent {
    use crate::document_id as ids;
    let doc = match &mut event {
        ClinicalEvent::Referral(e) => {
            let s = e.slip.get_or_insert_with(Default::default);
            let f = pb::FacilityRef {
                code: facility.into(),
                name: String::new(),
            };
            s.issuer = Some(f.clone());
            s.sending = vec![f];
            if s.receiving.as_ref().is_some_and(|r| r.code == facility) {
                s.receiving = Some(pb::FacilityRef {
                    code: "01001".into(),
                    name: String::new(),
                });
            }
            ids::referral(facility, &s.slip_number)
        }
        ClinicalEvent::Appointment(e) => {
            let a = e.appointment.get_or_insert_with(Default::default);
            a.facility = Some(pb::FacilityRef {
                code: facility.into(),
                name: String::new(),
            });
            ids::appointment(facility, &a.slip_number)
        }
        ClinicalEvent::LabResult(e) => {
            let r = e.report.get_or_insert_with(Default::default);
            r.facility = Some(pb::FacilityRef {
                code: facility.into(),
                name: String::new(),
            });
            ids::lab_report(facility, &r.episode_id, &r.service_code)
        }
    };
    let kind = event.kind();
    let h = event.header_mut();
    h.source_facility_code = facility.into();
    h.event_id = ids::event_id(kind, &doc, h.document_version);
    h.document_id = doc;
    event
}

/// An invalid document and the exact error codes validation must report for it.
#[derive(Debug, Clone)]
pub struct InvalidCase {
    /// What is wrong, in words.
    pub name: &'static str,
    /// The event.
    pub event: ClinicalEvent,
    /// Expected error codes, sorted (warnings are not listed).
    pub expected: Vec<&'static str>,
}

/// The catalogue of invalid documents, built from valid ones with one defect each
/// (some with several, to show that every violation is reported at once).
pub fn invalid_catalogue(now: OffsetDateTime) -> Vec<InvalidCase> {
    let mut g = Generator::new(42, now);
    let mut cases = Vec::new();
    let mut referral = |name, expected: &[&'static str], edit: &dyn Fn(&mut pb::ReferralEvent)| {
        let mut e = g.referral();
        edit(&mut e);
        cases.push(InvalidCase {
            name,
            event: ClinicalEvent::Referral(e),
            expected: sorted(expected),
        });
    };
    fn slip(e: &mut pb::ReferralEvent) -> &mut pb::ReferralSlip {
        e.slip.get_or_insert_with(Default::default)
    }
    fn pat(e: &mut pb::ReferralEvent) -> &mut pb::Patient {
        slip(e).patient.get_or_insert_with(Default::default)
    }
    referral("citizen ID too short", &["citizen_id.length"], &|e| {
        pat(e).citizen_id = "07920300123".into()
    });
    fn header(e: &mut pb::ReferralEvent) -> &mut pb::EventHeader {
        e.header.get_or_insert_with(Default::default)
    }
    // 9999-12-31T23:59:59Z: valid for protobuf, but no Vietnam (UTC+7) date exists for it.
    referral(
        "occurred_at at the end of year 9999",
        &["timestamp.future"],
        &|e| {
            header(e).occurred_at = Some(prost_types::Timestamp {
                seconds: 253_402_300_799,
                nanos: 0,
            })
        },
    );
    referral(
        "occurred_at beyond any calendar",
        &["timestamp.invalid"],
        &|e| {
            header(e).occurred_at = Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            })
        },
    );
    referral(
        "recorded_at with nanos of two seconds",
        &["timestamp.invalid"],
        &|e| {
            header(e).recorded_at = Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 2_000_000_000,
            })
        },
    );
    referral("recorded_at before 1900", &["timestamp.too_early"], &|e| {
        header(e).recorded_at = Some(prost_types::Timestamp {
            seconds: -2_500_000_000,
            nanos: 0,
        })
    });
    referral(
        "citizen ID with unknown province",
        &["citizen_id.province"],
        &|e| pat(e).citizen_id = "003203001234".into(),
    );
    referral(
        "citizen ID birth year disagrees",
        &["citizen_id.birth_year_mismatch"],
        &|e| {
            let p = pat(e);
            let year: i32 = p
                .birth_date
                .as_ref()
                .map(|d| d.value[..4].parse().unwrap_or(1980))
                .unwrap_or(1980);
            p.birth_date = Some(pb::PartialDateTime {
                value: format!("{:04}0101", if year > 1950 { year - 10 } else { year + 10 }),
                precision: pb::DatePrecision::Day as i32,
            });
        },
    );
    referral(
        "citizen ID sex digit disagrees",
        &["citizen_id.sex_mismatch"],
        &|e| {
            let p = pat(e);
            p.sex = if p.sex == pb::Sex::Male as i32 {
                pb::Sex::Female
            } else {
                pb::Sex::Male
            } as i32;
        },
    );
    referral("missing patient name", &["required"], &|e| {
        pat(e).full_name = " ".into()
    });
    referral(
        "receiving equals sending",
        &["referral.same_facility"],
        &|e| {
            let from = slip(e).issuer.clone();
            slip(e).receiving = from;
        },
    );
    referral(
        "discharge before admission",
        &["episode.discharge_before_admission"],
        &|e| {
            let ep = slip(e).episode.get_or_insert_with(Default::default);
            std::mem::swap(&mut ep.admitted_at, &mut ep.discharged_at);
        },
    );
    referral("bad reason code", &["referral.reason"], &|e| {
        slip(e).reason = 0
    });
    referral(
        "discharge type 1 has no referral",
        &["referral.discharge_type"],
        &|e| slip(e).discharge_type = 1,
    );
    referral("bad ICD-10", &["icd10.format"], &|e| {
        slip(e)
            .diagnosis
            .get_or_insert_with(Default::default)
            .main_icd10 = "J1".into()
    });
    referral(
        "bad insurance card level",
        &["insurance_card.benefit_level"],
        &|e| pat(e).insurance_cards[0].number = "DN6790123456789".into(),
    );
    referral(
        "episode dates in the future",
        &["date.future", "date.future"],
        &|e| {
            slip(e)
                .episode
                .get_or_insert_with(Default::default)
                .admitted_at = Some(pb::PartialDateTime {
                value: "21000101".into(),
                precision: 3,
            });
            slip(e)
                .episode
                .get_or_insert_with(Default::default)
                .discharged_at = Some(pb::PartialDateTime {
                value: "21000102".into(),
                precision: 3,
            });
        },
    );
    referral("impossible date", &["xml_date.calendar"], &|e| {
        slip(e).issued_at = Some(pb::PartialDateTime {
            value: "20250231".into(),
            precision: 3,
        })
    });
    referral(
        "unknown facility province",
        &["facility_code.province"],
        &|e| {
            slip(e).receiving = Some(pb::FacilityRef {
                code: "03001".into(),
                name: String::new(),
            })
        },
    );
    referral(
        "published as another facility",
        &["header.source_mismatch"],
        &|e| {
            e.header
                .get_or_insert_with(Default::default)
                .source_facility_code = "01929".into()
        },
    );
    referral(
        "non-deterministic event id",
        &["header.event_id_mismatch"],
        &|e| e.header.get_or_insert_with(Default::default).event_id = "random-id".into(),
    );
    referral(
        "version zero and no action",
        &["header.action", "header.version"],
        &|e| {
            let h = e.header.get_or_insert_with(Default::default);
            h.document_version = 0;
            h.action = 0;
        },
    );
    referral(
        "several required fields missing at once",
        &["required", "required", "required"],
        &|e| {
            let s = slip(e);
            s.clinical_signs.clear();
            s.course_of_illness.clear();
            s.transport.clear();
        },
    );
    referral("missing signing doctor", &["required"], &|e| {
        slip(e).physician = None
    });

    let mut a = g.appointment();
    if let Some(ap) = a.appointment.as_mut() {
        ap.appointment_at = Some(pb::PartialDateTime {
            value: "20000101".into(),
            precision: 3,
        });
    }
    cases.push(InvalidCase {
        name: "appointment before its issue date",
        event: ClinicalEvent::Appointment(a),
        expected: vec!["appointment.before_issue"],
    });
    let mut a = g.appointment();
    if let Some(ap) = a.appointment.as_mut() {
        ap.issued_at = None;
    }
    cases.push(InvalidCase {
        name: "appointment without issue date",
        event: ClinicalEvent::Appointment(a),
        expected: vec!["required"],
    });

    let mut l = g.lab_result();
    if let Some(r) = l.report.as_mut() {
        r.lines[0].result_at = Some(pb::PartialDateTime {
            value: "200001010000".into(),
            precision: 4,
        });
    }
    cases.push(InvalidCase {
        name: "lab result before admission",
        event: ClinicalEvent::LabResult(l),
        expected: vec!["lab.result_before_admission"],
    });
    let mut l = g.lab_result();
    if let Some(r) = l.report.as_mut() {
        r.lines.clear();
    }
    cases.push(InvalidCase {
        name: "lab report without lines",
        event: ClinicalEvent::LabResult(l),
        expected: vec!["lab.no_lines"],
    });
    let mut l = g.lab_result();
    if let Some(r) = l.report.as_mut() {
        r.lines[0].readers.clear();
    }
    cases.push(InvalidCase {
        name: "lab line without reader",
        event: ClinicalEvent::LabResult(l),
        expected: vec!["required"],
    });
    let mut l = g.lab_result();
    if let Some(r) = l.report.as_mut() {
        r.lines[0].value_text = "5.4\0".into();
    }
    cases.push(InvalidCase {
        name: "lab value with a NUL character",
        event: ClinicalEvent::LabResult(l),
        expected: vec!["text.nul"],
    });
    let mut e = g.referral();
    if let Some(s) = e.slip.as_mut() {
        s.clinical_signs.push('\0');
        if let Some(d) = s.diagnosis.as_mut() {
            d.text.push('\0');
        }
    }
    cases.push(InvalidCase {
        name: "clinical signs and diagnosis text with a NUL character",
        event: ClinicalEvent::Referral(e),
        expected: vec!["text.nul", "text.nul"],
    });
    // Ids consistent with the episode, so the control character is the one defect.
    let mut l = g.lab_result();
    let r = l.report.get_or_insert_with(Default::default);
    r.episode_id.push('\0');
    let fac = r
        .facility
        .as_ref()
        .map(|f| f.code.clone())
        .unwrap_or_default();
    let doc = document_id::lab_report(&fac, &r.episode_id, &r.service_code);
    let h = l.header.get_or_insert_with(Default::default);
    h.event_id = document_id::event_id(DocumentKind::LabResult, &doc, h.document_version);
    h.document_id = doc;
    cases.push(InvalidCase {
        name: "episode id (MA_LK) with a control character",
        event: ClinicalEvent::LabResult(l),
        expected: vec!["header.document_id_control", "text.nul"],
    });
    hostile_values(&mut g, &mut cases);
    cases
}

/// Values a sink would store but no clinician or analyst should see: hidden characters,
/// untidy codes, impossible numbers, versions and dates out of every plausible range.
fn hostile_values(g: &mut Generator, cases: &mut Vec<InvalidCase>) {
    let mut referral = |name, expected: &[&'static str], edit: &dyn Fn(&mut pb::ReferralSlip)| {
        let mut e = g.referral();
        edit(e.slip.get_or_insert_with(Default::default));
        cases.push(InvalidCase {
            name,
            event: ClinicalEvent::Referral(e),
            expected: sorted(expected),
        });
    };
    fn pat(s: &mut pb::ReferralSlip) -> &mut pb::Patient {
        s.patient.get_or_insert_with(Default::default)
    }
    fn diag(s: &mut pb::ReferralSlip) -> &mut pb::Diagnosis {
        s.diagnosis.get_or_insert_with(Default::default)
    }
    referral("escape sequence in a name", &["text.control"], &|s| {
        pat(s).full_name.push_str("\u{1b}[2J")
    });
    referral("line break in an address", &["text.control"], &|s| {
        pat(s).address.push_str("\nQuận 1")
    });
    referral(
        "right-to-left override in an address",
        &["text.bidi"],
        &|s| pat(s).address.insert(0, '\u{202E}'),
    );
    referral("zero-width space in a name", &["text.invisible"], &|s| {
        pat(s).full_name.insert(3, '\u{200B}')
    });
    referral(
        "private-use character in an address",
        &["text.private_use"],
        &|s| pat(s).address.push('\u{F8FF}'),
    );
    referral(
        "replacement character in a name",
        &["text.replacement"],
        &|s| pat(s).full_name = "Nguy\u{FFFD}n V\u{FFFD}n A".into(),
    );
    referral("decomposed Vietnamese in a name", &["text.not_nfc"], &|s| {
        pat(s).full_name = "Nguye\u{302}\u{303}n Va\u{306}n A".into()
    });
    referral("line break inside the transport", &["text.control"], &|s| {
        s.transport = "Xe\r\ncứu thương".into()
    });
    referral("ICD-10 in lower case", &["icd10.not_canonical"], &|s| {
        diag(s).main_icd10 = diag(s).main_icd10.to_ascii_lowercase()
    });
    referral(
        "ICD-10 with a space around it",
        &["icd10.not_canonical"],
        &|s| diag(s).secondary_icd10[0].push(' '),
    );
    referral("ICD-10 named twice", &["icd10.repeated"], &|s| {
        let main = diag(s).main_icd10.clone();
        diag(s).secondary_icd10.push(main)
    });
    referral("admission in 1985", &["date.too_early"], &|s| {
        s.episode.get_or_insert_with(Default::default).admitted_at = Some(pb::PartialDateTime {
            value: "19850101".into(),
            precision: pb::DatePrecision::Day as i32,
        })
    });
    referral("slip valid until 2099", &["date.too_far_ahead"], &|s| {
        s.valid_until = Some(pb::PartialDateTime {
            value: "20991231".into(),
            precision: pb::DatePrecision::Day as i32,
        })
    });

    let mut e = g.referral();
    e.header.get_or_insert_with(Default::default).occurred_at = None;
    cases.push(InvalidCase {
        name: "occurred_at missing",
        event: ClinicalEvent::Referral(e),
        expected: vec!["required"],
    });
    let mut e = g.referral();
    e.header.get_or_insert_with(Default::default).occurred_at = Some(prost_types::Timestamp {
        seconds: -62_135_596_800, // 0001-01-01
        nanos: 0,
    });
    cases.push(InvalidCase {
        name: "occurred_at in year 1",
        event: ClinicalEvent::Referral(e),
        expected: vec!["timestamp.too_early"],
    });
    let mut e = g.referral();
    let h = e.header.get_or_insert_with(Default::default);
    h.document_version = u64::MAX;
    h.event_id = document_id::event_id(DocumentKind::Referral, &h.document_id, h.document_version);
    cases.push(InvalidCase {
        name: "document_version beyond what sinks hold",
        event: ClinicalEvent::Referral(e),
        expected: vec!["header.version_too_high"],
    });
    let mut e = g.referral();
    let h = e.header.get_or_insert_with(Default::default);
    h.source_facility_code.push(' ');
    cases.push(InvalidCase {
        name: "source facility code with a trailing space",
        event: ClinicalEvent::Referral(e),
        expected: vec!["code.untrimmed"],
    });

    let mut lab = |name, expected: &[&'static str], edit: &dyn Fn(&mut pb::LabResultLine)| {
        let mut l = g.lab_result();
        if let Some(r) = l.report.as_mut() {
            edit(&mut r.lines[0]);
        }
        cases.push(InvalidCase {
            name,
            event: ClinicalEvent::LabResult(l),
            expected: sorted(expected),
        });
    };
    let numeric = |v: f64| Some(pb::NumericValue { value: v });
    lab("lab value NaN", &["lab.value_out_of_range"], &|l| {
        l.value_numeric = numeric(f64::NAN)
    });
    lab("lab value infinite", &["lab.value_out_of_range"], &|l| {
        l.value_numeric = numeric(f64::INFINITY)
    });
    lab(
        "lab value absurdly large",
        &["lab.value_out_of_range"],
        &|l| l.value_numeric = numeric(1e300),
    );
    lab(
        "lab numeric and text values disagree",
        &["lab.value_mismatch"],
        &|l| {
            l.value_text = "7,5".into();
            l.value_numeric = numeric(2.0)
        },
    );
    lab(
        "lab reference range upside down",
        &["lab.range_inverted"],
        &|l| {
            l.reference_range = Some(pb::ReferenceRange {
                low: Some(10.0),
                high: Some(1.0),
                text: String::new(),
            })
        },
    );
    lab("lab unit with a form feed", &["text.control"], &|l| {
        l.unit = "mmol/L\u{c}".into()
    });
}

fn sorted(codes: &[&'static str]) -> Vec<&'static str> {
    let mut v = codes.to_vec();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{Severity, ValidationContext};

    fn ctx() -> (ValidationContext, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        (
            ValidationContext {
                now,
                future_skew: std::time::Duration::from_secs(600),
            },
            now,
        )
    }

    #[test]
    fn generated_documents_are_valid() {
        let (ctx, now) = ctx();
        let mut g = Generator::new(7, now);
        for i in 0..300 {
            let e = g.any(i);
            let errors: Vec<_> = e
                .validate(&ctx)
                .into_iter()
                .filter(|v| v.severity == Severity::Error)
                .collect();
            assert!(
                errors.is_empty(),
                "fixture {i} ({:?}) invalid: {errors:#?}",
                e.kind()
            );
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            Generator::new(1, now).referral(),
            Generator::new(1, now).referral()
        );
    }

    #[test]
    fn each_invalid_document_yields_exactly_its_codes() {
        let (ctx, now) = ctx();
        for case in invalid_catalogue(now) {
            let mut got: Vec<String> = case
                .event
                .validate(&ctx)
                .into_iter()
                .filter(|v| v.severity == Severity::Error)
                .map(|v| v.code)
                .collect();
            got.sort_unstable();
            assert_eq!(got, case.expected, "case {:?}", case.name);
        }
    }

    #[test]
    fn personal_values_are_masked_in_reports() {
        let (ctx, now) = ctx();
        let case = invalid_catalogue(now)
            .into_iter()
            .find(|c| c.name == "citizen ID too short")
            .expect("case");
        let v = case
            .event
            .validate(&ctx)
            .into_iter()
            .find(|v| v.code == "citizen_id.length")
            .expect("violation");
        assert_eq!(v.value.as_deref(), Some("*********23"));
        assert!(!v.message_vi.is_empty() && !v.message.contains("07920300123"));
    }

    #[test]
    fn violations_name_the_nested_field_they_are_about() {
        let (ctx, now) = ctx();
        let mut g = Generator::new(4, now);
        let paths = |e: ClinicalEvent| -> Vec<String> {
            let mut p: Vec<String> = e.validate(&ctx).into_iter().map(|v| v.path).collect();
            p.sort_unstable();
            p
        };
        let mut referral = g.referral();
        if let Some(s) = referral.slip.as_mut() {
            s.sending[0].code = "7".into();
            if let Some(p) = s.patient.as_mut() {
                p.insurance_cards[0].number = "X".into();
                p.full_name.clear();
            }
            if let Some(ph) = s.physician.as_mut() {
                ph.raw.clear();
                ph.licence_number.clear();
            }
        }
        assert_eq!(
            paths(ClinicalEvent::Referral(referral)),
            [
                "slip.patient.full_name",
                "slip.patient.insurance_cards[0].number",
                "slip.physician.licence_number",
                "slip.sending[0].code",
            ]
        );
        let mut lab = g.lab_result();
        if let Some(r) = lab.report.as_mut() {
            r.lines[0].readers[0].raw = "?".into();
            r.lines[0].readers[0].licence_number = "?".into();
            r.lines[0].value_text = "x".repeat(300);
        }
        assert_eq!(
            paths(ClinicalEvent::LabResult(lab)),
            [
                "report.lines[0].readers[0].licence_number",
                "report.lines[0].value_text",
            ]
        );
    }

    #[test]
    fn a_lapsed_card_is_a_warning_not_an_error() {
        let (ctx, now) = ctx();
        let mut e = Generator::new(3, now).referral();
        if let Some(p) = e.slip.as_mut().and_then(|s| s.patient.as_mut()) {
            p.insurance_cards[0].valid_to = Some(pb::PartialDateTime {
                value: "20000101".into(),
                precision: 3,
            });
        }
        let v = ClinicalEvent::Referral(e).validate(&ctx);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(
            (v[0].code.as_str(), v[0].severity),
            ("insurance_card.validity", Severity::Warning)
        );
    }
}
