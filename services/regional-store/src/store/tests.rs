//! The store against its contract: versions, receipts, lists, lab reports, bundles and
//! their compaction, offsets, reopening.

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

/// (document id, version) of every document, and each read by its id.
fn read_back(s: &RegionStore) -> Vec<(String, u64)> {
    let versions = s.versions().expect("versions");
    for (id, v) in &versions {
        let doc = s.get(id).expect("get").expect("found by id");
        assert_eq!(doc.event.header().expect("h").document_version, *v);
    }
    versions
}

/// Closes `s` (flushed), opens the store in `dir` again and checks it reads `versions`.
fn reads_back_when_reopened(dir: &std::path::Path, s: RegionStore, versions: &[(String, u64)]) {
    futures::executor::block_on(s.flush()).expect("flush");
    drop(s);
    let s = RegionStore::open(dir).expect("reopen");
    assert_eq!(read_back(&s), versions);
}

#[test]
fn bundles_of_dead_records_are_compacted_while_reads_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = RegionStore::open(dir.path()).expect("open");
    let mut g = Generator::new(15, time::OffsetDateTime::now_utc());
    let firsts: Vec<_> = (0..SLED_BATCH * 3)
        .map(|i| keyed(g.any(i), &format!("p{}", i % 17)))
        .collect();
    let ids: Vec<String> = firsts
        .iter()
        .map(|e| e.header().expect("h").document_id.clone())
        .collect();
    let mut messages: Vec<Change> = firsts.iter().cloned().map(Change::event).collect();
    // Six more versions of every document, some moved to another patient.
    for v in 2..8 {
        for (i, e) in firsts.iter().enumerate() {
            let next = version(e, v, pb::Action::Updated);
            let next = if i % 5 == 0 && v % 2 == 0 {
                keyed(next, &format!("moved{v}"))
            } else {
                next
            };
            messages.push(Change::event(next));
        }
    }
    let positioned: Vec<_> = messages
        .into_iter()
        .enumerate()
        .map(|(i, c)| ("t".to_owned(), 0, i as i64, c))
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in ids.iter().step_by(7) {
                    // Found once the first versions are stored, and never an error.
                    let doc = s.get(id).expect("a read during compaction");
                    n += usize::from(doc.is_some());
                }
            }
            n
        });
        for chunk in positioned.chunks(SLED_BATCH) {
            s.apply_batch(chunk).expect("apply");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("reader")
    });
    assert!(reads > 0);
    let versions = read_back(&s);
    assert_eq!(versions.len(), firsts.len());
    assert!(versions.iter().all(|(_, v)| *v == 7), "{versions:?}");
    let bundles = s.tree.scan_prefix([BUNDLES]).count();
    assert_eq!(bundles, s.bundles());
    assert!(
        bundles <= 2 * firsts.len().div_ceil(SLED_BATCH) + 2,
        "{bundles} bundles after 21 sled batches of documents: the dead ones compacted"
    );
    reads_back_when_reopened(dir.path(), s, &versions);
}

#[test]
fn a_bundle_left_by_a_compaction_cut_short_is_dead_at_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut g = Generator::new(16, time::OffsetDateTime::now_utc());
    let v1 = keyed(g.any(0), "p");
    let v2 = keyed(version(&v1, 2, pb::Action::Updated), "q");
    let id = v1.header().expect("h").document_id.clone();
    let (first, bytes) = {
        let s = RegionStore::open(dir.path()).expect("open");
        s.apply_batch(&[("t".into(), 0, 0, Change::event(v1))])
            .expect("apply");
        let (k, bytes) = s
            .tree
            .scan_prefix([BUNDLES])
            .next()
            .expect("a bundle")
            .expect("read");
        s.apply_batch(&[("t".into(), 0, 1, Change::event(v2.clone()))])
            .expect("apply");
        assert!(s.tree.get(&k).expect("get").is_none(), "compacted away");
        // As if the compaction's batch had not landed: the old bundle is back.
        s.tree.insert(&k, bytes.clone()).expect("insert");
        futures::executor::block_on(s.flush()).expect("flush");
        (k, bytes)
    };
    let s = RegionStore::open(dir.path()).expect("reopen");
    assert_eq!(s.get(&id).expect("get").expect("doc").event, v2);
    assert_eq!(s.len(), 1);
    assert!(s.patient_documents("p").expect("record").is_empty());
    assert!(
        s.tree.get(&first).expect("get").is_none(),
        "removed at open"
    );
    assert!(!bytes.is_empty());
}

#[test]
fn each_sled_batch_stores_the_positions_it_moved() {
    let (_d, s) = store();
    let mut g = Generator::new(8, time::OffsetDateTime::now_utc());
    // A sled batch of partition 0 only, then one of partition 1 only.
    let batch: Vec<_> = (0..SLED_BATCH * 2)
        .map(|i| {
            let p = (i / SLED_BATCH) as i32;
            let e = keyed(g.any(i), "p");
            (
                "t".to_owned(),
                p,
                (i % SLED_BATCH) as i64 + 10,
                Change::event(e),
            )
        })
        .collect();
    s.apply_batch(&batch).expect("apply");
    for p in 0..2 {
        assert_eq!(
            s.next_offset("t", p).expect("offset"),
            Some(SLED_BATCH as i64 + 10)
        );
    }
    assert_eq!(
        s.apply_batch(&batch).expect("replay").replayed,
        batch.len() as u64
    );
}

#[test]
fn a_batch_larger_than_one_sled_batch_applies_once_and_replays_as_a_whole() {
    let (_d, s) = store();
    let mut g = Generator::new(5, time::OffsetDateTime::now_utc());
    let n = SLED_BATCH * 2 + SLED_BATCH / 2;
    let batch: Vec<_> = (0..n)
        .map(|i| {
            let e = keyed(g.any(i), &format!("p{}", i % 7));
            (
                "t".to_owned(),
                (i % 2) as i32,
                (i / 2) as i64,
                Change::event(e),
            )
        })
        .collect();
    let a = s.apply_batch(&batch).expect("apply");
    assert_eq!(a.applied + a.stale, n as u64);
    assert_eq!(
        s.next_offset("t", 0).expect("offset"),
        Some(n.div_ceil(2) as i64)
    );
    assert_eq!(s.next_offset("t", 1).expect("offset"), Some((n / 2) as i64));
    let stored = s.len();
    let again = s.apply_batch(&batch).expect("replay");
    assert_eq!(again.replayed, n as u64, "nothing is applied twice");
    // Half of it again plus new messages: only the new ones count.
    let mut more = batch[n / 2..].to_vec();
    let extra = keyed(g.any(n), "p-new");
    more.push((
        "t".to_owned(),
        0,
        n.div_ceil(2) as i64,
        Change::event(extra),
    ));
    let a = s.apply_batch(&more).expect("apply");
    assert_eq!((a.replayed, a.applied), ((n - n / 2) as u64, 1));
    assert_eq!(s.len(), stored + 1);
}

#[test]
fn conflicts_are_reported_together_and_hold_their_partitions_until_skipped() {
    let (_d, s) = store();
    let mut g = Generator::new(61, time::OffsetDateTime::now_utc());
    let v1 = keyed(ClinicalEvent::Referral(g.referral()), "p1");
    let doc = v1.header().expect("h").document_id.clone();
    // A copy stamped at another time by the gateway is the same content: stale, not a conflict.
    let mut copy = v1.clone();
    copy.header_mut().recorded_at = Some(prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    });
    let mut other = v1.clone();
    if let ClinicalEvent::Referral(r) = &mut other
        && let Some(d) = r.slip.as_mut().and_then(|s| s.diagnosis.as_mut())
    {
        d.main_icd10 = "Z99.9".into();
    }
    let after = keyed(ClinicalEvent::Referral(g.referral()), "p2");
    let elsewhere = keyed(ClinicalEvent::Referral(g.referral()), "p3");
    let batch = vec![
        ("t".to_owned(), 0, 0, Change::event(v1.clone())),
        ("t".to_owned(), 0, 1, Change::event(copy)),
        ("t".to_owned(), 0, 2, Change::event(other.clone())),
        ("t".to_owned(), 1, 0, Change::event(elsewhere.clone())),
        ("t".to_owned(), 0, 3, Change::event(after.clone())),
        ("t".to_owned(), 0, 4, Change::event(other.clone())),
    ];
    let a = s.apply_batch(&batch).expect("apply");
    assert_eq!((a.applied, a.stale), (3, 1));
    assert_eq!(
        a.conflicts,
        vec![2, 5],
        "every conflict of the batch, in order"
    );
    assert_eq!(
        s.next_offset("t", 0).expect("offset"),
        Some(2),
        "partition 0 stays before its first conflict"
    );
    assert_eq!(s.next_offset("t", 1).expect("offset"), Some(1));
    let ClinicalEvent::Referral(kept) = s.get(&doc).expect("get").expect("stored").event else {
        panic!("a referral")
    };
    assert_ne!(
        kept.slip.and_then(|s| s.diagnosis).map(|d| d.main_icd10),
        Some("Z99.9".to_owned()),
        "the first content stays"
    );
    for e in [&after, &elsewhere] {
        let id = &e.header().expect("h").document_id;
        assert!(s.get(id).expect("get").is_some(), "{id} is stored");
    }

    // Read again from the held position: the conflicts again, nothing applied twice.
    let again = s.apply_batch(&batch).expect("apply");
    assert_eq!((again.applied, &again.conflicts[..]), (0, &[2, 5][..]));
    let skipped = super::skipping(&batch, &again.conflicts);
    let done = s.apply_batch(&skipped).expect("apply");
    assert_eq!((done.applied, done.conflicts.len()), (0, 0));
    assert_eq!(s.next_offset("t", 0).expect("offset"), Some(5));
    assert_eq!(s.next_offset("t", 1).expect("offset"), Some(1));

    let (_d2, fresh) = store();
    let (total, conflicts) = fresh.apply_skipping_conflicts(&batch).expect("apply");
    assert_eq!((total.applied, conflicts), (3, vec![2, 5]));
    assert_eq!(fresh.next_offset("t", 0).expect("offset"), Some(5));
}

/// Versions, cancellations, moved patients and receipts (before and after their referral) of
/// `count` documents, then `rounds` more versions of each: what makes lists change and
/// bundles go sparse (and so compact).
fn eventful(seed: u64, count: usize, rounds: u64) -> Vec<Change> {
    let mut g = Generator::new(seed, time::OffsetDateTime::now_utc());
    let firsts: Vec<_> = (0..count)
        .map(|i| keyed(g.any(i), &format!("p{}", i % 40)))
        .collect();
    let mut messages = Vec::new();
    for (i, e) in firsts.iter().enumerate() {
        let receipt = Change::receipt(pb::ReferralReceiptEvent {
            referral_document_id: e.header().expect("h").document_id.clone(),
            ..Default::default()
        });
        if i % 11 == 0 {
            messages.push(receipt.clone());
        }
        messages.push(Change::event(e.clone()));
        if i % 7 == 0 {
            messages.push(receipt);
        }
    }
    for v in 2..2 + rounds {
        for (i, e) in firsts.iter().enumerate() {
            let action = if v == 1 + rounds && i % 5 == 1 {
                pb::Action::Cancelled
            } else {
                pb::Action::Updated
            };
            let next = version(e, v, action);
            messages.push(Change::event(if i % 5 == 2 && v % 2 == 0 {
                keyed(next, &format!("moved{v}"))
            } else {
                next
            }));
        }
    }
    messages
}

#[test]
fn a_store_opened_from_its_checkpoint_equals_the_full_replay() {
    let dir = tempfile::tempdir().expect("tmp");
    let positioned: Vec<_> = eventful(21, 500, 4)
        .into_iter()
        .enumerate()
        .map(|(i, c)| ("t".to_owned(), 0, i as i64, c))
        .collect();
    let (before, after) = positioned.split_at(positioned.len() / 3);
    let s = RegionStore::open(dir.path()).expect("open");
    for chunk in before.chunks(SLED_BATCH * 2 + 3) {
        s.apply_batch(chunk).expect("apply");
    }
    assert!(s.checkpoint().expect("checkpoint") > 0);
    // What comes after the checkpoint (new versions, moves, receipts, compactions) is in
    // sled only, as after a kill -9 between two checkpoints.
    for chunk in after.chunks(SLED_BATCH * 2 + 3) {
        s.apply_batch(chunk).expect("apply");
    }
    futures::executor::block_on(s.flush()).expect("flush");
    let (digest, versions, listed) = (
        s.digest().expect("digest"),
        read_back(&s),
        s.listed_documents(),
    );
    assert!(listed > 100, "{listed}");
    drop(s);

    let reopen = || RegionStore::open(dir.path()).expect("reopen");
    let s = reopen();
    assert!(
        matches!(s.opened_from(), OpenedFrom::Checkpoint { replayed } if replayed > 0),
        "{:?}",
        s.opened_from()
    );
    assert_eq!(s.digest().expect("digest"), digest);
    assert_eq!(read_back(&s), versions);
    assert_eq!(s.bundles(), s.tree.scan_prefix([BUNDLES]).count());
    // Still a working store: a checkpoint now reopens with nothing to replay.
    s.checkpoint().expect("checkpoint");
    let older = std::fs::read(dir.path().join(checkpoint::FILE)).expect("file");
    drop(s);
    let s = reopen();
    assert_eq!(s.opened_from(), OpenedFrom::Checkpoint { replayed: 0 });
    assert_eq!(s.digest().expect("digest"), digest);
    // A newer checkpoint makes the older file stale.
    s.checkpoint().expect("checkpoint");
    drop(s);
    std::fs::write(dir.path().join(checkpoint::FILE), &older).expect("older back");
    let s = reopen();
    assert!(matches!(s.opened_from(), OpenedFrom::FullReplay { .. }));
    assert_eq!(s.digest().expect("digest"), digest);
    s.checkpoint().expect("checkpoint");
    drop(s);
    // A corrupt file: the full replay, the same store.
    let path = dir.path().join(checkpoint::FILE);
    let mut bytes = std::fs::read(&path).expect("file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).expect("corrupted");
    let s = reopen();
    assert!(matches!(s.opened_from(), OpenedFrom::FullReplay { .. }));
    assert_eq!(s.digest().expect("digest"), digest);
    assert_eq!(read_back(&s), versions);
}

#[test]
fn a_truncated_or_foreign_checkpoint_is_refused_with_its_reason() {
    let (dir, s) = store();
    let mut g = Generator::new(22, time::OffsetDateTime::now_utc());
    let e = keyed(ClinicalEvent::Referral(g.referral()), "p1");
    s.apply_batch(&[("t".to_owned(), 0, 0, Change::event(e))])
        .expect("apply");
    s.checkpoint().expect("checkpoint");
    let path = dir.path().join(checkpoint::FILE);
    let bytes = std::fs::read(&path).expect("file");
    let why = |b: &[u8]| {
        std::fs::write(&path, b).expect("write");
        match checkpoint::load(dir.path(), &s.tree) {
            Err(e) => e.to_string(),
            Ok(_) => String::from("accepted"),
        }
    };
    assert!(why(&bytes[..bytes.len() - 5]).contains("checksum"));
    assert!(why(b"").contains("shorter than its checksum"));
    assert!(why(&[0u8; 40]).contains("checksum"));
    // The right checksum over foreign bytes: refused for what it is, not trusted.
    let mut foreign = b"NOTACKPT".to_vec();
    foreign.extend_from_slice(&[0; 24]);
    let sum = <sha2::Sha256 as sha2::Digest>::digest(&foreign);
    foreign.extend_from_slice(&sum);
    assert!(why(&foreign).contains("not a lienthong checkpoint"));
    std::fs::write(&path, &bytes).expect("restore");
    assert!(
        checkpoint::load(dir.path(), &s.tree)
            .expect("usable")
            .is_some()
    );
}
