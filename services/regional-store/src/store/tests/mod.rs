//! The store against its contract: versions, receipts, lists and lab reports, kept by the
//! writer and derived again at open (durability: bundles, positions, checkpoints).

mod durability;

use super::*;
use lienthong_core::fixtures::Generator;

fn store() -> (tempfile::TempDir, RegionStore) {
    let dir = tempfile::tempdir().expect("tmp");
    let s = RegionStore::open(dir.path()).expect("open");
    (dir, s)
}

fn keyed(mut e: ClinicalEvent, key: &str) -> ClinicalEvent {
    e.header_mut().patient_key = key.into();
    e
}

fn version(e: &ClinicalEvent, v: u64, action: pb::Action) -> ClinicalEvent {
    let mut n = e.clone();
    n.header_mut().document_version = v;
    n.header_mut().action = action as i32;
    n
}

#[test]
fn latest_version_wins_duplicates_and_older_are_noops_cancelled_kept() {
    let (_d, s) = store();
    let mut g = Generator::new(1, time::OffsetDateTime::now_utc());
    let v1 = keyed(ClinicalEvent::Referral(g.referral()), "p1");
    let v2 = version(&v1, 2, pb::Action::Updated);
    let v3 = version(&v1, 3, pb::Action::Cancelled);
    let batch = vec![
        ("t".to_owned(), 0, 0, Change::event(v2.clone())),
        ("t".to_owned(), 0, 1, Change::event(v1.clone())),
        ("t".to_owned(), 0, 2, Change::event(v2.clone())),
    ];
    let a = s.apply_batch(&batch).expect("apply");
    assert_eq!((a.applied, a.stale), (1, 2));
    let again = s.apply_batch(&batch).expect("replay");
    assert_eq!(again.replayed, 3, "a replayed batch applies nothing");
    s.apply_batch(&[("t".to_owned(), 0, 3, Change::event(v3))])
        .expect("apply");
    let doc = s
        .get(&v1.header().expect("h").document_id)
        .expect("get")
        .expect("stored");
    assert_eq!(doc.status, Status::Cancelled);
    assert_eq!(doc.event.header().expect("h").document_version, 3);
    assert_eq!(s.patient_documents("p1").expect("scan").len(), 1);
    assert_eq!(s.next_offset("t", 0).expect("offset"), Some(4));
}

#[test]
fn a_reopened_store_still_knows_its_documents() {
    // The writer skips sled lookups for documents it does not know; after a restart it
    // must know every stored one, or an older version would overwrite a newer one.
    let dir = tempfile::tempdir().expect("tmp");
    let mut g = Generator::new(3, time::OffsetDateTime::now_utc());
    let v1 = keyed(ClinicalEvent::Referral(g.referral()), "p1");
    let v2 = version(&v1, 2, pb::Action::Updated);
    {
        let s = RegionStore::open(dir.path()).expect("open");
        s.apply_batch(&[("t".to_owned(), 0, 0, Change::event(v2.clone()))])
            .expect("apply");
        futures::executor::block_on(s.flush()).expect("flush");
    }
    let s = RegionStore::open(dir.path()).expect("reopen");
    let a = s
        .apply_batch(&[("t".to_owned(), 0, 1, Change::event(v1.clone()))])
        .expect("apply");
    assert_eq!((a.applied, a.stale), (0, 1), "the older version is a no-op");
    let doc = s
        .get(&v1.header().expect("h").document_id)
        .expect("get")
        .expect("stored");
    assert_eq!(doc.event.header().expect("h").document_version, 2);
    assert_eq!(s.patient_documents("p1").expect("scan").len(), 1);
}

#[test]
fn a_receipt_before_or_after_its_referral_marks_it_received() {
    let (_d, s) = store();
    let mut g = Generator::new(2, time::OffsetDateTime::now_utc());
    let r = keyed(ClinicalEvent::Referral(g.referral()), "p");
    let doc = r.header().expect("h").document_id.clone();
    let receipt = pb::ReferralReceiptEvent {
        referral_document_id: doc.clone(),
        ..Default::default()
    };
    s.apply_batch(&[
        ("r".into(), 0, 0, Change::receipt(receipt.clone())),
        ("t".into(), 0, 0, Change::event(r.clone())),
    ])
    .expect("apply");
    assert_eq!(
        s.get(&doc).expect("get").expect("doc").status,
        Status::Received
    );
    let r2 = keyed(ClinicalEvent::Referral(g.referral()), "q");
    let doc2 = r2.header().expect("h").document_id.clone();
    s.apply_batch(&[("t".into(), 0, 1, Change::event(r2))])
        .expect("apply");
    assert_eq!(
        s.get(&doc2).expect("get").expect("doc").status,
        Status::Pending
    );
    let receipt2 = pb::ReferralReceiptEvent {
        referral_document_id: doc2.clone(),
        ..Default::default()
    };
    s.apply_batch(&[("r".into(), 0, 1, Change::receipt(receipt2))])
        .expect("apply");
    assert_eq!(
        s.get(&doc2).expect("get").expect("doc").status,
        Status::Received
    );
}

#[test]
fn a_corrected_patient_moves_the_document() {
    let (_d, s) = store();
    let mut g = Generator::new(4, time::OffsetDateTime::now_utc());
    let v1 = keyed(ClinicalEvent::LabResult(g.lab_result()), "wrong");
    let v2 = keyed(version(&v1, 2, pb::Action::Updated), "right");
    s.apply_batch(&[("t".into(), 0, 0, Change::event(v1.clone()))])
        .expect("apply");
    s.apply_batch(&[("t".into(), 0, 1, Change::event(v2))])
        .expect("apply");
    assert!(s.patient_documents("wrong").expect("scan").is_empty());
    assert_eq!(s.patient_documents("right").expect("scan").len(), 1);
    let id = v1.header().expect("h").document_id.clone();
    assert_eq!(
        s.get(&id)
            .expect("get")
            .expect("doc")
            .event
            .header()
            .expect("h")
            .patient_key,
        "right"
    );
    // The stale version, replayed under the old patient, stays a no-op.
    let a = s
        .apply_batch(&[("t".into(), 0, 2, Change::event(v1))])
        .expect("apply");
    assert_eq!(a.stale, 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s.versions().expect("versions"), vec![(id, 2)]);
}

/// Every entry of a list (page tokens as the API hands them out).
fn listed(s: &RegionStore, index: Index) -> Vec<(Vec<u8>, String)> {
    s.index_scan(index, b"", None, false, &|_| true, 100)
        .expect("scan")
}

#[test]
fn lists_are_rebuilt_from_the_documents_at_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut g = Generator::new(11, time::OffsetDateTime::now_utc());
    let referral = keyed(ClinicalEvent::Referral(g.referral()), "p");
    let cancelled = keyed(ClinicalEvent::Referral(g.referral()), "q");
    let appointment = keyed(ClinicalEvent::Appointment(g.appointment()), "p");
    let lab = keyed(ClinicalEvent::LabResult(g.lab_result()), "p");
    let id = |e: &ClinicalEvent| e.header().expect("h").document_id.clone();
    let receipt = pb::ReferralReceiptEvent {
        referral_document_id: id(&referral),
        ..Default::default()
    };
    let (worklist, appointments) = {
        let s = RegionStore::open(dir.path()).expect("open");
        let batch: Vec<_> = [&referral, &cancelled, &appointment, &lab]
            .into_iter()
            .enumerate()
            .map(|(i, e)| ("t".to_owned(), 0, i as i64, Change::event(e.clone())))
            .collect();
        s.apply_batch(&batch).expect("apply");
        s.apply_batch(&[
            ("r".into(), 0, 0, Change::receipt(receipt)),
            (
                "t".into(),
                0,
                4,
                Change::event(version(&cancelled, 2, pb::Action::Cancelled)),
            ),
        ])
        .expect("apply");
        futures::executor::block_on(s.flush()).expect("flush");
        (listed(&s, Index::Worklist), listed(&s, Index::Appointments))
    };
    let status_of = |entries: &[(Vec<u8>, String)], doc: &str| {
        entries
            .iter()
            .find(|(_, d)| d == doc)
            .map(|(k, _)| k.split(|b| *b == 0).nth(1).expect("status")[0])
    };
    assert_eq!(worklist.len(), 2, "{worklist:?}");
    assert_eq!(
        status_of(&worklist, &id(&referral)),
        Some(Status::Received as u8),
        "the receipt moved the referral in its worklist"
    );
    assert_eq!(
        status_of(&worklist, &id(&cancelled)),
        Some(Status::Cancelled as u8)
    );
    assert_eq!(appointments.len(), 1);
    assert_eq!(appointments[0].1, id(&appointment));
    let s = RegionStore::open(dir.path()).expect("reopen");
    assert_eq!(listed(&s, Index::Worklist), worklist);
    assert_eq!(listed(&s, Index::Appointments), appointments);
    assert_eq!(s.listed_documents(), 3);
}

#[test]
fn lists_kept_by_the_writer_equal_lists_rebuilt_from_the_documents() {
    // New versions, cancellations, corrected patients and receipts (before and after their
    // referral), in batches of several sled batches: whatever the writer did to the lists
    // in memory must be what a restart derives from the stored documents.
    let dir = tempfile::tempdir().expect("tmp");
    let mut g = Generator::new(12, time::OffsetDateTime::now_utc());
    let firsts: Vec<_> = (0..600)
        .map(|i| keyed(g.any(i), &format!("p{}", i % 40)))
        .collect();
    let mut messages = Vec::new();
    for (i, e) in firsts.iter().enumerate() {
        let id = e.header().expect("h").document_id.clone();
        let receipt = Change::receipt(pb::ReferralReceiptEvent {
            referral_document_id: id,
            ..Default::default()
        });
        if i % 11 == 0 {
            messages.push(receipt.clone());
        }
        messages.push(Change::event(e.clone()));
        match i % 5 {
            0 => messages.push(Change::event(version(e, 2, pb::Action::Updated))),
            1 => messages.push(Change::event(version(e, 3, pb::Action::Cancelled))),
            2 => messages.push(Change::event(keyed(
                version(e, 2, pb::Action::Updated),
                "moved",
            ))),
            _ => {}
        }
        if i % 7 == 0 {
            messages.push(receipt);
        }
    }
    let s = RegionStore::open(dir.path()).expect("open");
    let positioned: Vec<_> = messages
        .into_iter()
        .enumerate()
        .map(|(i, c)| ("t".to_owned(), 0, i as i64, c))
        .collect();
    for chunk in positioned.chunks(SLED_BATCH * 3 + 7) {
        s.apply_batch(chunk).expect("apply");
    }
    futures::executor::block_on(s.flush()).expect("flush");
    let kept = (
        listed_all(&s, Index::Worklist),
        listed_all(&s, Index::Appointments),
    );
    assert!(
        kept.0.len() > 100 && kept.1.len() > 100,
        "{} {}",
        kept.0.len(),
        kept.1.len()
    );
    let statuses: HashSet<u8> = kept
        .0
        .iter()
        .map(|k| k[k.iter().position(|b| *b == 0).expect("sep") + 1])
        .collect();
    assert_eq!(
        statuses.len(),
        3,
        "pending, received and cancelled referrals are listed"
    );
    drop(s);
    let s = RegionStore::open(dir.path()).expect("reopen");
    assert_eq!(
        (
            listed_all(&s, Index::Worklist),
            listed_all(&s, Index::Appointments)
        ),
        kept
    );
}

/// Every entry of a list, however long.
fn listed_all(s: &RegionStore, index: Index) -> Vec<Vec<u8>> {
    s.index_scan(index, b"", None, false, &|_| true, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn lab(g: &mut Generator, patient: &str, service: &str, at: &str) -> ClinicalEvent {
    let mut e = g.lab_result();
    let r = e.report.as_mut().expect("report");
    r.service_code = service.into();
    for l in &mut r.lines {
        l.result_at = Some(pb::PartialDateTime {
            value: at.into(),
            precision: pb::DatePrecision::Minute as i32,
        });
    }
    keyed(ClinicalEvent::LabResult(e), patient)
}

/// (service, time) of each lab index entry of `patient`, newest first as the API reads.
fn lab_entries(s: &RegionStore, patient: &str) -> Vec<(String, String)> {
    s.index_scan(
        Index::Labs,
        &key(&[patient.as_bytes(), b""]),
        None,
        true,
        &|_| true,
        100,
    )
    .expect("scan")
    .into_iter()
    .map(|(k, _)| {
        let parts: Vec<_> = k.split(|b| *b == 0).collect();
        assert_eq!(
            parts[0],
            patient.as_bytes(),
            "index keys start with the patient"
        );
        (
            String::from_utf8_lossy(parts[1]).into_owned(),
            String::from_utf8_lossy(parts[2]).into_owned(),
        )
    })
    .collect()
}

#[test]
fn lab_reports_are_their_own_index_by_patient_service_and_time() {
    let (_d, s) = store();
    let mut g = Generator::new(6, time::OffsetDateTime::now_utc());
    let older = lab(&mut g, "p", "HbA1c", "202611010800");
    let newer = lab(&mut g, "p", "HbA1c", "202611200800");
    let other = lab(&mut g, "p", "CRE", "202611150800");
    let referral = keyed(ClinicalEvent::Referral(g.referral()), "p");
    let elsewhere = lab(&mut g, "q", "HbA1c", "202611210800");
    let batch: Vec<_> = [&older, &newer, &other, &referral, &elsewhere]
        .into_iter()
        .enumerate()
        .map(|(i, e)| ("t".to_owned(), 0, i as i64, Change::event(e.clone())))
        .collect();
    s.apply_batch(&batch).expect("apply");
    assert_eq!(
        lab_entries(&s, "p"),
        [
            ("HbA1c".into(), "202611200800".into()),
            ("HbA1c".into(), "202611010800".into()),
            ("CRE".into(), "202611150800".into()),
        ],
        "the patient's reports only, by service then newest first"
    );
    assert_eq!(s.patient_documents("p").expect("scan").len(), 4);
    assert_eq!(s.len(), 5);
    for e in [&older, &newer, &other, &referral, &elsewhere] {
        let id = &e.header().expect("h").document_id;
        assert_eq!(s.get(id).expect("get").expect("found").event, *e);
    }
    // What the lab index lists is read at its entry.
    for (entry, id) in s
        .index_scan(Index::Labs, b"p\0", None, true, &|_| true, 10)
        .expect("scan")
    {
        let d = s
            .listed(Index::Labs, &entry, &id)
            .expect("read")
            .expect("listed");
        assert_eq!(d.event.header().expect("h").document_id, id);
    }
    // Pages continue after the last key of the previous page.
    let first = s
        .index_scan(Index::Labs, b"p\0", None, true, &|_| true, 1)
        .expect("page");
    let rest = s
        .index_scan(Index::Labs, b"p\0", Some(&first[0].0), true, &|_| true, 10)
        .expect("page");
    assert_eq!((first.len(), rest.len()), (1, 2));
    assert!(rest.iter().all(|(k, _)| *k < first[0].0));
}

#[test]
fn a_lab_report_corrected_to_another_service_or_time_moves_in_one_batch_or_two() {
    let (_d, s) = store();
    let mut g = Generator::new(7, time::OffsetDateTime::now_utc());
    let v1 = lab(&mut g, "p", "GLU", "202611010800");
    let id = v1.header().expect("h").document_id.clone();
    let mut v2 = version(&v1, 2, pb::Action::Updated);
    if let ClinicalEvent::LabResult(e) = &mut v2 {
        e.report.as_mut().expect("report").service_code = "HbA1c".into();
    }
    let mut v3 = version(&v2, 3, pb::Action::Updated);
    if let ClinicalEvent::LabResult(e) = &mut v3 {
        for l in &mut e.report.as_mut().expect("report").lines {
            l.result_at.as_mut().expect("at").value = "202611020900".into();
        }
    }
    // v1 and v2 in one batch: the second finds the first among the batch's own writes.
    let a = s
        .apply_batch(&[
            ("t".into(), 0, 0, Change::event(v1.clone())),
            ("t".into(), 0, 1, Change::event(v2)),
        ])
        .expect("apply");
    assert_eq!(a.applied, 2);
    assert_eq!(
        lab_entries(&s, "p"),
        [("HbA1c".into(), "202611010800".into())]
    );
    let v4 = version(&v3, 4, pb::Action::Cancelled);
    s.apply_batch(&[("t".into(), 0, 2, Change::event(v3))])
        .expect("apply");
    assert_eq!(
        lab_entries(&s, "p"),
        [("HbA1c".into(), "202611020900".into())]
    );
    let stale = s
        .apply_batch(&[("t".into(), 0, 3, Change::event(v1))])
        .expect("apply");
    assert_eq!(
        stale.stale, 1,
        "an older version stays a no-op after the move"
    );
    assert_eq!(s.versions().expect("versions"), vec![(id.clone(), 3)]);
    // A version at the same key replaces it in place.
    s.apply_batch(&[("t".into(), 0, 4, Change::event(v4))])
        .expect("apply");
    assert_eq!(
        lab_entries(&s, "p"),
        [("HbA1c".into(), "202611020900".into())]
    );
    assert_eq!(s.versions().expect("versions"), vec![(id.clone(), 4)]);
    assert_eq!(
        s.get(&id).expect("get").expect("doc").status,
        Status::Cancelled
    );
}

#[test]
fn a_relisted_entry_is_the_entry_of_the_new_status() {
    let mut g = Generator::new(13, time::OffsetDateTime::now_utc());
    let referral = keyed(ClinicalEvent::Referral(g.referral()), "p");
    let mut unaddressed = g.referral();
    unaddressed.slip.as_mut().expect("slip").receiving = None;
    let unaddressed = keyed(ClinicalEvent::Referral(unaddressed), "p");
    for e in [&referral, &unaddressed] {
        let pending = list_entry(e, Status::Pending).expect("listed");
        assert_eq!(
            relisted(&pending, Status::Received),
            list_entry(e, Status::Received).expect("listed")
        );
    }
    let appointment = keyed(ClinicalEvent::Appointment(g.appointment()), "p");
    let entry = list_entry(&appointment, Status::Pending).expect("listed");
    assert_eq!(
        relisted(&entry, Status::Received),
        entry,
        "appointments carry no status"
    );
}

#[test]
fn a_status_change_keeps_the_stored_body() {
    let mut g = Generator::new(10, time::OffsetDateTime::now_utc());
    let e = keyed(ClinicalEvent::Referral(g.referral()), "p");
    let body = e.encode_to_vec();
    let pending = doc_value(&e, Status::Pending, &body);
    let received = with_status(&pending, Status::Received);
    assert_eq!(&received[10..], body.as_slice());
    let doc = decode_doc(&received).expect("decode");
    assert_eq!((doc.status, doc.event), (Status::Received, e));
}

#[test]
fn a_consumed_event_is_stored_as_it_came_and_reads_back_whole() {
    let (_d, s) = store();
    let mut g = Generator::new(9, time::OffsetDateTime::now_utc());
    let e = keyed(ClinicalEvent::Appointment(g.appointment()), "p");
    let body = e.encode_to_vec();
    s.apply_batch(&[("t".into(), 0, 0, Change::consumed(e.clone(), &body))])
        .expect("apply");
    let k = filing_key(&e);
    let stored = s.documents.value(&k).expect("get").expect("stored");
    assert_eq!(
        &stored[10..],
        body.as_slice(),
        "the consumed bytes, not re-encoded"
    );
    let id = &e.header().expect("h").document_id;
    assert_eq!(s.get(id).expect("get").expect("doc").event, e);
}
