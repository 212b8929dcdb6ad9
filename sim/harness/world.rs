//! The simulated world a run happens in: a turmoil simulation seeded from the run's
//! seed, with its step, length and message latencies set in one place.

use std::time::Duration;

/// How a simulation is built; [`World::new`] gives 5 ms steps, 60 s of simulated time
/// and 1–20 ms per message.
#[derive(Debug, Clone)]
pub struct World {
    /// Seeds turmoil's randomness (latencies, message loss, hosts' schedulers).
    pub seed: u64,
    /// One simulation step.
    pub tick: Duration,
    /// Simulated time after which the run fails if it has not ended.
    pub duration: Duration,
    /// The range each message's latency is drawn from.
    pub latency: (Duration, Duration),
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            seed,
            tick: Duration::from_millis(5),
            duration: Duration::from_secs(60),
            latency: (Duration::from_millis(1), Duration::from_millis(20)),
        }
    }

    /// turmoil's builder, set up.
    pub fn builder(&self) -> turmoil::Builder {
        crate::init_logging();
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(self.seed)
            .tick_duration(self.tick)
            .simulation_duration(self.duration)
            .min_message_latency(self.latency.0)
            .max_message_latency(self.latency.1);
        builder
    }
}

/// Simulated time since the run started.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// What a host runs, started anew when it is bounced.
pub type Software = std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>>;
