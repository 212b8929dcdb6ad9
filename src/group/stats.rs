//! A group's statistics, written once: the table below makes the live counters, the
//! [`GroupStats`] snapshot, its JSON form (`/v1/stats`) and the metric names and help
//! texts (`/metrics`), so a new counter is one line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::store;

/// A counter of the table: its name (JSON field and metric), help text and reader.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// Field and metric name.
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Reads it from a snapshot.
    pub read: fn(&GroupStats) -> u64,
}

/// A store figure shown per cache (main and hot).
#[derive(Debug, Clone, Copy)]
pub struct StoreField {
    /// Field name (`hot_` is prefixed for the hot cache in JSON); the metric is
    /// `cache_<name>` with a `cache` label.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// A counter (only grows) rather than a gauge.
    pub counter: bool,
    /// Reads it from a store's stats.
    pub read: fn(&store::Stats) -> u64,
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// The live counters of one group.
        #[derive(Debug, Default)]
        pub(super) struct Counters {
            $(pub(super) $name: AtomicU64,)+
        }

        /// A group's counters, in groupcache's spirit, plus its stores'.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct GroupStats {
            $($(#[doc = $doc])+ pub $name: u64,)+
            /// The main store's counters.
            pub store: store::Stats,
            /// The hot store's counters (zero when the group keeps no hot copies).
            pub hot: store::Stats,
        }

        impl Counters {
            /// A snapshot, with the stores' figures.
            pub(super) fn read(&self, store: store::Stats, hot: store::Stats) -> GroupStats {
                GroupStats { $($name: self.$name.load(Relaxed),)+ store, hot }
            }
        }

        impl GroupStats {
            /// Every counter, in table order.
            pub const COUNTERS: &[Counter] = &[$(Counter {
                name: stringify!($name),
                help: concat!($($doc),+),
                read: |s| s.$name,
            },)+];
        }
    };
}

counters! {
    /// Gets from this node's clients, valid or not.
    gets,
    /// Gets answered from this node's main or hot cache.
    hits,
    /// Gets answered from the hot cache.
    hot_hits,
    /// Gets answered "not found" from memory, within the negative TTL (no load).
    negative_hits,
    /// Calls of this node's loader.
    loads,
    /// Gets (from clients or peers) that joined a load or peer call already under way.
    loads_deduped,
    /// Loader calls that failed (including oversize values and panics).
    local_load_errors,
    /// Values fetched from their owner.
    peer_loads,
    /// Calls to a peer that did not reach it or timed out.
    peer_errors,
    /// Gets of keys whose owner was unreachable answered by the member that would own
    /// them without it (instead of a load here).
    failover_gets,
    /// Gets from peers that could not reach a key's owner, answered here by asking the
    /// owner for them.
    relayed_gets,
    /// Get requests from peers that this node answered (or failed).
    served_to_peers,
    /// Values fetched from their owner that the owner flagged hot (kept as hot copies
    /// at once).
    hot_flagged,
    /// Invalidations this node, as owner, could not deliver.
    invalidations_failed,
    /// Misses of keys that moved here answered with the entry from where they were (the
    /// previous owner, or a leaving member's push) instead of a load.
    handoff_hits,
    /// Previous owners asked for an entry after a membership change.
    handoff_peeks,
    /// Entries this node pushed to their new owners when leaving, kept there.
    handoff_pushed,
    /// Entries leaving members pushed here, kept.
    handoff_accepted,
    /// Misses of keys that moved here answered from this node's own copy (fetched from
    /// the previous owner, or loaded while it was unreachable), kept in the main cache
    /// until that copy would have expired.
    copies_promoted,
    /// Bytes of the values put in the main and hot caches, as they are (with
    /// `--compress`, not `--compress-wire-only`; else 0).
    raw_bytes_in,
    /// The same values as the caches hold them, compressed where that shrank them:
    /// raw_bytes_in / stored_bytes_in is the compression ratio.
    stored_bytes_in,
    /// Microseconds spent compressing values (to keep them, or for the wire).
    compress_micros,
    /// Microseconds spent decompressing the values the caches keep compressed (hits,
    /// handoffs; the node's peer_decompress_seconds counts values peers sent
    /// compressed).
    decompress_micros,
    /// Hits on values kept compressed answered decoded without decompressing: the
    /// decoded value was kept from an earlier hit (`--compress-decoded`).
    decoded_hits,
    /// Stored or received compressed values that failed to decompress (dropped).
    decode_errors,
}

impl StoreField {
    const fn gauge(name: &'static str, help: &'static str, read: fn(&store::Stats) -> u64) -> Self {
        StoreField {
            name,
            help,
            counter: false,
            read,
        }
    }

    const fn counter(
        name: &'static str,
        help: &'static str,
        read: fn(&store::Stats) -> u64,
    ) -> Self {
        let mut field = Self::gauge(name, help, read);
        field.counter = true;
        field
    }
}

impl GroupStats {
    /// The store figures shown per cache.
    pub const STORE_FIELDS: &[StoreField] = &[
        StoreField::gauge("items", "Entries held, by cache (main or hot)", |s| s.items),
        StoreField::gauge("bytes", "Bytes held, by cache (main or hot)", |s| s.bytes),
        StoreField::gauge("capacity", "Capacity in bytes, by cache", |s| s.capacity),
        StoreField::counter("evictions", "Entries evicted for room, by cache", |s| {
            s.evictions
        }),
        StoreField::counter(
            "expirations",
            "Entries dropped when their TTL ran out, by cache",
            |s| s.expirations,
        ),
        StoreField::counter(
            "stale_rejections",
            "Inserts refused because a newer version was seen, by cache",
            |s| s.stale_rejections,
        ),
    ];
}

/// One flat object: the counters, the main store's figures, and the hot store's
/// prefixed with `hot_`.
impl Serialize for GroupStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = Self::COUNTERS.len() + 2 * Self::STORE_FIELDS.len();
        let mut map = serializer.serialize_map(Some(fields))?;
        for c in Self::COUNTERS {
            map.serialize_entry(c.name, &(c.read)(self))?;
        }
        for f in Self::STORE_FIELDS {
            map.serialize_entry(f.name, &(f.read)(&self.store))?;
        }
        for f in Self::STORE_FIELDS {
            map.serialize_entry(&format_args!("hot_{}", f.name), &(f.read)(&self.hot))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_counter_once_and_json_follows_it() {
        let c = Counters::default();
        c.loads.fetch_add(3, Relaxed);
        c.peer_errors.fetch_add(2, Relaxed);
        let hot = store::Stats {
            items: 4,
            ..Default::default()
        };
        let s = c.read(store::Stats::default(), hot);
        let json = serde_json::to_value(s).unwrap();
        let obj = json.as_object().unwrap();
        let fields = GroupStats::COUNTERS.len() + 2 * GroupStats::STORE_FIELDS.len();
        assert_eq!(obj.len(), fields, "no name twice");
        assert_eq!(
            (json["loads"].as_u64(), json["peer_errors"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(
            (json["items"].as_u64(), json["hot_items"].as_u64()),
            (Some(0), Some(4))
        );
        let help = GroupStats::COUNTERS
            .iter()
            .find(|c| c.name == "loads")
            .unwrap()
            .help;
        assert_eq!(help.trim(), "Calls of this node's loader.");
    }
}
