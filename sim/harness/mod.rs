//! The testbed: the simulation ([`world`]) and the hosts in it, each built in one place:
//! `node<i>` hosts running the real Node ([`node`], [`group`]), the `registry` host
//! ([`membership`]), the `db` host ([`db`]), HTTP calls to the nodes ([`http`]), the
//! certificates of mutual TLS ([`tls`]) and a `rogue` host without a valid one
//! ([`rogue`]).
//!
//! The scenarios run on top: one seed draws a [`Swarm`] (cluster shape, timings,
//! workload, faults), [`run`] runs it with `client<i>` hosts issuing the workload
//! ([`client`]) and returns the recorded history.

pub mod client;
pub mod db;
pub mod group;
pub mod http;
pub mod membership;
pub mod node;
mod plan;
pub mod resp;
pub mod rogue;
mod run;
mod scenario;
mod swarm;
pub mod tls;
pub mod world;

pub use run::{Run, run, run_within};
pub use scenario::{Action, Scenario};
pub use swarm::Swarm;
pub use tls::PeerTls;

/// The error a simulated client or host returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
