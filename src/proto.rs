//! Generated protocols: peers (proto/peercache/v1/peer.proto) and the discovery registry
//! (proto/peercache/v1/registry.proto).

#![allow(missing_docs)]
#![allow(clippy::all)]

tonic::include_proto!("peercache.v1");
