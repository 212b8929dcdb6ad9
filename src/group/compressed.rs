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
}

impl Compression {
    /// Values of at least `min` bytes kept compressed in `codec`.
    pub fn new(codec: Codec, min: usize) -> Self {
        Compression {
            codec,
            min,
            wire_only: false,
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
}

impl Compressed {
    pub(super) fn new(
        inner: Box<dyn Store>,
        how: Compression,
        max_value: usize,
        counters: Arc<Counters>,
    ) -> Self {
        Compressed {
            inner,
            how,
            max_value,
            counters,
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
            _ => self.unpack_hit(key, hit).map(|hit| (hit, Codec::Identity)),
        }
    }

    fn insert(&self, key: &str, entry: Entry) -> Result<(), Rejected> {
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
                let value = self.frame(codec.wire() as u8, bytes, entry.value.len());
                self.inner.insert(key, Entry { value, ..entry })
            }
            _ => self.insert(key, entry),
        }
    }

    fn remove(&self, key: &str, version: u64) -> bool {
        self.inner.remove(key, version)
    }

    fn floor(&self, key: &str) -> u64 {
        self.inner.floor(key)
    }

    fn purge(&self, key: &str, version: u64) -> bool {
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
            Compressed::new(inner, how, 1 << 20, counters.clone()),
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

    proptest! {
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
