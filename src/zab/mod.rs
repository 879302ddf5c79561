//! Zab, ZooKeeper's atomic broadcast, between ringkeeper and Apache ZooKeeper members.
//!
//! `wire` is the quorum protocol's codecs, byte for byte as ZooKeeper 3.8 speaks it.
//! The protocol itself (election, discovery, synchronization, broadcast) is to be a
//! sans-IO state machine beside it; the peer transport lives at the edge, with the
//! shards' socket code.

pub mod wire;
