//! Hooks for the simulator, compiled in only with the `sim` feature:
//!
//! - **Delays** at the request path's risky points (FoundationDB's BUGGIFY): seeded,
//!   rare, and only where a test turned them on, so races between fills and writes, and
//!   between answers and invalidations, happen in most simulated runs instead of once in
//!   a thousand.
//! - **Planted bugs**: one known defect per promise of the request path, switched on by
//!   name, to show the simulator's checkers catch each (sim/mutants.md).
//! - A **log of peer calls** (who asked whom for which key, and when), which the
//!   simulator's efficiency checker counts.
//!
//! Without the feature every hook is an empty inline function. With it, nothing happens
//! until a test installs a setup on its thread: turmoil runs every host of a simulation
//! on the test's thread, so the setup, the random draws and the log belong to one run
//! and the same seed draws the same delays.

use std::time::Duration;

/// A point on the request path where a delay widens a race window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// In a load, after the floor was read and the loader answered, before the insert:
    /// a write to the key in this window must win.
    FillBeforeInsert,
    /// After an owner's answer arrived, before the asker keeps a hot copy: an
    /// invalidation in this window must win.
    BeforeKeepHot,
    /// Before an owner sends an invalidation to one member: a fetch answered meanwhile
    /// must not outlive the write.
    BeforeInvalidate,
}

/// A defect planted on purpose, one per promise of the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// Ownership: a node loads every key itself instead of asking the owner.
    LoadsUnowned,
    /// Dedup: every concurrent get of a key on a node calls the owner.
    CallPerGet,
    /// Dedup: every concurrent miss of a key on the owner calls the loader.
    LoadPerGet,
    /// Set/Remove: a fill stamps its entry with the floor at insert time, not the one
    /// read before loading, so a fill that started before a write overwrites it.
    FillIgnoresFloor,
    /// Set/Remove: the owner does not tell the other members to drop their copies.
    NoInvalidations,
    /// Set/Remove: an asker keeps a hot copy even when an invalidation arrived while the
    /// answer was on its way (it stamps the copy with the floor as it is when the answer
    /// arrives, not as it was when it asked).
    HotIgnoresInvalidation,
    /// Set/Remove: a write does not detach the key's flights, so a get that starts after
    /// the write can receive a fill that started before it.
    FlightsSurviveWrites,
    /// Errors: a failed load is cached as an empty value.
    ErrorCached,
    /// Churn: a node keeps and serves main-cache entries of keys that moved to another
    /// owner (the drop at membership changes and the check on every hit both off).
    KeepsUnowned,
    /// Churn: an owner does not replay its recent writes to members that appear.
    NoReplay,
    /// Handoff: a new owner keeps a handed entry at the version its previous owner
    /// stamped, even after a write of the key here (no check of recent writes, no floor
    /// read before asking).
    HandoffIgnoresFloor,
    /// Handoff: entries are handed on even after a member came back into the view.
    HandoffAfterReturn,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 12] = [
        Bug::LoadsUnowned,
        Bug::CallPerGet,
        Bug::LoadPerGet,
        Bug::FillIgnoresFloor,
        Bug::NoInvalidations,
        Bug::HotIgnoresInvalidation,
        Bug::FlightsSurviveWrites,
        Bug::ErrorCached,
        Bug::KeepsUnowned,
        Bug::NoReplay,
        Bug::HandoffIgnoresFloor,
        Bug::HandoffAfterReturn,
    ];

    /// The bug's name, as `SIM_BUG` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Bug::LoadsUnowned => "loads_unowned",
            Bug::CallPerGet => "call_per_get",
            Bug::LoadPerGet => "load_per_get",
            Bug::FillIgnoresFloor => "fill_ignores_floor",
            Bug::NoInvalidations => "no_invalidations",
            Bug::HotIgnoresInvalidation => "hot_ignores_invalidation",
            Bug::FlightsSurviveWrites => "flights_survive_writes",
            Bug::ErrorCached => "error_cached",
            Bug::KeepsUnowned => "keeps_unowned",
            Bug::NoReplay => "no_replay",
            Bug::HandoffIgnoresFloor => "handoff_ignores_floor",
            Bug::HandoffAfterReturn => "handoff_after_return",
        }
    }

    /// The bug called `name`.
    pub fn named(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// How often, and how long, the delay points wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delays {
    /// Seeds the draws.
    pub seed: u64,
    /// Chance that a point waits, each time it is passed.
    pub rate: f64,
    /// The longest wait; each is drawn uniformly up to it.
    pub max: Duration,
}

/// What a simulated run turns on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Setup {
    /// Delays at the risky points, if any.
    pub delays: Option<Delays>,
    /// The one bug planted, if any.
    pub bug: Option<Bug>,
}

/// One call of a peer's get, as the asker made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerCall {
    /// The asker's member id.
    pub from: String,
    /// The owner's member id.
    pub to: String,
    /// The key asked for.
    pub key: String,
    /// Simulated time the call started.
    pub start: Duration,
    /// Simulated time it was answered (or given up).
    pub end: Duration,
}

#[cfg(feature = "sim")]
mod on {
    use std::cell::RefCell;
    use std::time::Duration;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::{Bug, PeerCall, Point, Setup};

    #[derive(Default)]
    struct State {
        /// Whether a run installed a setup: only then are calls logged.
        on: bool,
        setup: Setup,
        rng: Option<SmallRng>,
        calls: Vec<PeerCall>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    /// Turns `setup` on for this thread, clearing the call log.
    pub fn install(setup: Setup) {
        STATE.with_borrow_mut(|s| {
            *s = State {
                on: true,
                setup,
                rng: setup.delays.map(|d| SmallRng::seed_from_u64(d.seed)),
                calls: vec![],
            }
        });
    }

    /// Turns every hook off for this thread.
    pub fn uninstall() {
        STATE.with_borrow_mut(|s| *s = State::default());
    }

    /// The peer calls logged since [`install`].
    pub fn take_calls() -> Vec<PeerCall> {
        STATE.with_borrow_mut(|s| std::mem::take(&mut s.calls))
    }

    pub(crate) fn planted(bug: Bug) -> bool {
        STATE.with_borrow(|s| s.setup.bug == Some(bug))
    }

    pub(crate) fn draw(_point: Point) -> Option<Duration> {
        STATE.with_borrow_mut(|s| {
            let d = s.setup.delays?;
            let rng = s.rng.as_mut()?;
            rng.random_bool(d.rate)
                .then(|| rng.random_range(Duration::ZERO..=d.max))
        })
    }

    pub(crate) fn logging() -> bool {
        STATE.with_borrow(|s| s.on)
    }

    pub(crate) fn elapsed() -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }

    pub(crate) fn log(call: PeerCall) {
        STATE.with_borrow_mut(|s| s.calls.push(call));
    }
}

#[cfg(feature = "sim")]
pub use on::{install, take_calls, uninstall};

/// Whether `bug` is planted in this run.
#[inline(always)]
pub(crate) fn planted(bug: Bug) -> bool {
    #[cfg(feature = "sim")]
    return on::planted(bug);
    #[cfg(not(feature = "sim"))]
    {
        let _ = bug;
        false
    }
}

/// Waits at `point`, rarely and briefly, when the run turned delays on.
#[inline(always)]
pub(crate) async fn delay(point: Point) {
    #[cfg(feature = "sim")]
    if let Some(wait) = on::draw(point) {
        crate::time::sleep(wait).await;
    }
    #[cfg(not(feature = "sim"))]
    let _ = point;
}

/// Logs a peer call from its start until it is dropped (answered or given up).
#[must_use]
pub(crate) struct CallLog {
    #[cfg(feature = "sim")]
    call: Option<PeerCall>,
}

impl CallLog {
    #[inline(always)]
    pub(crate) fn start(from: &str, to: &str, key: &str) -> CallLog {
        #[cfg(feature = "sim")]
        return CallLog {
            call: on::logging().then(|| PeerCall {
                from: from.to_owned(),
                to: to.to_owned(),
                key: key.to_owned(),
                start: on::elapsed(),
                end: Duration::ZERO,
            }),
        };
        #[cfg(not(feature = "sim"))]
        {
            let _ = (from, to, key);
            CallLog {}
        }
    }
}

#[cfg(feature = "sim")]
impl Drop for CallLog {
    fn drop(&mut self) {
        if let Some(mut call) = self.call.take() {
            call.end = on::elapsed();
            on::log(call);
        }
    }
}
