//! What the server measures and how it is shown: request latency per operation type
//! in HDR histograms kept per shard ([`latency`]), the figures a scrape gathers
//! ([`figures`], shown by `mntr` and the AdminServer), and the Prometheus text
//! format of them ([`prometheus`]).

pub mod figures;
pub mod latency;
pub mod prometheus;
