//! The store's durability: bundles and their compaction, the positions each sled batch stores,
//! batches replayed whole, conflicts that hold their partitions, and checkpoints.

use super::*;

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
