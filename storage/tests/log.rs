//! The log writer, group commit and recovery against real files.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};
use ringkeeper_storage::group::GroupCommit;
use ringkeeper_storage::log::{LogOptions, LogWriter};
use ringkeeper_storage::notify::Notify;
use ringkeeper_storage::record::encode_record;
use ringkeeper_storage::recover::{replay_log, LogEnd, RecoveryError};

fn test_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("log-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(prealloc: u64) -> LogOptions {
    LogOptions {
        prealloc_bytes: prealloc,
        force_sync: true,
    }
}

fn on_executor<R, F, Fut>(f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn payload(z: i64) -> Vec<u8> {
    format!("txn-{z}-")
        .repeat((z % 7 + 1) as usize)
        .into_bytes()
}

/// Writes zxids 1..=n in batches of `per` records; returns each batch's zxid range.
fn write_batches(dir: &Path, n: i64, per: i64, prealloc: u64) -> Vec<(i64, i64)> {
    let d = dir.to_path_buf();
    on_executor(move || async move {
        let mut log = LogWriter::create(&d, 1, opts(prealloc)).await.unwrap();
        let mut batches = Vec::new();
        let mut z = 1;
        while z <= n {
            let last = (z + per - 1).min(n);
            let mut b = Vec::new();
            for x in z..=last {
                encode_record(&mut b, x, &payload(x));
            }
            log.append(&b, z).await.unwrap();
            batches.push((z, last));
            z = last + 1;
        }
        batches
    })
}

/// Batch markers of `payload_len` (16: plain, 24: a write that overlapped the one
/// before it) in a segment's bytes.
fn count_markers(seg: &[u8], payload_len: u8) -> usize {
    seg.windows(16)
        .filter(|w| w[..4] == [0, 0, 0, payload_len] && w[8..16] == (-1i64).to_be_bytes())
        .count()
}

fn framed(zxids: std::ops::RangeInclusive<i64>) -> Vec<u8> {
    let mut b = Vec::new();
    for x in zxids {
        encode_record(&mut b, x, &payload(x));
    }
    b
}

fn recover(dir: &Path, after: i64) -> Result<(Vec<i64>, LogEnd), RecoveryError> {
    let mut seen = Vec::new();
    let end = replay_log(dir, after, |z, p| {
        assert_eq!(p, payload(z), "payload of {z}");
        seen.push(z);
        Ok(())
    })?;
    Ok((seen, end))
}

#[test]
fn group_commit_batches_many_writers_into_few_fsyncs() {
    let dir = test_dir("group");
    let d = dir.clone();
    let (writers, per_writer) = on_executor(move || async move {
        let writers = 64i64;
        let per_writer = 20i64;
        let log = LogWriter::create(&d, 1, opts(8 << 20)).await.unwrap();
        struct Done {
            flag: Cell<bool>,
            notify: Notify,
        }
        let q = GroupCommit::<Rc<Done>>::new(0);
        let next_zxid = Rc::new(Cell::new(1i64));
        glommio::spawn_local(q.clone().run(log, |items, err| async move {
            assert!(err.is_none());
            for d in items {
                d.flag.set(true);
                d.notify.notify();
            }
            true
        }))
        .detach();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let q = q.clone();
            let next_zxid = next_zxid.clone();
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..per_writer {
                    let done = Rc::new(Done {
                        flag: Cell::new(false),
                        notify: Notify::default(),
                    });
                    let z = next_zxid.get();
                    next_zxid.set(z + 1);
                    q.push_record(z, &payload(z), done.clone());
                    while !done.flag.get() {
                        done.notify.wait().await;
                    }
                    assert!(q.durable_zxid().load(std::sync::atomic::Ordering::Acquire) >= z);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        (writers, per_writer)
    });
    let (seen, _) = recover(&dir, 0).unwrap();
    let total = writers * per_writer;
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    // Every write opens with a batch marker: count them to get the number of fsyncs.
    let seg = std::fs::read(dir.join("log.0000000000000001")).unwrap();
    let writes = (count_markers(&seg, 16) + count_markers(&seg, 24)) as u64;
    assert!(
        writes * 8 <= total as u64,
        "{writes} writes for {total} records: group commit is not batching"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch queued while a write is in flight starts a second write at once; batches
/// are still released in order, each after it and every one before it are durable.
#[test]
fn a_batch_queued_during_a_write_starts_a_second_write_released_in_order() {
    let dir = test_dir("second-write");
    let d = dir.clone();
    let overlapped = on_executor(move || async move {
        let log = LogWriter::create(&d, 1, opts(8 << 20)).await.unwrap();
        let q = GroupCommit::<i64>::new(0);
        let released = Rc::new(std::cell::RefCell::new(Vec::new()));
        let woken = Rc::new(Notify::default());
        let durable = q.durable_zxid();
        let (r, w) = (released.clone(), woken.clone());
        glommio::spawn_local(q.clone().run(log, move |items, err| {
            assert!(err.is_none());
            for z in &items {
                assert!(durable.load(std::sync::atomic::Ordering::Acquire) >= *z);
            }
            r.borrow_mut().extend(items);
            w.notify();
            async { true }
        }))
        .detach();
        let done = |z: i64| released.borrow().last() == Some(&z);
        let mut overlapped = 0;
        let mut z = 1;
        for _ in 0..50 {
            q.push_record(z, &payload(z), z);
            // Lets the log task take the batch and start its write.
            futures_lite::future::yield_now().await;
            let first_done = done(z);
            q.push_record(z + 1, &payload(z + 1), z + 1);
            futures_lite::future::yield_now().await;
            // The second write starts unless the first was released already.
            let both = q.writes_in_flight() == 2;
            assert!(both || first_done || done(z), "round {z}");
            overlapped += both as usize;
            while !done(z + 1) {
                woken.wait().await;
            }
            z += 2;
        }
        assert_eq!(*released.borrow(), (1..z).collect::<Vec<_>>());
        overlapped
    });
    let (seen, _) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    let seg = std::fs::read(dir.join("log.0000000000000001")).unwrap();
    assert_eq!(count_markers(&seg, 24), overlapped);
    assert!(
        overlapped > 0,
        "no second write ever started while one was in flight"
    );
    // A leader reading the log back for a learner steps over the padding too.
    let range = ringkeeper_storage::transfer::read_log_range(&dir, 10, 100).unwrap();
    let span = ringkeeper_storage::transfer::check_records(&range, 10)
        .unwrap()
        .unwrap();
    assert_eq!((span.first, span.last, span.count), (11, 100, 90));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two writes in flight, the second behind the first: a crash may land either without
/// the other. Recovery keeps what the landed prefix holds, zeroes whatever lies after
/// it, and the log continues from there.
#[test]
fn a_crash_between_two_writes_in_flight_keeps_the_prefix_and_zeroes_the_rest() {
    let dir = test_dir("two-in-flight");
    let seg = dir.join("log.0000000000000001");
    let d = dir.clone();
    let (before, a_start, a_end) = on_executor(move || async move {
        let mut log = LogWriter::create(&d, 1, opts(1 << 20)).await.unwrap();
        log.append(&framed(1..=3), 1).await.unwrap();
        let before = std::fs::read(d.join("log.0000000000000001")).unwrap();
        let a_start = log.position();
        let a = log.start_append(&framed(4..=400), 4, false);
        let a_end = log.position();
        let b = log.start_append(&framed(401..=600), 401, true);
        let (ra, rb) = futures_lite::future::zip(a, b).await;
        ra.unwrap();
        rb.unwrap();
        (before, a_start as usize, a_end as usize)
    });
    let landed = std::fs::read(&seg).unwrap();
    let block = 4096;
    let b_start = a_end.next_multiple_of(block);
    assert!(
        a_end % block != 0,
        "the test wants padding between the writes"
    );
    assert_eq!(count_markers(&landed[b_start..b_start + 16], 24), 1);
    assert!(landed[a_end..b_start].iter().all(|b| *b == 0));
    let (seen, _) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=600).collect::<Vec<_>>());

    let b_end = landed.iter().rposition(|b| *b != 0).unwrap() + 1;
    let a_blocks = a_start - a_start % block..b_start;
    // (image, zxids recovery must find)
    let mut only_b = landed.clone();
    only_b[a_blocks.clone()].copy_from_slice(&before[a_blocks.clone()]);
    let mut only_a = landed.clone();
    only_a[b_start..b_end].fill(0);
    let mut a_torn = landed.clone();
    a_torn[a_blocks.start + block..a_blocks.start + 2 * block].fill(0);
    for (name, image, upto) in [("only B", only_b, 3), ("only A", only_a, 400)] {
        std::fs::write(&seg, &image).unwrap();
        let (seen, end) = recover(&dir, 0).unwrap();
        assert_eq!(seen, (1..=upto).collect::<Vec<_>>(), "{name}");
        let after = std::fs::read(&seg).unwrap();
        let (_, off) = end.segment.clone().unwrap();
        assert!(
            after[off as usize..].iter().all(|b| *b == 0),
            "{name}: not zeroed after the end"
        );
        // The log continues after what survived.
        let d = dir.clone();
        on_executor(move || async move {
            let (path, off) = end.segment.unwrap();
            let mut log = LogWriter::resume(&d, &path, off, opts(1 << 20))
                .await
                .unwrap();
            log.append(&framed(upto + 1..=upto + 5), upto + 1)
                .await
                .unwrap();
        });
        let (again, _) = recover(&dir, 0).unwrap();
        assert_eq!(again, (1..=upto + 5).collect::<Vec<_>>(), "{name}");
    }
    // The first write torn in its middle, the second landed: a prefix of the first.
    std::fs::write(&seg, &a_torn).unwrap();
    let (seen, _) = recover(&dir, 0).unwrap();
    assert!(seen.len() >= 3 && seen.len() < 400, "{}", seen.len());
    assert_eq!(seen, (1..=seen.len() as i64).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn segments_roll_over_and_recovery_reads_across_them() {
    let dir = test_dir("roll");
    write_batches(&dir, 600, 7, 4 << 10);
    let segs = ringkeeper_storage::segment::list_segments(&dir).unwrap();
    assert!(segs.len() > 3, "expected roll-over, got {segs:?}");
    let (seen, end) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=600).collect::<Vec<_>>());
    assert_eq!(end.last_zxid, 600);
    // From a later snapshot point only the tail is replayed.
    let (seen, _) = recover(&dir, 450).unwrap();
    assert_eq!(seen, (451..=600).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Damage anywhere in the last write: recovery keeps the longest valid prefix, zeroes
/// the rest, and the log continues from there.
#[test]
fn torn_last_writes_recover_the_longest_valid_prefix_and_continue() {
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..30 {
        let dir = test_dir(&format!("torn-{round}"));
        let batches = write_batches(&dir, 40, 5, 1 << 20);
        let seg = dir.join("log.0000000000000001");
        let mut bytes = std::fs::read(&seg).unwrap();
        let (recs, _) = recover(&dir, 0).unwrap();
        assert_eq!(recs.len(), 40);
        // Find where the last write starts: the last batch marker.
        let marker_at = (0..bytes.len() - 16)
            .rev()
            .find(|&o| {
                bytes[o..o + 4] == [0, 0, 0, 16] && bytes[o + 8..o + 16] == (-1i64).to_be_bytes()
            })
            .unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        let at = marker_at + (next() as usize % (end - marker_at));
        if round % 2 == 0 {
            bytes[at] ^= 1 << (next() % 8);
        } else {
            let len = 1 + next() as usize % (end - at);
            bytes[at..at + len].fill(0);
        }
        std::fs::write(&seg, &bytes).unwrap();
        let (seen, log_end) = recover(&dir, 0).unwrap();
        let first_of_last = batches.last().unwrap().0;
        assert!(seen.len() as i64 >= first_of_last - 1, "round {round}");
        assert_eq!(seen, (1..=seen.len() as i64).collect::<Vec<_>>());
        // The writer resumes at the recovered end; new records follow the survivors.
        let (path, off) = log_end.segment.clone().unwrap();
        let resume_from = log_end.last_zxid + 1;
        let d = dir.clone();
        on_executor(move || async move {
            let mut log = LogWriter::resume(&d, &path, off, opts(1 << 20))
                .await
                .unwrap();
            let mut b = Vec::new();
            for x in resume_from..resume_from + 3 {
                encode_record(&mut b, x, &payload(x));
            }
            log.append(&b, resume_from).await.unwrap();
        });
        let (again, _) = recover(&dir, 0).unwrap();
        assert_eq!(
            again,
            (1..resume_from + 3).collect::<Vec<_>>(),
            "round {round}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn damage_before_the_last_write_stops_recovery_naming_file_and_offset() {
    let dir = test_dir("corrupt");
    write_batches(&dir, 40, 5, 1 << 20);
    let seg = dir.join("log.0000000000000001");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[200] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let e = recover(&dir, 0).expect_err("corruption must stop recovery");
    let msg = e.to_string();
    assert!(msg.contains("log.0000000000000001"), "{msg}");
    assert!(msg.contains("offset"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_segment_is_a_zxid_gap() {
    let dir = test_dir("gap");
    write_batches(&dir, 600, 7, 4 << 10);
    let segs = ringkeeper_storage::segment::list_segments(&dir).unwrap();
    std::fs::remove_file(&segs[1].1).unwrap();
    let msg = recover(&dir, 0).expect_err("gap").to_string();
    assert!(msg.contains("zxid gap"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Recovery skips the unwritten (hole) part of a preallocated segment, but data beyond
/// a hole (blocks of a torn write that landed out of order) is still looked at.
#[test]
fn data_after_unwritten_space_is_not_skipped() {
    use std::os::unix::fs::FileExt;
    let dir = test_dir("hole");
    write_batches(&dir, 20, 4, 1 << 20);
    let seg = dir.join("log.0000000000000001");
    // Stray bytes far beyond the written part: a torn write's block. Nothing valid
    // follows them, so they are a torn tail, and get zeroed.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xAB; 100], 600 << 10).unwrap();
    f.sync_all().unwrap();
    let (seen, end) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    let stray = std::fs::read(&seg).unwrap();
    assert!(stray[600 << 10..(600 << 10) + 100].iter().all(|b| *b == 0));
    assert_eq!(end.last_zxid, 20);
    // A whole later write (batch marker and records) beyond a gap is corruption: the
    // gap lost an acknowledged write.
    let mut later = Vec::new();
    let mut recs = Vec::new();
    encode_record(&mut recs, 30, &payload(30));
    ringkeeper_storage::record::encode_batch_marker(&mut later, recs.len() as u64, 30);
    later.extend_from_slice(&recs);
    f.write_all_at(&[0x11; 10], end.segment.as_ref().unwrap().1)
        .unwrap();
    f.write_all_at(&later, 700 << 10).unwrap();
    f.sync_all().unwrap();
    let msg = recover(&dir, 0)
        .expect_err("a later write after damage")
        .to_string();
    assert!(msg.contains("offset"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A crash while a segment is being made leaves only its temp file, which recovery
/// does not read (a crash test once left an empty `log.<zxid>` and start-up refused).
#[test]
fn a_half_made_segment_is_never_under_its_final_name() {
    let dir = test_dir("half-made");
    write_batches(&dir, 10, 3, 1 << 20);
    std::fs::write(dir.join("log.000000000000000b.tmp"), b"").unwrap();
    let (seen, end) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    assert!(end.segment.unwrap().0.ends_with("log.0000000000000001"));
    // Making the next segment over a stale temp file works.
    let path = ringkeeper_storage::segment::create_segment(&dir, 11, 1 << 16).unwrap();
    assert!(path.ends_with("log.000000000000000b"));
    assert!(!dir.join("log.000000000000000b.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncation_cuts_mid_batch_and_across_segments_and_the_log_continues_after_it() {
    use ringkeeper_storage::recover::{remove_log, truncate_log_after};
    let dir = test_dir("truncate");
    // Small segments: 200 records in batches of 7 roll over several times.
    write_batches(&dir, 200, 7, 4 << 10);
    let segments = ringkeeper_storage::segment::list_segments(&dir).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    // 60 is inside a batch (57..=63) of a segment that is not the last.
    let dropped = truncate_log_after(&dir, 60).unwrap();
    assert_eq!(dropped, 140);
    let (seen, end) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=60).collect::<Vec<_>>());
    assert_eq!(end.last_zxid, 60);
    // A writer resumes where recovery ended; the next records follow 60.
    let (path, at) = end.segment.clone().unwrap();
    let d = dir.clone();
    on_executor(move || async move {
        let mut log = LogWriter::resume(&d, &path, at, opts(4 << 10))
            .await
            .unwrap();
        let mut b = Vec::new();
        for x in 61..=65 {
            encode_record(&mut b, x, &payload(x));
        }
        log.append(&b, 61).await.unwrap();
    });
    let (seen, _) = recover(&dir, 0).unwrap();
    assert_eq!(seen, (1..=65).collect::<Vec<_>>());
    // Truncating to what is already the end changes nothing.
    assert_eq!(truncate_log_after(&dir, 65).unwrap(), 0);
    assert_eq!(recover(&dir, 0).unwrap().0.len(), 65);
    assert!(remove_log(&dir).unwrap() > 0);
    assert_eq!(recover(&dir, 0).unwrap().0, Vec::<i64>::new());
}
