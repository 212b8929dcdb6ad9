//! The `rogue` host: a host without a valid certificate that tries to take part. Its
//! certificate names it but comes from another CA. For a window of the run it
//!
//! - registers itself as a member in the registry (which, like etcd without auth, takes
//!   any record), under a member id it chose so that the nodes' rings give it `k0`, the
//!   hottest key, and with its own address; its server ([`server`]) counts every
//!   handshake and request it gets and answers with forged data;
//! - dials every node it learns of from the registry, with its certificate, with TLS
//!   but no certificate, and in plaintext ([`dial`]), and tries each call of the peer
//!   protocol: a Get, a Set and a Remove of forged values, an invalidation at a huge
//!   version. Each call is recorded.
//!
//! Then it leaves the registry and only listens. [`crate::check::rogue`] judges the log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercache::net::SimNet;
use peercache::peer::{PeerFailure, PeerRef};
use peercache::{Member, Net, Ring};

use super::db::value_of;
use super::group::GROUP;
use super::membership::{self, Lease};
use super::node::GRPC_PORT;
use super::world::{Software, now};

mod dial;
mod server;

pub use dial::Credential;

pub const ROGUE_HOST: &str = "rogue";

/// The version the rogue forges in its answers and calls: far above anything the
/// cluster mints, yet within the range peers accept, so only TLS keeps it out.
pub const FORGED_VERSION: u64 = 1 << 61;

/// Every call of the peer protocol, each made with every credential.
pub const RPCS: [&str; 6] = ["get", "set", "remove", "invalidate", "peek", "push"];

/// Longest the rogue waits for one call.
const CALL_DEADLINE: Duration = Duration::from_secs(1);
/// Pause between the rogue's rounds of calls.
const ROUND_EVERY: Duration = Duration::from_millis(1000);

/// The address the rogue registers with.
pub fn rogue_addr() -> String {
    format!("{ROGUE_HOST}:{GRPC_PORT}")
}

/// The member id the rogue registers under, among the `members` it knows of: the first
/// of `rogue0:7000`, `rogue1:7000`, … that rings of `vnodes` make the owner of `k0`, as
/// an attacker aiming at a hot key would choose it.
pub fn choose_id(members: &[String], vnodes: u32) -> String {
    (0..)
        .map(|i| format!("{ROGUE_HOST}{i}:{GRPC_PORT}"))
        .find(|id| {
            let all = members.iter().chain([id]);
            let ring = Ring::new(all.map(|m| Member::new(m.as_str(), m.as_str())), vnodes);
            ring.owner("k0").is_some_and(|m| m.id == *id)
        })
        .expect("some id owns k0")
}

/// When the rogue is in the registry, and what it needs to know of the run.
#[derive(Debug, Clone)]
pub struct RogueSpec {
    /// The member id it registers under.
    pub id: String,
    pub joins: Duration,
    pub leaves: Duration,
    pub lease_ttl: Duration,
    pub keys: usize,
    pub value_size: usize,
    pub seed: u64,
}

/// How one of the rogue's calls ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The node served it.
    Served,
    /// The node answered with an error of its own: the call got through.
    Refused(String),
    /// The call never reached the node's service (the transport failed).
    Unreachable(String),
}

/// One call the rogue made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RogueCall {
    pub at: Duration,
    /// The member id it dialled.
    pub node: String,
    pub rpc: &'static str,
    pub how: Credential,
    pub answer: Answer,
}

/// What the rogue did and saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RogueLog {
    /// When its member record went into the registry, and when it withdrew it.
    pub registered: Option<Duration>,
    pub left: Option<Duration>,
    /// The member id it registered under.
    pub id: String,
    pub calls: Vec<RogueCall>,
    /// Handshakes its server completed, and those that failed (nodes that dialled it
    /// and gave up on its certificate).
    pub handshakes: u64,
    pub refused_handshakes: u64,
    /// Peer-protocol requests its server received.
    pub requests: u64,
}

/// Adds the rogue host; it writes to `log`.
pub fn add_rogue(sim: &mut turmoil::Sim<'_>, spec: RogueSpec, log: Arc<Mutex<RogueLog>>) {
    sim.host(ROGUE_HOST, move || -> Software {
        Box::pin(run(spec.clone(), log.clone()))
    });
}

async fn run(spec: RogueSpec, log: Arc<Mutex<RogueLog>>) -> turmoil::Result {
    log.lock().unwrap().id = spec.id.clone();
    let listener = SimNet.bind(&format!("0.0.0.0:{GRPC_PORT}")).await?;
    tokio::spawn(server::serve(listener, log.clone(), spec.value_size));
    tokio::time::sleep(spec.joins.saturating_sub(now())).await;

    let incarnation = now().as_millis() as u64;
    let discovery = Lease::new(spec.lease_ttl).discovery(
        membership::coordinator(),
        incarnation,
        spec.seed ^ 0x0906_0E00,
    );
    let members = discovery.join(Member::new(&spec.id, rogue_addr())).await?;
    log.lock().unwrap().registered = Some(now());

    let mut round = 0;
    while now() < spec.leaves {
        let nodes: Vec<Member> = members
            .borrow()
            .iter()
            .filter(|m| m.id != spec.id)
            .cloned()
            .collect();
        let key = format!("k{}", round % spec.keys);
        for node in &nodes {
            for how in Credential::ALL {
                for rpc in RPCS {
                    // A fresh channel per call: each call is a handshake of its own.
                    let peer = dial::dial(how, node)?;
                    let at = now();
                    let answer = call(&peer, rpc, &key, spec.value_size).await;
                    log.lock().unwrap().calls.push(RogueCall {
                        at,
                        node: node.id.clone(),
                        rpc,
                        how,
                        answer,
                    });
                }
            }
        }
        round += 1;
        tokio::time::sleep(ROUND_EVERY).await;
    }
    discovery.leave().await?;
    log.lock().unwrap().left = Some(now());
    // Keeps listening: a node that still dialled it would be counted.
    std::future::pending().await
}

/// Makes one call of `rpc` about `key` with forged data.
async fn call(peer: &PeerRef, rpc: &str, key: &str, value_size: usize) -> Answer {
    let forged = value_of(key, FORGED_VERSION, value_size);
    let result = match rpc {
        "get" => peer.get(GROUP, key, CALL_DEADLINE).await.map(drop),
        "set" => peer
            .set(GROUP, key, forged, None, CALL_DEADLINE)
            .await
            .map(drop),
        "remove" => peer.remove(GROUP, key, CALL_DEADLINE).await.map(drop),
        "peek" => peer
            .peek(GROUP, key, ROGUE_HOST, CALL_DEADLINE)
            .await
            .map(drop),
        "push" => {
            let entry = peercache::peer::Fetched {
                value: forged,
                version: FORGED_VERSION,
                expires_in: None,
                hot: false,
                packed: None,
            };
            let entries = vec![(key.to_owned(), entry)];
            peer.push(GROUP, entries, CALL_DEADLINE).await.map(drop)
        }
        _ => {
            peer.invalidate(GROUP, key, FORGED_VERSION, CALL_DEADLINE)
                .await
        }
    };
    match result {
        Ok(()) => Answer::Served,
        Err(PeerFailure::Answered(e)) => Answer::Refused(e.to_string()),
        Err(PeerFailure::Unreachable(why)) => Answer::Unreachable(why),
    }
}
