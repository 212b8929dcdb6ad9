//! Following the membership: each change swaps the picker's view, drops main-cache
//! entries of keys that moved away, and replays recent writes to members new to the
//! view, which may have missed them.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::group::Registry;
use crate::peer::PeerPicker;
use crate::ring::Member;

/// Applies every membership change from `members` until its sender is gone.
pub(super) async fn follow(
    mut members: watch::Receiver<Vec<Member>>,
    picker: Arc<PeerPicker>,
    groups: Registry,
) {
    let mut replays = JoinSet::new();
    while members.changed().await.is_ok() {
        let now = members.borrow_and_update().clone();
        let added = picker.set_members(now);
        let dropped = groups.drop_unowned();
        if dropped > 0 {
            tracing::debug!(dropped, "dropped entries of keys that moved away");
        }
        // Members new to this view may have missed writes made without them.
        if !added.is_empty() {
            let groups = groups.clone();
            replays.spawn(async move { groups.replay_writes(&added).await });
        }
        while replays.try_join_next().is_some() {}
    }
}

/// For each member that answers again after being suspected: drops the copies of its
/// keys (loaded here while it was suspected), and replays recent writes to it (the
/// invalidations sent meanwhile failed at once, without reaching it).
pub(super) async fn replay_to_recovered(
    mut recoveries: tokio::sync::mpsc::UnboundedReceiver<String>,
    picker: Arc<PeerPicker>,
    groups: Registry,
) {
    let mut replays = JoinSet::new();
    while let Some(id) = recoveries.recv().await {
        let dropped = groups.drop_copies_of(&id);
        tracing::debug!(member = %id, dropped, "dropped copies of a recovered member's keys");
        if let Some(peer) = picker.peer(&id) {
            let groups = groups.clone();
            replays.spawn(async move { groups.replay_writes(&[peer]).await });
        }
        while replays.try_join_next().is_some() {}
    }
}

/// How often suspected members whose period ran out are probed.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a probe waits for its answer.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Probes each suspected member once its suspicion period has run out, even when no
/// get needs it: gets of its keys are answered from copies meanwhile and may never
/// call it, and its copies are dropped only when it answers again. The probe is a
/// peek (memory only, nothing loaded); any answer, an error included, ends the
/// suspicion, and no answer renews it.
pub(super) async fn probe_suspected(picker: Arc<PeerPicker>, groups: Registry) {
    let mut probes = JoinSet::new();
    loop {
        crate::time::sleep(PROBE_EVERY).await;
        while probes.try_join_next().is_some() {}
        let due: Vec<_> = (picker.suspected().into_iter())
            .filter(|(_, left)| left.is_zero())
            .collect();
        if due.is_empty() {
            continue;
        }
        let Some(group) = groups.groups().first().map(|g| g.name().to_owned()) else {
            continue;
        };
        for (id, _) in due {
            let Some(peer) = picker.peer(&id) else {
                continue;
            };
            let (group, asker) = (group.clone(), picker.self_id().to_owned());
            probes.spawn(async move {
                let _ = peer.peek(&group, PROBE_KEY, &asker, PROBE_DEADLINE).await;
            });
        }
    }
}

/// The key a probe peeks at: any key does, the answer is not used.
const PROBE_KEY: &str = "peercache-probe";
