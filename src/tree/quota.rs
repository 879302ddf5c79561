//! Quotas, as ZooKeeper 3.7+ keeps them: a quota on path P is the node
//! `/zookeeper/quota/P/zookeeper_limits` (its data a StatsTrack such as
//! `count=10,bytes=-1,countHardLimit=20,byteHardLimit=-1`), and the server keeps P's
//! usage in `/zookeeper/quota/P/zookeeper_stats` (`count=N,bytes=B`: the nodes of P's
//! subtree, P included, and their data bytes). zkCli's setquota, listquota and
//! delquota are plain creates, reads and deletes of those nodes; the server's part is
//! the usage (computed when the stats node is created, kept up to date on every
//! change inside P, as ZooKeeper's DataTree does) and the limits: past a soft limit
//! (count, bytes) a warning is logged, past a hard one (countHardLimit,
//! byteHardLimit) the write fails with QUOTAEXCEEDED when `zookeeper.enforceQuota`
//! is on (ZooKeeper's PrepRequestProcessor.checkQuota).

use super::QUOTA_PATH;

pub const LIMITS_NODE: &str = "zookeeper_limits";
pub const STATS_NODE: &str = "zookeeper_stats";

/// A StatsTrack: ZooKeeper's `key=value,...` text. -1 (or absent) means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsTrack {
    pub count: i64,
    pub bytes: i64,
    pub count_hard_limit: i64,
    pub byte_hard_limit: i64,
}

impl Default for StatsTrack {
    fn default() -> Self {
        StatsTrack {
            count: -1,
            bytes: -1,
            count_hard_limit: -1,
            byte_hard_limit: -1,
        }
    }
}

impl StatsTrack {
    /// Reads ZooKeeper's text, in both of its spellings: 3.4's `count=1,bytes=2` and
    /// 3.7+'s `count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=4` (what zkCli 3.8
    /// writes, trailing `=` and all). Unknown keys and unparsable values are ignored,
    /// as ZooKeeper's StatsTrack ignores what it does not know.
    pub fn parse(data: &[u8]) -> StatsTrack {
        let mut s = StatsTrack::default();
        let text = String::from_utf8_lossy(data);
        for kv in text.split([',', ';']) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_end_matches('=');
            let Ok(v) = v.parse::<i64>() else {
                continue;
            };
            match k.trim() {
                "count" => s.count = v,
                "bytes" => s.bytes = v,
                "countHardLimit" => s.count_hard_limit = v,
                "byteHardLimit" => s.byte_hard_limit = v,
                _ => {}
            }
        }
        s
    }

    /// A usage, as the stats node holds it.
    pub fn usage_text(count: i64, bytes: i64) -> String {
        format!("count={count},bytes={bytes}")
    }
}

/// The quota node of real path `path` (`/zookeeper/quota` + path).
pub fn quota_dir(path: &str) -> String {
    format!("{QUOTA_PATH}{path}")
}

/// Whether `path` is one the quotas count (not ZooKeeper's own subtree).
pub fn counted(path: &str) -> bool {
    path != "/" && path != "/zookeeper" && !path.starts_with("/zookeeper/")
}

/// If `path` is a stats node, the real path whose usage it holds.
pub fn stats_node_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(QUOTA_PATH)?;
    let real = rest.strip_suffix(STATS_NODE)?.strip_suffix('/')?;
    (!real.is_empty() && real.starts_with('/')).then_some(real)
}

/// The ancestors-or-self of `path`, deepest first, that quotas could be on.
pub fn candidates(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let p = next?;
        if p == "/" || p.is_empty() {
            return None;
        }
        next = p.rfind('/').map(|i| if i == 0 { "/" } else { &p[..i] });
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_tracks_read_both_formats() {
        let old = StatsTrack::parse(b"count=10,bytes=-1");
        assert_eq!((old.count, old.bytes, old.count_hard_limit), (10, -1, -1));
        let new = StatsTrack::parse(b"count=-1,bytes=100,countHardLimit=5,byteHardLimit=1000");
        assert_eq!(
            (
                new.count,
                new.bytes,
                new.count_hard_limit,
                new.byte_hard_limit
            ),
            (-1, 100, 5, 1000)
        );
        let cli = StatsTrack::parse(b"count=-1,bytes=-1=;byteHardLimit=7;countHardLimit=4");
        assert_eq!(
            (
                cli.count,
                cli.bytes,
                cli.count_hard_limit,
                cli.byte_hard_limit
            ),
            (-1, -1, 4, 7)
        );
        assert_eq!(StatsTrack::parse(b"garbage"), StatsTrack::default());
        assert_eq!(StatsTrack::usage_text(3, 12), "count=3,bytes=12");
    }

    #[test]
    fn paths_and_their_quota_nodes() {
        assert_eq!(quota_dir("/a/b"), "/zookeeper/quota/a/b");
        assert_eq!(
            stats_node_of("/zookeeper/quota/a/b/zookeeper_stats"),
            Some("/a/b")
        );
        assert_eq!(stats_node_of("/zookeeper/quota/zookeeper_stats"), None);
        assert_eq!(stats_node_of("/a/zookeeper_stats"), None);
        assert_eq!(
            candidates("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a"]
        );
        assert!(counted("/app") && !counted("/zookeeper/quota/app") && !counted("/"));
    }
}
