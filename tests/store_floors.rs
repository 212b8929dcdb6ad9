//! Version floors through a store's insert, remove and floor: exact per key for the
//! last `EXACT_FLOORS` keys written, then spilled into a slot shared by the keys whose
//! hash has the same low bits. The store model (tests/store_model.rs) never writes
//! that many keys, so the spill is checked here, with hashes chosen to share a slot.

use peercache::store::{EXACT_FLOORS, Entry, Lru, Policy, Rejected, VERSION_FLOORS};

const SLOTS: u64 = VERSION_FLOORS as u64;

fn store() -> Lru {
    Lru::new(1 << 20)
}

/// A fill of the key hashing to `hash`, stamped `version` (the floor it read).
fn fill(s: &mut Lru, hash: u64, version: u64) -> Result<(), Rejected> {
    s.insert(hash, &format!("key{hash}"), Entry::new("v", version), None)
}

/// A write (here a remove) of the key hashing to `hash` at `version`.
fn write(s: &mut Lru, hash: u64, version: u64) {
    s.remove(hash, &format!("key{hash}"), version);
}

#[test]
fn a_write_raises_only_its_own_keys_floor_while_the_floor_is_exact() {
    let mut s = store();
    let (key, mate) = (5, 5 + SLOTS);
    write(&mut s, key, 7);
    assert_eq!(s.floor(key), 7);
    assert_eq!(fill(&mut s, key, 6), Err(Rejected::Stale));
    assert_eq!(
        s.floor(mate),
        0,
        "a key of the same slot keeps its own floor"
    );
    assert_eq!(fill(&mut s, mate, 0), Ok(()));
}

#[test]
fn the_oldest_exact_floor_spills_into_its_slot_only_after_exact_floors_newer_keys() {
    let mut s = store();
    let (first, mate) = (5, 5 + SLOTS);
    write(&mut s, first, 9);
    // EXACT_FLOORS - 1 more keys, all in slot 7: the first key's floor is still exact.
    for i in 1..EXACT_FLOORS as u64 {
        write(&mut s, 7 + i * SLOTS, 1);
    }
    assert_eq!(
        s.floor(mate),
        0,
        "the last EXACT_FLOORS keys keep exact floors"
    );
    // One more key: the first key's floor spills into its slot, shared by its keys.
    write(&mut s, 7 + EXACT_FLOORS as u64 * SLOTS, 1);
    assert_eq!(s.floor(first), 9, "a spilled floor still holds for its key");
    assert_eq!(s.floor(mate), 9, "and for every key of its slot");
    assert_eq!(fill(&mut s, mate, 8), Err(Rejected::Stale));
    assert_eq!(s.floor(7 + SLOTS), 1, "the newer keys' floors stay exact");
    // Keys of the other slots are not held back by the spill.
    for hash in [0, 1, 4, 6, 9, SLOTS - 1, SLOTS + 3, 3 * SLOTS + 1000] {
        assert_eq!(s.floor(hash), 0, "hash {hash}");
        assert_eq!(fill(&mut s, hash, 0), Ok(()), "hash {hash}");
    }
}

#[test]
fn a_spilled_slot_keeps_the_newest_of_its_keys_floors() {
    let mut s = store();
    // Two keys of slot 3, then EXACT_FLOORS keys of slot 8 push both out of the exact set.
    write(&mut s, 3, 20);
    write(&mut s, 3 + SLOTS, 10);
    for i in 0..EXACT_FLOORS as u64 {
        write(&mut s, 8 + i * SLOTS, 1);
    }
    assert_eq!(s.floor(3 + 2 * SLOTS), 20, "the higher of the two floors");
    assert_eq!(fill(&mut s, 3 + SLOTS, 19), Err(Rejected::Stale));
    assert_eq!(
        fill(&mut s, 3 + SLOTS, 20),
        Ok(()),
        "a fill at the floor is taken"
    );
}
