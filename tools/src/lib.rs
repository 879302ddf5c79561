//! Operator and test tools for ringkeeper. So far: `ringkeeper-wire`, which reads
//! recordings of ZooKeeper quorum traffic (election and learner connections) and
//! prints or checks what was sent, and `ringkeeper-lincheck`, which checks a recorded
//! history of client operations for linearizability. The CLI shell, the txn log and
//! snapshot dumps and the importer for Apache ZooKeeper data directories are still to
//! come.

pub mod history;
