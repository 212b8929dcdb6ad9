//! Generated peer protocol (proto/peercache/v1/peer.proto).

#![allow(missing_docs)]
#![allow(clippy::all)]

tonic::include_proto!("peercache.v1");
