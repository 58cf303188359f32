//! The packed map against a BTreeMap: the same entries, ranges and edits.

use super::*;

impl Packed for u32 {
    fn pack(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(*self));
    }

    fn unpack(bytes: &[u8], at: &mut usize) -> Option<Self> {
        u32::try_from(take_varint(bytes, at)?).ok()
    }
}

fn key(n: u32) -> Vec<u8> {
    // Long shared prefixes, as the store's keys have, and lengths that vary.
    format!("P{:064}\0doc-{}", n / 4, n * 7919 % 100_003).into_bytes()
}

fn bound(b: Bound<&Vec<u8>>) -> Bound<&[u8]> {
    b.map(Vec::as_slice)
}

/// Compares every read of `map` with a `BTreeMap` holding the same.
fn check(map: &PackedMap<u32>, model: &BTreeMap<Vec<u8>, u32>) {
    assert_eq!(map.len(), model.len());
    let all: Vec<_> = map.iter().collect();
    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(all, expected);
    let keys: Vec<_> = model.keys().collect();
    for probe in keys.iter().step_by(17).take(40) {
        let bounds = [
            (Bound::Included(*probe), Bound::Unbounded),
            (Bound::Excluded(*probe), Bound::Unbounded),
            (Bound::Unbounded, Bound::Excluded(*probe)),
            (Bound::Unbounded, Bound::Included(*probe)),
            (Bound::Included(*probe), Bound::Included(*probe)),
        ];
        for (lo, hi) in bounds {
            let got: Vec<_> = map.range(bound(lo), bound(hi)).collect();
            let want: Vec<_> = model
                .range::<Vec<u8>, _>((lo, hi))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            assert_eq!(got, want);
            let got: Vec<_> = map.range_rev(bound(lo), bound(hi)).collect();
            let want: Vec<_> = want.into_iter().rev().collect();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn varints_read_back_and_a_cut_one_is_refused() {
    let mut out = Vec::new();
    for n in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
        out.clear();
        put_varint(&mut out, n);
        let mut at = 0;
        assert_eq!(take_varint(&out, &mut at), Some(n));
        assert_eq!(at, out.len());
    }
    let mut at = 0;
    assert_eq!(take_varint(&[0x80, 0x80], &mut at), None);
    let mut at = 0;
    assert_eq!(take_varint(&[0xff; 11], &mut at), None);
}

#[test]
fn inserts_and_removes_in_any_order_read_as_a_btreemap_does() {
    let (mut map, mut model) = (PackedMap::default(), BTreeMap::new());
    // A spread of keys inserted out of order, some twice, so blocks split.
    for i in 0..3000u32 {
        let n = i.wrapping_mul(2_654_435_761) % 1500;
        assert_eq!(map.insert(&key(n), i), model.insert(key(n), i));
    }
    check(&map, &model);
    assert!(map.blocks.len() > 1500 / MAX_ENTRIES, "blocks split");
    // A key below every block.
    assert_eq!(map.insert(b"A", 1), None);
    model.insert(b"A".to_vec(), 1);
    check(&map, &model);
    // Removals, so blocks shrink, merge and empty.
    for i in 0..1400u32 {
        let n = i.wrapping_mul(40_503) % 1500;
        assert_eq!(map.remove(&key(n)), model.remove(&key(n)));
    }
    assert_eq!(map.remove(b"absent"), None);
    check(&map, &model);
    for (k, _) in model.clone() {
        map.remove(&k);
    }
    assert!(map.is_empty());
    assert_eq!(map.blocks.len(), 0);
    assert_eq!(map.get(&key(1)), None);
    assert_eq!(map.iter().count(), 0);
}

#[test]
fn a_map_built_in_bulk_reads_and_changes_as_one_built_by_inserts() {
    let model: BTreeMap<Vec<u8>, u32> = (0..1000).map(|n| (key(n), n)).collect();
    let mut b = Builder::default();
    for (k, v) in &model {
        b.push(k, *v).expect("ascending");
    }
    let mut map = b.finish();
    check(&map, &model);
    for (k, v) in &model {
        assert_eq!(map.get(k), Some(*v));
    }
    let mut model = model;
    map.insert(&key(5000), 1);
    model.insert(key(5000), 1);
    map.remove(&key(3));
    model.remove(&key(3));
    check(&map, &model);
    // Front coding keeps a key's shared bytes once.
    let raw: usize = model.keys().map(Vec::len).sum();
    assert!(
        map.packed_bytes() * 2 < raw,
        "{} of {raw}",
        map.packed_bytes()
    );
}

#[test]
fn a_copy_is_a_snapshot_that_later_edits_of_either_leave_alone() {
    let mut map = PackedMap::default();
    let mut model = BTreeMap::new();
    for n in 0..500u32 {
        map.insert(&key(n), n);
        model.insert(key(n), n);
    }
    let snapshot = map.clone();
    let taken = model.clone();
    // Blocks are shared, not copied, and one edit makes a new block of its own.
    let shared = |a: &PackedMap<u32>, b: &PackedMap<u32>| {
        a.blocks
            .values()
            .zip(b.blocks.values())
            .filter(|(x, y)| Arc::ptr_eq(&x.bytes, &y.bytes))
            .count()
    };
    assert_eq!(shared(&map, &snapshot), snapshot.blocks.len());
    map.insert(&key(250), 1);
    model.insert(key(250), 1);
    assert_eq!(shared(&map, &snapshot), snapshot.blocks.len() - 1);
    for n in (0..500u32).step_by(3) {
        map.remove(&key(n));
        model.remove(&key(n));
    }
    for n in 500..700u32 {
        map.insert(&key(n), n);
        model.insert(key(n), n);
    }
    check(&map, &model);
    check(&snapshot, &taken);
}

#[test]
fn a_builder_refuses_keys_out_of_order_or_repeated() {
    let mut b = Builder::default();
    b.push(b"b", ()).expect("first");
    assert!(b.push(b"a", ()).is_err());
    assert!(b.push(b"b", ()).is_err());
    b.push(b"c", ()).expect("above");
    let map = b.finish();
    assert_eq!(map.len(), 2);
    assert_eq!(Builder::<()>::default().finish().len(), 0);
}
