//! glommio 0.9 decides once per device whether it supports polled I/O, by reading the
//! first block of the first direct-I/O file opened there. A brand-new segment would make
//! that probe read nothing, glommio would record "pollable", and every direct write to
//! the device would then fail with EOPNOTSUPP. This test is its own binary so that the
//! segment it creates is the first direct-I/O file this process opens.

use std::path::PathBuf;

use glommio::{LocalExecutorBuilder, Placement};
use ringkeeper_storage::log::{LogOptions, LogWriter};
use ringkeeper_storage::record::encode_record;
use ringkeeper_storage::recover::replay_log;

#[test]
fn a_new_segment_is_the_first_direct_io_file_and_still_works() {
    // On the build's own disk, not /tmp: the bug needs a real block device.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dma-first-open");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut log = LogWriter::create(
                &d,
                1,
                LogOptions {
                    prealloc_bytes: 1 << 20,
                    force_sync: true,
                },
            )
            .await
            .expect("create segment");
            for z in 1..=50i64 {
                let mut rec = Vec::new();
                encode_record(&mut rec, z, &z.to_be_bytes().repeat(40));
                log.append(&rec, z).await.expect("direct write");
            }
            // A direct read of the same file through glommio must work too.
            let f = glommio::io::DmaFile::open(log.segment_path())
                .await
                .unwrap();
            let r = f.read_at(0, 4096).await.expect("direct read");
            assert_eq!(&r[..8], b"RKTXNLOG");
        })
        .unwrap()
        .join()
        .unwrap();
    let mut seen = Vec::new();
    replay_log(&dir, 0, |z, p| {
        assert_eq!(p, z.to_be_bytes().repeat(40));
        seen.push(z);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}
