//! Values of `peercache serve`'s flags that clap cannot check alone: group specs, the
//! static member list with weights, weights within the ring's cap, and an address peers
//! can dial. (A module of the binary, not of the library.)

use std::net::SocketAddr;

use peercache::ring::{MAX_WEIGHT, Member};

/// A group to serve: `NAME[:CAPACITY]`, e.g. `demo:64MiB`.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    pub name: String,
    pub capacity: Option<u64>,
}

impl std::str::FromStr for GroupSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, capacity) = match s.split_once(':') {
            Some((name, cap)) => {
                let cap = parse_size::parse_size(cap)
                    .map_err(|e| format!("group capacity {cap:?}: {e}"))?;
                (name, Some(cap))
            }
            None => (s, None),
        };
        if name.is_empty() {
            return Err(format!("group {s:?} has no name"));
        }
        Ok(GroupSpec {
            name: name.to_owned(),
            capacity,
        })
    }
}

/// A weight from 1 to the ring's cap: a larger one would be cut down without a word.
pub fn weight(s: &str) -> Result<u32, String> {
    let w: u32 = s
        .parse()
        .map_err(|_| format!("weight {s:?} is not a whole number"))?;
    match w {
        0 => Err("weight must be at least 1".to_owned()),
        w if w > MAX_WEIGHT => Err(format!("weight {w} is above the cap of {MAX_WEIGHT}")),
        w => Ok(w),
    }
}

/// A member of a static list: `ADDR[=WEIGHT]`, the gRPC address doubling as its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub addr: String,
    pub weight: u32,
}

impl std::str::FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, weight) = match s.rsplit_once('=') {
            Some((addr, w)) => (addr, weight(w).map_err(|e| format!("peer {s:?}: {e}"))?),
            None => (s, 1),
        };
        if addr.is_empty() {
            return Err(format!("peer {s:?} has no address"));
        }
        Ok(PeerSpec {
            addr: addr.to_owned(),
            weight,
        })
    }
}

impl From<&PeerSpec> for Member {
    fn from(p: &PeerSpec) -> Member {
        Member::new(&p.addr, &p.addr).with_weight(p.weight)
    }
}

/// Refuses an advertised address other nodes cannot dial: a wildcard such as `0.0.0.0`
/// or `[::]` (which on most hosts reaches the dialler itself), or port 0.
pub fn dialable(addr: &str) -> Result<(), String> {
    let Ok(sock) = addr.parse::<SocketAddr>() else {
        return Ok(()); // A host name: the resolver's business.
    };
    if sock.ip().is_unspecified() || sock.port() == 0 {
        return Err(format!(
            "{addr} cannot be dialled by other nodes (a wildcard address or port 0)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_refused_outside_one_to_the_cap() {
        assert_eq!(weight("1"), Ok(1));
        assert_eq!(weight(&MAX_WEIGHT.to_string()), Ok(MAX_WEIGHT));
        let over = weight(&(MAX_WEIGHT + 1).to_string()).unwrap_err();
        assert!(over.contains(&format!("cap of {MAX_WEIGHT}")), "{over}");
        assert!(weight("0").unwrap_err().contains("at least 1"));
        assert!(weight("-1").is_err());
    }

    #[test]
    fn peers_take_an_optional_weight() {
        let peer = |s: &str| s.parse::<PeerSpec>();
        assert_eq!(
            peer("127.0.0.1:7001=3"),
            Ok(PeerSpec {
                addr: "127.0.0.1:7001".into(),
                weight: 3
            })
        );
        assert_eq!(peer("node1:7001").map(|p| p.weight), Ok(1));
        for bad in ["=3", "a:1=0", "a:1=x", "a:1=1001"] {
            assert!(peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_addresses_are_not_dialable() {
        for bad in ["0.0.0.0:7001", "[::]:7001", "127.0.0.1:0"] {
            assert!(
                dialable(bad).unwrap_err().contains("cannot be dialled"),
                "{bad}"
            );
        }
        for good in ["127.0.0.1:7001", "[::1]:7001", "node1:7001"] {
            assert_eq!(dialable(good), Ok(()), "{good}");
        }
    }
}
