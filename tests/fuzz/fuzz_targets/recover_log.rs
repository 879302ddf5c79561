//! Any bytes as the body of a txn log segment, with each record's checksum recomputed
//! where its length field fits (so that damage reaches the txn decoding and the tree's
//! replay rules, not only the checksum): start-up recovery refuses it with an error, or
//! recovers a tree that can be walked; and recovering the same directory again (after
//! the first recovery cut off any torn tail) gives the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkeeper::config::Config;
use ringkeeper_storage::record::segment_from_fuzz_input;

fn summary(cfg: &Config) -> Result<(i64, Vec<(String, String)>, usize), String> {
    let r = ringkeeper::recovery::recover(cfg).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    r.tree
        .for_each_node(|p, n| -> Result<(), ()> {
            let _ = (n.data(), n.acl().len(), n.children().count());
            nodes.push((p.to_string(), format!("{:?}", n.stat())));
            Ok(())
        })
        .expect("a walk of a recovered tree");
    nodes.sort();
    Ok((r.tree.last_zxid(), nodes, r.sessions.len()))
}

fuzz_target!(|data: &[u8]| {
    // A tmpfs, where the writes cost nothing.
    let dir = std::path::Path::new("/dev/shm").join(format!("rk-fuzz-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log_dir = dir.join("ringkeeper");
    std::fs::create_dir_all(&log_dir).unwrap();
    let seg = segment_from_fuzz_input(data);
    std::fs::write(log_dir.join("log.0000000000000001"), &seg).unwrap();
    // (tests/fuzz/regressions/recover_log holds the inputs that once crashed this;
    // `recovery::tests` replays them.)
    let mut cfg = Config::default();
    cfg.data_dir = dir.clone();
    let first = summary(&cfg);
    if first.is_ok() {
        assert_eq!(
            summary(&cfg),
            first,
            "a second recovery of the same directory differs"
        );
    }
});
