//! Buckets of one policy each, chosen by key hash, each behind its own lock.

use std::time::Duration;

use parking_lot::RwLock;

use super::{Entry, Evicted, Hit, Listener, Peek, Policy, Rejected, Stats, Store, key_hash, nanos};

/// Slots each bucket's sweep visits per call: bounds the time a bucket lock is held.
const SWEEP_BUDGET: usize = 4096;

/// A bucket on its own cache line pair, so neighbouring locks do not false-share.
#[repr(align(128))]
struct Bucket<P>(RwLock<P>);

/// A [`Store`] made of `2^k` buckets of policy `P`, so two threads rarely contend.
///
/// Capacity is split evenly; an entry must fit in one bucket.
pub struct Sharded<P> {
    buckets: Box<[Bucket<P>]>,
    mask: u64,
    bucket_capacity: u64,
    listener: Option<Listener>,
}

impl<P: Policy> Sharded<P> {
    /// `buckets` (rounded up to a power of two) buckets sharing `capacity` bytes, each
    /// made by `make(bucket_capacity)`.
    pub fn new(capacity: u64, buckets: usize, make: impl Fn(u64) -> P) -> Self {
        let n = buckets.max(1).next_power_of_two();
        let bucket_capacity = capacity / n as u64;
        Sharded {
            buckets: (0..n)
                .map(|_| Bucket(RwLock::new(make(bucket_capacity))))
                .collect(),
            mask: n as u64 - 1,
            bucket_capacity,
            listener: None,
        }
    }

    /// Calls `listener` with every entry evicted or expired from now on.
    pub fn with_listener(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    fn bucket(&self, hash: u64) -> &RwLock<P> {
        // High bits pick the bucket; the bucket's own index uses the low bits.
        &self.buckets[((hash >> 40) & self.mask) as usize].0
    }

    /// Runs `op` on `bucket`, collecting evictions only when someone listens, and
    /// tells the listener after the lock is released.
    fn with_bucket<R>(
        &self,
        bucket: &RwLock<P>,
        op: impl FnOnce(&mut P, Option<&mut Vec<Evicted>>) -> R,
    ) -> R {
        match &self.listener {
            None => op(&mut bucket.write(), None),
            Some(listener) => {
                let mut out = Vec::new();
                let r = op(&mut bucket.write(), Some(&mut out));
                out.iter().for_each(|e| listener(e));
                r
            }
        }
    }
}

impl<P: Policy> Store for Sharded<P> {
    #[inline]
    fn get(&self, key: &str, now: Duration) -> Option<Hit> {
        let hash = key_hash(key);
        let now = nanos(Some(now));
        let bucket = self.bucket(hash);
        // Most hits change nothing but a reference bit: serve them under the shared lock.
        if P::SHARED_HITS {
            match bucket.read().peek(hash, key, now) {
                Peek::Hit(hit) => return Some(hit),
                Peek::Miss => return None,
                Peek::NeedsWrite => {}
            }
        }
        self.with_bucket(bucket, |b, out| b.get(hash, key, now, out))
    }

    fn insert(&self, key: &str, entry: Entry) -> Result<(), Rejected> {
        let hash = key_hash(key);
        self.with_bucket(self.bucket(hash), |b, out| b.insert(hash, key, entry, out))
    }

    fn remove(&self, key: &str, version: u64) -> bool {
        let hash = key_hash(key);
        self.bucket(hash).write().remove(hash, key, version)
    }

    fn floor(&self, key: &str) -> u64 {
        let hash = key_hash(key);
        self.bucket(hash).read().floor(hash)
    }

    fn sweep(&self, now: Duration) -> usize {
        let now = nanos(Some(now));
        self.buckets
            .iter()
            .map(|b| self.with_bucket(&b.0, |b, out| b.sweep(now, SWEEP_BUDGET, out)))
            .sum()
    }

    fn retain(&self, keep: &dyn Fn(&str) -> bool) -> usize {
        self.buckets
            .iter()
            .map(|b| b.0.write().retain(&mut |k| keep(k)))
            .sum()
    }

    fn collect(
        &self,
        pick: &dyn Fn(&str) -> bool,
        now: Duration,
        take: bool,
    ) -> Vec<(Box<str>, Hit)> {
        let now = nanos(Some(now));
        let per_bucket: Vec<_> = (self.buckets.iter())
            .map(|b| b.0.write().collect(&mut |k| pick(k), now, take))
            .collect();
        // Round-robin over the buckets, so the most recent entries of each come first.
        let total = per_bucket.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(total);
        let mut iters: Vec<_> = per_bucket.into_iter().map(Vec::into_iter).collect();
        while out.len() < total {
            out.extend(iters.iter_mut().filter_map(Iterator::next));
        }
        out
    }

    fn max_charge(&self) -> u64 {
        self.bucket_capacity
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for b in self.buckets.iter() {
            b.0.read().add_stats(&mut stats);
        }
        stats
    }
}
