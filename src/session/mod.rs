//! Sessions: the global session table kept by the broadcast core (ids, passwords,
//! timeouts, expiry) and each shard's watch registrations.

pub mod table;
pub mod watches;
