//! The simulated world every test runs in: a turmoil simulation seeded from the test's
//! seed, with its step, length and message latencies set in one place.

use std::time::Duration;

use super::BoxError;
use super::http::{Exchange, Recorder};
use super::node::{NodeSpec, Nodes};

/// How a simulation is built. [`World::new`] suits the standalone tests (5 ms steps,
/// 60 s of simulated time, 1–20 ms per message).
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

    /// turmoil's builder, set up, for options only the swarm needs.
    pub fn builder(&self) -> turmoil::Builder {
        crate::init_logging();
        // A bug planted with SIM_BUG applies to every test; delays only to swarms.
        peercache::buggify::install(peercache::buggify::Setup {
            delays: None,
            bug: super::swarm::planted_bug(),
        });
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(self.seed)
            .tick_duration(self.tick)
            .simulation_duration(self.duration)
            .min_message_latency(self.latency.0)
            .max_message_latency(self.latency.1);
        builder
    }

    pub fn build(&self) -> turmoil::Sim<'static> {
        self.builder().build()
    }

    /// Runs `nodes` and a `client` host that calls them through a [`Recorder`] as `drive`
    /// says; returns what `drive` returned and every exchange.
    pub fn run_nodes_and_client<T: 'static, F>(
        &self,
        nodes: impl IntoIterator<Item = NodeSpec>,
        drive: impl FnOnce(Recorder) -> F,
    ) -> (T, Vec<Exchange>)
    where
        F: Future<Output = Result<T, BoxError>> + 'static,
    {
        let mut sim = self.build();
        let handle = Nodes::default();
        for node in nodes {
            node.add_to(&mut sim, &handle);
        }
        let client = Recorder::default();
        let out = run_client(sim, "client", drive(client.clone()));
        (out, client.exchanges())
    }
}

/// Runs `attempt` up to `tries` times, `pause` apart, until it gives `Some`.
pub async fn retry<T, F: Future<Output = Option<T>>>(
    tries: usize,
    pause: Duration,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    for _ in 0..tries {
        if let Some(done) = attempt().await {
            return Some(done);
        }
        tokio::time::sleep(pause).await;
    }
    None
}

/// Simulated time since the run started.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// What a host runs, started anew when it is bounced.
pub type Software = std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>>;

/// Runs the simulation to its end with `client` on the host `name`; returns what the
/// client returned. An error of the client fails the run.
pub fn run_client<T: 'static>(
    mut sim: turmoil::Sim<'_>,
    name: &str,
    client: impl Future<Output = Result<T, BoxError>> + 'static,
) -> T {
    let out = std::rc::Rc::new(std::cell::RefCell::new(None));
    let result = out.clone();
    sim.client(name, async move {
        let value = client
            .await
            .map_err(|e| -> Box<dyn std::error::Error> { e })?;
        *result.borrow_mut() = Some(value);
        Ok(())
    });
    sim.run().expect("simulation succeeds");
    out.borrow_mut().take().expect("the client finished")
}
