//! Zab, ZooKeeper's atomic broadcast, between ringkeeper and Apache ZooKeeper members.
//!
//! - `wire`: the quorum protocol's codecs, byte for byte as ZooKeeper 3.8 speaks it.
//! - `election`: fast leader election as a sans-IO state machine (ballots in, ballots
//!   out, time passed in).
//! - `history`: a member's log as Zab sees it (zxids, what is applied, the DIFF /
//!   TRUNC / SNAP choice for a learner).
//! - `leader`, `learner`: discovery, synchronization and broadcast, each side.
//! - `packets`: each message as the QuorumPacket ZooKeeper sends for it, and back.
//! - `peer`: one member: election, then leading or learning, and back; the driver's
//!   whole interface (inputs with the time passed in, [`messages::Effect`]s out).
//! - `replay`: a recorded leader's stream through ringkeeper's learner (checks the
//!   learner against Apache ZooKeeper leaders).
//! - `sim` (tests): election alone under seeded faults; `ensemble_sim` (tests): whole
//!   ensembles of `Peer`s with client writes, crashes, partitions and broken
//!   connections, checked after every step.
//!
//! The peer transport and the driver that runs a `Peer` against the log and the tree
//! live at the edge, with the shards' sockets.

pub mod election;
#[cfg(test)]
mod ensemble_sim;
pub mod history;
mod leader;
pub use leader::LeaderFigures;
mod learner;
pub mod messages;
pub mod packets;
pub mod peer;
pub mod replay;
#[cfg(test)]
mod sim;
pub mod wire;
