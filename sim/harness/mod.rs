//! The testbed: one seed draws a swarm (cluster shape, timings, workload, faults), runs it
//! on turmoil with a `registry` host, a `db` host, `node<i>` hosts running the real Node
//! and `client<i>` hosts, and returns the recorded history.

pub mod client;
pub mod db;
pub mod membership;
pub mod node;
mod plan;
mod run;
mod scenario;
mod swarm;

pub use run::{Run, run};
pub use scenario::{Action, Scenario};
pub use swarm::Swarm;
