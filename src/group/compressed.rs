//! Values kept compressed in memory: a [`Store`] in front of another that compresses
//! what goes in and decompresses what comes out, so the store under it holds, and
//! charges its byte budget for, the compressed bytes (more entries in the same
//! capacity). A group with `--compress` puts its main and hot caches behind one; with
//! `--compress-wire-only` it keeps values as they are and compresses only what it sends
//! to peers that accept the codec ([`Compression::encode`]).
//!
//! Every stored value starts with one byte: 0 for a value kept as it is (shorter than
//! the threshold, or one the codec does not shrink), else the codec's wire number
//! (proto `Codec`) of the compressed bytes that follow. A value that fails to
//! decompress (which this node's own compression never produces) is dropped and
//! counted, never served.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::decoded::Decoded;
use super::stats::Counters;
use crate::codec::Codec;
use crate::store::{Entry, Hit, Rejected, Stats, Store};
use crate::time;

/// The first byte of a value kept as it is.
const RAW: u8 = 0;

/// How a group compresses the values it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The codec of values at least `min` bytes long.
    pub codec: Codec,
    /// Shorter values are kept as they are.
    pub min: usize,
    /// Values are kept as they are in memory and compressed only when answered to a
    /// peer that accepts the codec (less CPU on hits, no more entries in memory).
    pub wire_only: bool,
    /// Bytes of decoded values kept beside the compressed ones (decoded.rs), so a hot
    /// key is not decompressed on every hit; `None`: a sixteenth of the group's
    /// capacity, 0: none.
    pub decoded: Option<u64>,
}

impl Compression {
    /// Values of at least `min` bytes kept compressed in `codec`.
    pub fn new(codec: Codec, min: usize) -> Self {
        Compression {
            codec,
            min,
            wire_only: false,
            decoded: None,
        }
    }

    /// `value` compressed, if it is long enough and shrinks; the time it took counted.
    pub(super) fn encode(&self, value: &[u8], counters: &Counters) -> Option<Vec<u8>> {
        if value.len() < self.min {
            return None;
        }
        let started = time::now();
        let packed = self.codec.encode(value);
        count_time(&counters.compress_micros, started.elapsed());
        packed
    }
}

/// The default threshold: shorter values gain little and cost a codec call per hit.
pub const DEFAULT_COMPRESS_MIN: usize = 1024;

/// A store whose values are compressed in `inner`.
pub(super) struct Compressed {
    inner: Box<dyn Store>,
    how: Compression,
    /// Longest value a stored one may decompress to: the group's value limit.
    max_value: usize,
    counters: Arc<Counters>,
    /// Decoded values of hot entries, shared by the group's main and hot caches.
    decoded: Option<Arc<Decoded>>,
}

impl Compressed {
    pub(super) fn new(
        inner: Box<dyn Store>,
        how: Compression,
        max_value: usize,
        counters: Arc<Counters>,
        decoded: Option<Arc<Decoded>>,
    ) -> Self {
        Compressed {
            inner,
            how,
            max_value,
            counters,
            decoded,
        }
    }

    /// `value` as stored: its header byte, then the compressed or the raw bytes.
    fn pack(&self, value: &[u8]) -> Bytes {
        match self.how.encode(value, &self.counters) {
            Some(packed) => self.frame(self.how.codec.wire() as u8, &packed, value.len()),
            None => self.frame(RAW, value, value.len()),
        }
    }

    /// `body` behind header byte `tag`, counted as stored for a value of `raw` bytes.
    fn frame(&self, tag: u8, body: &[u8], raw: usize) -> Bytes {
        let mut stored = BytesMut::with_capacity(1 + body.len());
        stored.put_u8(tag);
        stored.put_slice(body);
        self.counters.raw_bytes_in.fetch_add(raw as u64, Relaxed);
        self.counters
            .stored_bytes_in
            .fetch_add(stored.len() as u64, Relaxed);
        stored.freeze()
    }

    /// The decoded value of `stored`, `key`'s frame: from the cache of decoded values
    /// when it holds this frame's, else decompressed (and kept there).
    fn decode_hit(&self, key: &str, mut hit: Hit) -> Option<Hit> {
        let Some(decoded) = &self.decoded else {
            return self.unpack_hit(key, hit);
        };
        if let Some(value) = decoded.get(key, &hit.value) {
            self.counters.decoded_hits.fetch_add(1, Relaxed);
            hit.value = value;
            return Some(hit);
        }
        let frame = hit.value.clone();
        let hit = self.unpack_hit(key, hit)?;
        decoded.insert(key, frame, hit.value.clone());
        Some(hit)
    }

    /// Frees what the cache of decoded values holds for `key`, which was written.
    fn forget(&self, key: &str) {
        if let Some(decoded) = &self.decoded {
            decoded.forget(key);
        }
    }

    /// The value `stored` holds; `None` if it is not one this store wrote.
    fn unpack(&self, stored: &Bytes) -> Option<Bytes> {
        let (&tag, _) = stored.split_first()?;
        if tag == RAW {
            return Some(stored.slice(1..));
        }
        let started = time::now();
        let value = (Codec::from_wire(i32::from(tag)).ok())
            .and_then(|codec| codec.decode(&stored[1..], self.max_value).ok());
        count_time(&self.counters.decompress_micros, started.elapsed());
        if value.is_none() {
            self.counters.decode_errors.fetch_add(1, Relaxed);
        }
        value.map(Bytes::from)
    }

    fn unpack_hit(&self, key: &str, mut hit: Hit) -> Option<Hit> {
        match self.unpack(&hit.value) {
            Some(value) => {
                hit.value = value;
                Some(hit)
            }
            None => {
                tracing::error!(key, "a stored value did not decompress; dropped");
                self.inner.purge(key, hit.version);
                None
            }
        }
    }
}

fn count_time(counter: &std::sync::atomic::AtomicU64, took: Duration) {
    counter.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
}

impl Store for Compressed {
    fn get(&self, key: &str, now: Duration) -> Option<Hit> {
        Some(self.get_as(key, now, &[])?.0)
    }

    fn get_as(&self, key: &str, now: Duration, accept: &[Codec]) -> Option<(Hit, Codec)> {
        let mut hit = self.inner.get(key, now)?;
        let kept = match hit.value.first() {
            Some(&RAW) => Some(Codec::Identity),
            Some(&tag) => Codec::from_wire(i32::from(tag)).ok(),
            None => None,
        };
        match kept {
            Some(codec) if codec.accepted_by(accept) => {
                hit.value = hit.value.slice(1..);
                Some((hit, codec))
            }
            // Kept in a codec the reader does not decode (or not one this store wrote).
            _ => self.decode_hit(key, hit).map(|hit| (hit, Codec::Identity)),
        }
    }

    fn insert(&self, key: &str, entry: Entry) -> Result<(), Rejected> {
        self.forget(key);
        let value = self.pack(&entry.value);
        self.inner.insert(key, Entry { value, ..entry })
    }

    fn insert_packed(
        &self,
        key: &str,
        entry: Entry,
        packed: Option<(Codec, &Bytes)>,
    ) -> Result<(), Rejected> {
        match packed {
            // Bytes that decoded to the value already (at whatever level they were made).
            Some((codec, bytes))
                if codec.wire() == self.how.codec.wire() && entry.value.len() >= self.how.min =>
            {
                self.forget(key);
                let value = self.frame(codec.wire() as u8, bytes, entry.value.len());
                self.inner.insert(key, Entry { value, ..entry })
            }
            _ => self.insert(key, entry),
        }
    }

    fn remove(&self, key: &str, version: u64) -> bool {
        self.forget(key);
        self.inner.remove(key, version)
    }

    fn floor(&self, key: &str) -> u64 {
        self.inner.floor(key)
    }

    fn purge(&self, key: &str, version: u64) -> bool {
        self.forget(key);
        self.inner.purge(key, version)
    }

    fn sweep(&self, now: Duration) -> usize {
        self.inner.sweep(now)
    }

    fn retain(&self, keep: &dyn Fn(&str) -> bool) -> usize {
        self.inner.retain(keep)
    }

    fn collect(
        &self,
        pick: &dyn Fn(&str) -> bool,
        now: Duration,
        take: bool,
    ) -> Vec<(Box<str>, Hit)> {
        (self.inner.collect(pick, now, take).into_iter())
            .filter_map(|(key, hit)| {
                let hit = self.unpack_hit(&key, hit)?;
                Some((key, hit))
            })
            .collect()
    }

    fn max_charge(&self) -> u64 {
        self.inner.max_charge()
    }

    fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::{Lru, Sharded};

    fn store(codec: Codec, min: usize) -> (Compressed, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let inner = Box::new(Sharded::new(1 << 20, 1, Lru::new));
        let how = Compression::new(codec, min);
        (
            Compressed::new(inner, how, 1 << 20, counters.clone(), None),
            counters,
        )
    }

    /// `store` with a cache of `decoded` bytes of decoded values.
    fn with_decoded(codec: Codec, min: usize, decoded: u64) -> (Compressed, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let inner = Box::new(Sharded::new(1 << 20, 1, Lru::new));
        let how = Compression::new(codec, min);
        let decoded = Decoded::new(decoded, 1 << 20).map(Arc::new);
        (
            Compressed::new(inner, how, 1 << 20, counters.clone(), decoded),
            counters,
        )
    }

    fn json(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"id\":{i},\"name\":\"user {i}\",\"active\":true}},"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn compressible_values_take_less_of_the_budget_and_read_back_whole() {
        for codec in Codec::ALL {
            let (s, counters) = store(codec, 1024);
            let value = Bytes::from(json(400));
            s.insert("k", Entry::new(value.clone(), 1)).unwrap();
            assert_eq!(s.get("k", Duration::ZERO).unwrap().value, value, "{codec}");
            let stored = counters.stored_bytes_in.load(Relaxed);
            if codec == Codec::Identity {
                assert_eq!(stored, value.len() as u64 + 1, "kept as it is");
            } else {
                assert!(stored * 3 < value.len() as u64, "{codec}: {stored}");
                assert!(
                    s.bytes() < value.len() as u64 / 3,
                    "the budget counts it packed"
                );
            }
        }
    }

    #[test]
    fn short_and_incompressible_values_are_kept_as_they_are() {
        let (s, counters) = store(Codec::Zstd { level: 3 }, 1024);
        s.insert("short", Entry::new(json(5), 1)).unwrap();
        let mut random = vec![0u8; 4096];
        rand::Rng::fill(
            &mut <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(7),
            &mut random[..],
        );
        s.insert("random", Entry::new(random.clone(), 1)).unwrap();
        assert_eq!(s.get("random", Duration::ZERO).unwrap().value, random);
        assert_eq!(s.get("short", Duration::ZERO).unwrap().value, json(5));
        let (raw, stored) = (
            counters.raw_bytes_in.load(Relaxed),
            counters.stored_bytes_in.load(Relaxed),
        );
        assert_eq!(stored, raw + 2, "one header byte each");
    }

    #[test]
    fn a_value_that_does_not_decompress_is_dropped_not_served() {
        let (s, counters) = store(Codec::Lz4, 16);
        let corrupt = [&[Codec::Lz4.wire() as u8][..], &[0xff; 32]].concat();
        s.inner.insert("k", Entry::new(corrupt, 1)).unwrap();
        assert_eq!(s.get("k", Duration::ZERO), None);
        assert_eq!(counters.decode_errors.load(Relaxed), 1);
        assert_eq!(s.inner.get("k", Duration::ZERO), None, "dropped");
    }

    #[test]
    fn bytes_a_peer_sent_in_the_store_codec_are_kept_as_they_came() {
        let value = Bytes::from(json(400));
        let zstd = Codec::Zstd { level: 19 };
        let packed = Bytes::from(zstd.encode(&value).unwrap());
        let (s, counters) = store(Codec::Zstd { level: 1 }, 1024);
        s.insert_packed("k", Entry::new(value.clone(), 1), Some((zstd, &packed)))
            .unwrap();
        let (kept, codec) = s.get_as("k", Duration::ZERO, &Codec::ALL).unwrap();
        assert_eq!((kept.value, codec.wire()), (packed.clone(), zstd.wire()));
        assert_eq!(s.get("k", Duration::ZERO).unwrap().value, value);
        assert_eq!(
            counters.stored_bytes_in.load(Relaxed),
            packed.len() as u64 + 1
        );
        // Another codec's bytes, or a value under the threshold: compressed here.
        s.insert_packed(
            "lz",
            Entry::new(value.clone(), 1),
            Some((Codec::Lz4, &packed)),
        )
        .unwrap();
        let (kept, codec) = s.get_as("lz", Duration::ZERO, &Codec::ALL).unwrap();
        assert_eq!(codec.wire(), zstd.wire());
        assert_ne!(kept.value, packed, "compressed again at level 1");
        let (s, _) = store(Codec::Zstd { level: 1 }, 1 << 20);
        s.insert_packed("k", Entry::new(value.clone(), 1), Some((zstd, &packed)))
            .unwrap();
        let (kept, codec) = s.get_as("k", Duration::ZERO, &Codec::ALL).unwrap();
        assert_eq!((kept.value, codec), (value, Codec::Identity), "short: raw");
    }

    /// A reader gets the bytes as kept in a codec it decodes, else the value, from one
    /// lookup either way (a second would count a second hit, and promote the entry
    /// under LRU2).
    #[test]
    fn a_reader_gets_the_kept_bytes_in_a_codec_it_decodes_from_one_lookup() {
        let (s, _) = store(Codec::Zstd { level: 3 }, 16);
        let value = Bytes::from(json(400));
        s.insert("k", Entry::new(value.clone(), 1)).unwrap();
        let zstd = [Codec::Zstd { level: 19 }];
        for (accept, want) in [
            (&zstd[..], Codec::Zstd { level: 3 }),
            (&[Codec::Lz4][..], Codec::Identity),
            (&[][..], Codec::Identity),
        ] {
            let hits = s.stats().hits;
            let (hit, codec) = s.get_as("k", Duration::ZERO, accept).unwrap();
            assert_eq!(s.stats().hits, hits + 1, "{accept:?}: one lookup");
            assert_eq!(codec.wire(), want.wire(), "{accept:?}");
            let read = codec.decode(&hit.value, 1 << 20).unwrap();
            assert_eq!(read, value, "{accept:?}");
        }
    }

    /// A hot key kept compressed is decompressed once, then answered from the cache
    /// of decoded values; a reader that accepts the codec still gets the kept bytes.
    #[test]
    fn repeated_hits_are_decoded_once() {
        let (s, counters) = with_decoded(Codec::Zstd { level: 3 }, 16, 1 << 20);
        let value = Bytes::from(json(400));
        s.insert("k", Entry::new(value.clone(), 1)).unwrap();
        for _ in 0..5 {
            assert_eq!(s.get("k", Duration::ZERO).unwrap().value, value);
        }
        assert_eq!(counters.decoded_hits.load(Relaxed), 4);
        let (kept, codec) = s.get_as("k", Duration::ZERO, &Codec::ALL).unwrap();
        assert_eq!(codec.wire(), Codec::Zstd { level: 3 }.wire());
        assert_eq!(codec.decode(&kept.value, 1 << 20).unwrap(), value);
        assert_eq!(counters.decoded_hits.load(Relaxed), 4, "not a decoded hit");
        // Short values are kept raw: nothing to decode, nothing kept.
        s.insert("short", Entry::new(json(1), 1)).unwrap();
        s.get("short", Duration::ZERO).unwrap();
        s.get("short", Duration::ZERO).unwrap();
        assert_eq!(counters.decoded_hits.load(Relaxed), 4);
    }

    /// The same key at the same version with other bytes (a load again after an
    /// eviction, from a source that changed) is read as its new value, never as the
    /// decoded value of the frame it replaced: the cache answers only for the frame it
    /// decoded.
    #[test]
    fn a_new_frame_at_the_same_version_is_decoded_anew() {
        let (s, _) = with_decoded(Codec::Lz4, 16, 1 << 20);
        let (old, new) = (Bytes::from(json(300)), Bytes::from(json(301)));
        s.insert("k", Entry::new(old.clone(), 7)).unwrap();
        assert_eq!(s.get("k", Duration::ZERO).unwrap().value, old);
        // Under the store's back: the entry dropped without raising its floor (as an
        // eviction would), then filled at the same version, the decoded cache not told.
        let frame = s.pack(&new);
        s.inner.retain(&|key| key != "k");
        s.inner.insert("k", Entry::new(frame, 7)).unwrap();
        assert_eq!(s.get("k", Duration::ZERO).unwrap().value, new);
    }

    proptest! {
        /// Against a map: any sequence of writes, removes and reads through a store
        /// with a small cache of decoded values (so it evicts) reads what the map holds.
        #[test]
        fn decoded_reads_match_a_model(
            ops in proptest::collection::vec((0u8..3, 0usize..6, 0usize..40), 1..120),
            pick in 1usize..5,
        ) {
            let (s, _) = with_decoded(Codec::ALL[pick], 64, 6 << 10);
            let mut model = std::collections::BTreeMap::new();
            let mut version = 0;
            for (op, key, size) in ops {
                let key = format!("k{key}");
                version += 1;
                match op {
                    0 => {
                        let value = Bytes::from(json(size));
                        s.insert(&key, Entry::new(value.clone(), version)).unwrap();
                        model.insert(key, value);
                    }
                    1 => {
                        s.remove(&key, version);
                        model.remove(&key);
                    }
                    _ => {
                        let got = s.get(&key, Duration::ZERO).map(|hit| hit.value);
                        prop_assert_eq!(got.as_ref(), model.get(&key), "{}", key);
                    }
                }
            }
        }

        #[test]
        fn any_value_reads_back_as_written(
            value in proptest::collection::vec(any::<u8>(), 0..4096),
            pick in 0usize..5,
            min in 0usize..2048,
        ) {
            let (s, _) = store(Codec::ALL[pick], min);
            s.insert("k", Entry::new(value.clone(), 1)).unwrap();
            let back = s.collect(&|_| true, Duration::ZERO, false);
            prop_assert_eq!(&back[0].1.value[..], &value[..]);
            prop_assert_eq!(&s.get("k", Duration::ZERO).unwrap().value[..], &value[..]);
            let (stored, codec) = s.get_as("k", Duration::ZERO, &Codec::ALL).unwrap();
            let decoded = codec.decode(&stored.value, 1 << 20).unwrap();
            prop_assert_eq!(&decoded[..], &value[..], "as a peer decodes it");
        }
    }
}
