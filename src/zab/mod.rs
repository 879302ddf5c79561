//! Zab, ZooKeeper's atomic broadcast, between ringkeeper and Apache ZooKeeper members.
//!
//! - `wire`: the quorum protocol's codecs, byte for byte as ZooKeeper 3.8 speaks it.
//! - `election`: fast leader election as a sans-IO state machine (ballots in, ballots
//!   out, time passed in).
//! - `sim` (tests): a deterministic simulator that runs several members through
//!   seeded faults and checks them after every step.
//!
//! Discovery, synchronization and broadcast are to join `election` as state machines
//! of the same shape; the peer transport lives at the edge, with the shards' sockets.

pub mod election;
#[cfg(test)]
mod sim;
pub mod wire;
