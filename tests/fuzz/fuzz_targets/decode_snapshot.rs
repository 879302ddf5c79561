//! Any bytes as a snapshot file, resealed (checksums recomputed) so that the damage
//! reaches the structural checks: opening refuses it with an error, or the tree it
//! holds can be walked, looked up and written back without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkeeper::tree::DataTree;
use ringkeeper_storage::snapshot::{reseal, Snapshot};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    reseal(&mut bytes);
    // A tmpfs, where the writer's fsync costs nothing.
    let dir = std::path::Path::new("/dev/shm").join(format!("rk-fuzz-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("snapshot.0000000000000001");
    std::fs::write(&file, &bytes).unwrap();
    let Ok(snap) = Snapshot::open(&file) else {
        return;
    };
    let Ok((tree, _sessions)) = DataTree::from_snapshot(snap) else {
        return;
    };
    let mut paths = Vec::new();
    let _ = tree.for_each_node(|p, n| -> Result<(), ()> {
        let _ = (n.stat(), n.data(), n.acl().len(), n.children().count());
        paths.push(p.to_string());
        Ok(())
    });
    for p in &paths {
        let _ = tree.node(p).map(|n| n.child_count());
        let _ = tree.descendant_count(p);
    }
    let _ = tree.write_snapshot(&[], &dir, || false);
});
