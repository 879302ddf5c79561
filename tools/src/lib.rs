//! Operator tools for ringkeeper: a CLI shell, txn log and snapshot dumps, and an
//! importer for Apache ZooKeeper data directories. None is written yet; the crate
//! exists so the workspace has its fixed layout.
