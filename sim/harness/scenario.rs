//! The scenarios, and the actions a scenario's plan applies to the simulation.

use super::node::host_name;
use super::rogue::ROGUE_HOST;

/// The scenarios; each has a test of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    SteadyState,
    Partition,
    OneWayPartition,
    RegistryPartition,
    ClientPartition,
    RegistryHold,
    MessageLoss,
    LatencySpread,
    CrashBounce,
    ScaleOut,
    GracefulLeave,
    /// A node's links all held for longer than the clients' deadline, then released,
    /// under a write-heavy workload.
    Stall,
    /// A host with another CA's certificate registers as a member and calls the nodes
    /// for a while (mutual TLS on).
    RogueHost,
    Swarm,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SteadyState => "steady_state",
            Scenario::Partition => "partition",
            Scenario::OneWayPartition => "one_way_partition",
            Scenario::RegistryPartition => "registry_partition",
            Scenario::ClientPartition => "client_partition",
            Scenario::RegistryHold => "registry_hold",
            Scenario::MessageLoss => "message_loss",
            Scenario::LatencySpread => "latency_spread",
            Scenario::CrashBounce => "crash_bounce",
            Scenario::ScaleOut => "scale_out",
            Scenario::GracefulLeave => "graceful_leave",
            Scenario::Stall => "stall",
            Scenario::RogueHost => "rogue_host",
            Scenario::Swarm => "swarm",
        }
    }
}

/// Something the harness does to the simulation at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Partition(String, String),
    Repair(String, String),
    PartitionOneway(String, String),
    RepairOneway(String, String),
    Hold(String, String),
    Release(String, String),
    /// Random link failures (turmoil's message loss) at this rate per message sent.
    Loss(f64),
    Crash(usize),
    /// Restart a crashed node with an empty cache.
    Bounce(usize),
    /// A node starts and joins (scale-out); its host has waited until now.
    Join(usize),
    /// A node shuts down gracefully: leaves the membership, drains, stops.
    Leave(usize),
    /// Every link of a node is held: what it sends and what is sent to it waits.
    Stall(usize),
    /// The held links are released: what waited is delivered.
    Unstall(usize),
    /// The rogue host registers as a member and starts calling the nodes; it does so
    /// on its own schedule, so applying this does nothing.
    RogueJoin,
    /// The rogue host leaves the registry and stops calling.
    RogueLeave,
}

impl Action {
    /// Hosts this action touches directly; empty for network-wide faults.
    pub fn hosts(&self) -> Vec<String> {
        match self {
            Action::Partition(a, b)
            | Action::Repair(a, b)
            | Action::PartitionOneway(a, b)
            | Action::RepairOneway(a, b)
            | Action::Hold(a, b)
            | Action::Release(a, b) => vec![a.clone(), b.clone()],
            Action::Loss(_) => vec![],
            Action::RogueJoin | Action::RogueLeave => vec![ROGUE_HOST.to_owned()],
            Action::Crash(i)
            | Action::Bounce(i)
            | Action::Join(i)
            | Action::Leave(i)
            | Action::Stall(i)
            | Action::Unstall(i) => {
                vec![host_name(*i)]
            }
        }
    }
}
