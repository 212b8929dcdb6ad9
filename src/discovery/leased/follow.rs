//! Following the member records: range, then watch from the next revision; on any
//! error or end of the watch, back off and start over.

use std::sync::Arc;

use futures::StreamExt;

use super::shared::{Shared, State};
use crate::discovery::{Coordinator, KeyValue, WatchEvent};

impl<C: Coordinator> Shared<C> {
    /// Follows the records: range, watch from the next revision, and on any error or
    /// end of the watch, back off and start over. Runs until aborted.
    pub(super) async fn follow(self: Arc<Self>, mut revision: i64) {
        let prefix = self.config.prefix.clone();
        let mut backoff = self.backoff();
        let mut read = true;
        loop {
            if !read {
                match self.call(self.c.range(&prefix)).await {
                    Ok((kvs, r)) => {
                        revision = r;
                        self.reset(kvs, r);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "range failed");
                        self.pause_unless_resync(&mut backoff).await;
                        continue;
                    }
                }
            }
            read = false;
            match self.call(self.c.watch(&prefix, revision + 1)).await {
                Ok(mut events) => {
                    while let Some(batch) = events.next().await {
                        match batch {
                            Ok(batch) => {
                                backoff.reset();
                                revision = self.apply(batch);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "watch failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "watch refused"),
            }
            self.pause_unless_resync(&mut backoff).await;
        }
    }

    /// Takes a fresh read of the records as the whole truth. Its revision may be below
    /// the last one seen: a restarted registry starts again from 1.
    pub(super) fn reset(&self, kvs: Vec<KeyValue>, revision: i64) {
        let mut state = self.state.lock();
        let went_back = revision < state.revision;
        state.seen = kvs.into_iter().filter_map(|kv| self.parse(kv)).collect();
        state.revision = revision;
        self.check_mine(&mut state, revision, went_back);
        self.publish(&state);
    }

    /// Applies watched changes; returns the last revision.
    pub(super) fn apply(&self, events: Vec<WatchEvent>) -> i64 {
        let mut state = self.state.lock();
        for event in events {
            let revision = event.revision();
            let mine = event.key() == self.key;
            match event {
                WatchEvent::Put(kv) => {
                    let id = kv.key.get(self.config.prefix.len()..).unwrap_or_default();
                    state.seen.remove(id);
                    if let Some((id, seen)) = self.parse(kv) {
                        state.seen.insert(id, seen);
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    let id = key.get(self.config.prefix.len()..).unwrap_or_default();
                    state.seen.remove(id);
                }
            }
            state.revision = revision;
            if mine {
                self.check_mine(&mut state, revision, false);
            }
        }
        self.publish(&state);
        state.revision
    }

    /// While registered, a state after our registration without our record means we
    /// lost it (deleted, taken by another process, or a registry that forgot it).
    pub(super) fn check_mine(&self, state: &mut State, revision: i64, went_back: bool) {
        let Some(registration) = state.registered else {
            return;
        };
        if revision <= registration.revision && !went_back {
            return;
        }
        let ours =
            (state.seen.get(&self.me.id)).is_some_and(|s| s.incarnation == self.config.incarnation);
        if !ours {
            state.lost = true;
            self.lost.notify_one();
        }
    }
}
