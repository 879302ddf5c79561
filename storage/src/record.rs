//! Txn log framing.
//!
//! A segment starts with a [`SegmentHeader`]; records follow back to back:
//!
//! ```text
//! payload_len: u32 BE | crc32c: u32 BE | zxid: i64 BE | payload
//! ```
//!
//! The checksum covers the zxid and the payload. A zero length marks the end of the
//! written part of a preallocated (zero-filled) segment; payloads are never empty.
//! Zxids strictly increase within a segment.
//!
//! Each write of the log (one group commit) starts with a *batch marker*: a record with
//! zxid [`BATCH_MARKER_ZXID`] whose payload is the byte length of the records that follow
//! and the first zxid among them. There are two kinds:
//!
//! - a plain marker ([`BATCH_MARKER_BYTES`]) opens a write started once every earlier
//!   write had returned durable;
//! - an *overlapping* marker ([`OVERLAPPING_BATCH_MARKER_BYTES`]) opens a write started
//!   while the one before it was still in flight. It starts at the next
//!   [`LOG_BLOCK_BYTES`] boundary of the file (so the two never write the same block),
//!   after zero padding whose length it carries. At most two writes are in flight.
//!
//! So a crash can tear the last write, or the last two when the last one overlaps (either
//! may reach the disk without the other, its blocks in any order); neither was
//! acknowledged. Damage followed by a plain marker, or by two markers, lies in a write
//! that had completed before a later one started, and was acknowledged: corruption,
//! stop. Any other damage is a torn tail: truncate.

use std::ops::Range;

use thiserror::Error;

pub const SEGMENT_MAGIC: [u8; 8] = *b"RKTXNLOG";
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 16;
/// Largest payload accepted; a longer length field is damage, not data.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// The zxid field of a batch marker (real zxids are positive).
pub const BATCH_MARKER_ZXID: i64 = -1;
const BATCH_MARKER_PAYLOAD_BYTES: usize = 16;
/// Bytes a batch marker adds to a write.
pub const BATCH_MARKER_BYTES: usize = RECORD_HEADER_BYTES + BATCH_MARKER_PAYLOAD_BYTES;
const OVERLAPPING_BATCH_MARKER_PAYLOAD_BYTES: usize = 24;
/// Bytes an overlapping batch marker adds to a write.
pub const OVERLAPPING_BATCH_MARKER_BYTES: usize =
    RECORD_HEADER_BYTES + OVERLAPPING_BATCH_MARKER_PAYLOAD_BYTES;
/// The block size a write that overlaps the one before it is aligned to, in file
/// offsets (the segment header included).
pub const LOG_BLOCK_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The zxid of the first record the segment was created for.
    pub base_zxid: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("segment shorter than its {SEGMENT_HEADER_BYTES}-byte header")]
    Short,
    #[error("not a ringkeeper txn log segment (bad magic)")]
    BadMagic,
    #[error("segment format version {0} is not supported (expected {SEGMENT_FORMAT_VERSION})")]
    Version(u32),
    #[error("segment header checksum mismatch")]
    Checksum,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_be_bytes());
        b[16..24].copy_from_slice(&self.base_zxid.to_be_bytes());
        let crc = crc32c::crc32c(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Short);
        }
        if b[..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let crc = u32::from_be_bytes([b[24], b[25], b[26], b[27]]);
        if crc != crc32c::crc32c(&b[..24]) {
            return Err(HeaderError::Checksum);
        }
        let mut z = [0u8; 8];
        z.copy_from_slice(&b[16..24]);
        Ok(SegmentHeader {
            base_zxid: i64::from_be_bytes(z),
        })
    }
}

fn record_crc(zxid: i64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&zxid.to_be_bytes()), payload)
}

/// Appends one framed record. The payload MUST NOT be empty.
pub fn encode_record(out: &mut Vec<u8>, zxid: i64, payload: &[u8]) {
    assert!(!payload.is_empty(), "log records carry a non-empty payload");
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "record payload too large"
    );
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&record_crc(zxid, payload).to_be_bytes());
    out.extend_from_slice(&zxid.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends the marker that opens a write of `records_len` bytes of records whose first
/// zxid is `first_zxid`.
pub fn encode_batch_marker(out: &mut Vec<u8>, records_len: u64, first_zxid: i64) {
    let mut p = [0u8; BATCH_MARKER_PAYLOAD_BYTES];
    p[..8].copy_from_slice(&records_len.to_be_bytes());
    p[8..].copy_from_slice(&first_zxid.to_be_bytes());
    encode_record(out, BATCH_MARKER_ZXID, &p);
}

/// Appends the marker that opens a write started while the one before it was still in
/// flight: `padding` zero bytes lie between the end of that write and this marker.
pub fn encode_overlapping_batch_marker(
    out: &mut Vec<u8>,
    records_len: u64,
    first_zxid: i64,
    padding: u64,
) {
    let mut p = [0u8; OVERLAPPING_BATCH_MARKER_PAYLOAD_BYTES];
    p[..8].copy_from_slice(&records_len.to_be_bytes());
    p[8..16].copy_from_slice(&first_zxid.to_be_bytes());
    p[16..].copy_from_slice(&padding.to_be_bytes());
    encode_record(out, BATCH_MARKER_ZXID, &p);
}

/// Recomputes the checksum of every record of a segment body whose length field
/// points inside it, from the start up to the first that does not, so that damage
/// made on purpose reaches the txn decoding (fuzzing and tests only; a server never
/// writes a record this way).
#[doc(hidden)]
pub fn reseal_records(body: &mut [u8]) {
    let mut at = 0;
    while at + RECORD_HEADER_BYTES <= body.len() {
        let len = u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
        let start = at + RECORD_HEADER_BYTES;
        if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX || start + len > body.len() {
            return;
        }
        let zxid = i64::from_be_bytes(body[at + 8..start].try_into().expect("8 bytes"));
        let crc = record_crc(zxid, &body[start..start + len]);
        body[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        at = start + len;
    }
}

/// The segment the `recover_log` fuzz target makes of an input, a header for zxid 1
/// then the input as the body, its checksums resealed when the first byte is odd
/// (that byte dropped); its regression test replays crashes the same way.
#[doc(hidden)]
pub fn segment_from_fuzz_input(input: &[u8]) -> Vec<u8> {
    let mut body = input.to_vec();
    if body.first().is_some_and(|b| b & 1 == 1) {
        body.remove(0);
        reseal_records(&mut body);
    }
    let mut seg = SegmentHeader { base_zxid: 1 }.encode().to_vec();
    seg.extend_from_slice(&body);
    seg
}

/// A valid record found by [`scan`]: its zxid and where its payload lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    pub zxid: i64,
    pub payload: Range<usize>,
}

/// How the records of a segment end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The data ends exactly after a record, or at the zero length of preallocated space.
    Clean,
    /// The last record was only partly written (short, or failing its checksum with
    /// nothing valid after it): truncate the segment at `offset`.
    Torn { offset: usize },
    /// A damaged record with valid records after it, or zxids out of order: recovery
    /// MUST stop here rather than drop acknowledged txns.
    Corrupt { offset: usize, reason: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<RecordRef>,
    /// Bytes of `data` holding valid records: the length to truncate a torn tail to.
    pub valid_len: usize,
    pub end: End,
}

/// A record that checks out at `at`, if any: (zxid, payload range, next offset).
fn record_at(data: &[u8], at: usize) -> Option<(i64, Range<usize>, usize)> {
    let h = data.get(at..at + RECORD_HEADER_BYTES)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let mut z = [0u8; 8];
    z.copy_from_slice(&h[8..16]);
    let zxid = i64::from_be_bytes(z);
    let start = at + RECORD_HEADER_BYTES;
    let payload = data.get(start..start + len)?;
    (record_crc(zxid, payload) == crc).then_some((zxid, start..start + len, start + len))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Plain,
    /// Opens a write started while the one before was in flight, after `padding`
    /// zero bytes.
    Overlapping {
        padding: u64,
    },
}

/// The valid batch marker that starts at `at`, if any (its fixed header fields are
/// checked before the checksum, so scanning garbage for markers stays linear).
fn batch_marker_at(data: &[u8], at: usize) -> Option<Marker> {
    let h = data.get(at..at + RECORD_HEADER_BYTES)?;
    if h[8..16] != BATCH_MARKER_ZXID.to_be_bytes() {
        return None;
    }
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len != BATCH_MARKER_PAYLOAD_BYTES && len != OVERLAPPING_BATCH_MARKER_PAYLOAD_BYTES {
        return None;
    }
    let (_, payload, _) = record_at(data, at)?;
    Some(if len == BATCH_MARKER_PAYLOAD_BYTES {
        Marker::Plain
    } else {
        let p = &data[payload];
        Marker::Overlapping {
            padding: u64::from_be_bytes(p[16..24].try_into().expect("8 bytes")),
        }
    })
}

/// Where the padding that starts at `at` (an offset in the segment's body, the bytes
/// after its header) ends: the next block boundary of
/// the file, if an overlapping marker starts there that says its padding begins exactly
/// at `at` and all of it is zeros.
pub fn padding_end(data: &[u8], at: usize) -> Option<usize> {
    let file_at = at + SEGMENT_HEADER_BYTES;
    let next = file_at.next_multiple_of(LOG_BLOCK_BYTES) - SEGMENT_HEADER_BYTES;
    if next == at || !data.get(at..next)?.iter().all(|b| *b == 0) {
        return None;
    }
    match batch_marker_at(data, next)? {
        Marker::Overlapping { padding } if padding == (next - at) as u64 => Some(next),
        _ => None,
    }
}

/// Whether damage at `at` can be a torn tail: no write started after the damaged one
/// had completed. No valid marker after it; or one, overlapping (its write was started
/// while the damaged one was in flight, and no later write started at all).
fn torn_tail_at(data: &[u8], at: usize) -> bool {
    let mut later = (at + 1..data.len()).filter_map(|o| batch_marker_at(data, o).map(|m| (o, m)));
    match later.next() {
        None => true,
        Some((_, Marker::Plain)) => false,
        Some((_, Marker::Overlapping { .. })) => later.next().is_none(),
    }
}

/// Where the records of a segment body end: the length holding valid records, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Bytes of `data` holding valid records: the length to truncate a torn tail to.
    pub valid_len: usize,
    pub end: End,
}

/// Reads the records of a segment body (the bytes after its header).
///
/// Stops at the first record that does not check out and decides whether it is a torn
/// tail (safe to truncate) or corruption (refuse): see the module's account. Batch
/// markers and the padding before overlapping ones are not returned.
pub fn scan(data: &[u8]) -> Scan {
    let mut records = Vec::new();
    let Ok(end) = scan_each(data, |r| {
        records.push(r);
        Ok::<(), std::convert::Infallible>(())
    });
    Scan {
        records,
        valid_len: end.valid_len,
        end: end.end,
    }
}

/// As [`scan`], handing each record to `each` as it is read instead of collecting them
/// (a recovery reads segments of hundreds of thousands of records). The first error
/// `each` returns ends the scan and is returned.
pub fn scan_each<E>(
    data: &[u8],
    mut each: impl FnMut(RecordRef) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let mut at = 0;
    let mut last_zxid = i64::MIN;
    let stop = |at: usize, end: End| Ok(ScanEnd { valid_len: at, end });
    loop {
        if at == data.len() {
            return stop(at, End::Clean);
        }
        // Only zeros left (possibly fewer than a header's worth, when a segment was
        // filled to within a few bytes of its end): the clean end of the written part.
        // A real record's length field has a non-zero byte within its first four, so
        // this check stops there for every record.
        let rest = &data[at..];
        if rest.iter().all(|b| *b == 0) {
            return stop(at, End::Clean);
        }
        match record_at(data, at) {
            Some((BATCH_MARKER_ZXID, _, next)) => at = next,
            Some((zxid, payload, next)) => {
                if zxid <= last_zxid {
                    return stop(
                        at,
                        End::Corrupt {
                            offset: at,
                            reason: "zxid not above the previous record's",
                        },
                    );
                }
                last_zxid = zxid;
                each(RecordRef { zxid, payload })?;
                at = next;
            }
            None => {
                if let Some(next) = padding_end(data, at) {
                    at = next;
                    continue;
                }
                let end = if torn_tail_at(data, at) {
                    End::Torn { offset: at }
                } else {
                    End::Corrupt {
                        offset: at,
                        reason: "damaged record followed by later writes",
                    }
                };
                return stop(at, end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames `payloads` (zxids from 100) as writes of `per_batch` records each, as the
    /// log writer does. Returns the bytes, each record's end offset, and the index of
    /// the first record of the last batch.
    fn log_in_batches(payloads: &[Vec<u8>], per_batch: usize) -> (Vec<u8>, Vec<usize>, usize) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let mut last_batch = 0;
        for (b, chunk) in payloads.chunks(per_batch).enumerate() {
            last_batch = b * per_batch;
            let mut recs = Vec::new();
            let mut rel_ends = Vec::new();
            for (i, p) in chunk.iter().enumerate() {
                encode_record(&mut recs, 100 + (b * per_batch + i) as i64, p);
                rel_ends.push(recs.len());
            }
            encode_batch_marker(&mut out, recs.len() as u64, 100 + last_batch as i64);
            let base = out.len();
            out.extend_from_slice(&recs);
            ends.extend(rel_ends.into_iter().map(|e| base + e));
        }
        (out, ends, last_batch)
    }

    fn log(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let (out, ends, _) = log_in_batches(payloads, 1);
        (out, ends)
    }

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..20)
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            base_zxid: 0x1_0000_0005,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::Checksum));
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::Short));
        let mut v = h.encode();
        v[11] = 9;
        assert_eq!(SegmentHeader::decode(&v), Err(HeaderError::Version(9)));
    }

    #[test]
    fn a_segment_filled_to_within_a_header_of_its_end_ends_cleanly() {
        let (mut data, _) = log(&[b"a".to_vec()]);
        let valid = data.len();
        data.extend_from_slice(&[0, 0, 0]);
        let s = scan(&data);
        assert_eq!(
            (s.records.len(), s.valid_len, s.end),
            (1, valid, End::Clean)
        );
        data[valid + 2] = 7;
        assert_eq!(scan(&data).end, End::Torn { offset: valid });
    }

    #[test]
    fn preallocated_zeros_end_the_log_cleanly() {
        let (mut data, _) = log(&[b"a".to_vec(), b"bc".to_vec()]);
        let valid = data.len();
        data.resize(valid + 4096, 0);
        let s = scan(&data);
        assert_eq!(
            (s.records.len(), s.valid_len, s.end),
            (2, valid, End::Clean)
        );
    }

    /// A log as the writer lays it out when some writes start while the one before
    /// is in flight: `payloads` in batches of `per` (zxids from 100), batch `i`
    /// overlapping the one before when `overlap(i)` (for i > 0). Returns the body, each
    /// record's end, each batch's first record index and where its marker starts. The
    /// padding before an overlapping marker is the rest of the last block of the batch
    /// before it, written (as zeros) by that batch's write.
    struct Laid {
        data: Vec<u8>,
        ends: Vec<usize>,
        batch_first: Vec<usize>,
        batch_start: Vec<usize>,
        overlapping: Vec<bool>,
    }

    fn lay_out(payloads: &[Vec<u8>], per: usize, overlap: &[bool]) -> Laid {
        let mut l = Laid {
            data: Vec::new(),
            ends: Vec::new(),
            batch_first: Vec::new(),
            batch_start: Vec::new(),
            overlapping: Vec::new(),
        };
        for (b, chunk) in payloads.chunks(per).enumerate() {
            let first = b * per;
            let behind = b > 0 && overlap[b % overlap.len()];
            l.batch_first.push(first);
            l.overlapping.push(behind);
            let mut recs = Vec::new();
            let mut rel_ends = Vec::new();
            for (i, p) in chunk.iter().enumerate() {
                encode_record(&mut recs, 100 + (first + i) as i64, p);
                rel_ends.push(recs.len());
            }
            if behind {
                let file_at = l.data.len() + SEGMENT_HEADER_BYTES;
                let pad = file_at.next_multiple_of(LOG_BLOCK_BYTES) - file_at;
                l.data.resize(l.data.len() + pad, 0);
                l.batch_start.push(l.data.len());
                encode_overlapping_batch_marker(
                    &mut l.data,
                    recs.len() as u64,
                    100 + first as i64,
                    pad as u64,
                );
            } else {
                l.batch_start.push(l.data.len());
                encode_batch_marker(&mut l.data, recs.len() as u64, 100 + first as i64);
            }
            let base = l.data.len();
            l.data.extend_from_slice(&recs);
            l.ends.extend(rel_ends.into_iter().map(|e| base + e));
        }
        l
    }

    impl Laid {
        /// The batches a crash may have torn: the last, and the one before it too when
        /// the last overlaps it. Every batch before them was acknowledged.
        fn first_in_flight(&self) -> usize {
            let n = self.batch_first.len();
            if n >= 2 && self.overlapping[n - 1] {
                n - 2
            } else {
                n - 1
            }
        }

        fn batch_of_offset(&self, at: usize) -> usize {
            self.batch_start
                .iter()
                .rposition(|s| *s <= at)
                .expect("a batch")
        }
    }

    fn large_payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..1500), 1..24)
    }

    #[test]
    fn padding_before_an_overlapping_write_is_skipped_only_where_its_marker_says() {
        let ps: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8 + 1; 700]).collect();
        let l = lay_out(&ps, 2, &[true]);
        let s = scan(&l.data);
        assert_eq!((s.records.len(), &s.end), (6, &End::Clean));
        // Batch 1 (records 2, 3) never reached the disk, batch 2 did: batch 2's marker
        // names padding that starts where batch 1 ended, not where batch 0 did, so
        // the scan stops after batch 0 and calls it torn.
        let mut lost = l.data.clone();
        lost[l.batch_start[1]..l.batch_start[2]].fill(0);
        let s = scan(&lost);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.end, End::Torn { offset: l.ends[1] });
    }

    proptest! {
        /// Writes that overlap the one before them read back whole, padding skipped.
        #[test]
        fn overlapping_writes_round_trip(ps in large_payloads(), per in 1usize..5, overlap in prop::collection::vec(any::<bool>(), 1..8)) {
            let l = lay_out(&ps, per, &overlap);
            let s = scan(&l.data);
            prop_assert_eq!(&s.end, &End::Clean);
            prop_assert_eq!(s.records.len(), ps.len());
            for (r, p) in s.records.iter().zip(&ps) {
                prop_assert_eq!(&l.data[r.payload.clone()], &p[..]);
            }
        }

        /// A crash loses any blocks of the writes in flight (the last, and the one
        /// before it when the last overlaps it), in any combination: recovery reads a
        /// prefix of what was written, never less than what was acknowledged, and
        /// calls the rest a torn tail.
        #[test]
        fn lost_blocks_of_the_writes_in_flight_are_a_torn_tail(
            ps in large_payloads(),
            per in 1usize..5,
            overlap in prop::collection::vec(any::<bool>(), 1..8),
            lost in prop::collection::vec(any::<bool>(), 1..64),
        ) {
            let l = lay_out(&ps, per, &overlap);
            let from = l.batch_start[l.first_in_flight()];
            let acked = l.batch_first[l.first_in_flight()];
            let mut data = l.data.clone();
            // Blocks of the file (the header is the first 32 bytes of block 0).
            let block = |o: usize| (o + SEGMENT_HEADER_BYTES) / LOG_BLOCK_BYTES;
            for (i, b) in data.iter_mut().enumerate().skip(from) {
                if lost[block(i) % lost.len()] {
                    *b = 0;
                }
            }
            let s = scan(&data);
            prop_assert!(matches!(s.end, End::Torn { .. } | End::Clean), "{:?}", s.end);
            prop_assert!(s.records.len() >= acked, "{} < {acked}", s.records.len());
            for (i, r) in s.records.iter().enumerate() {
                prop_assert_eq!(r.zxid, 100 + i as i64);
                prop_assert_eq!(&data[r.payload.clone()], &ps[i][..]);
            }
        }

        /// A flipped bit in a write in flight is a torn tail; anywhere before, it is
        /// corruption. Either way the scan stops at the damage.
        #[test]
        fn bit_flips_before_the_writes_in_flight_are_corruption(
            ps in large_payloads(),
            per in 1usize..5,
            overlap in prop::collection::vec(any::<bool>(), 1..8),
            pick in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let l = lay_out(&ps, per, &overlap);
            let mut data = l.data.clone();
            let at = pick.index(data.len());
            data[at] ^= 1 << bit;
            let s = scan(&data);
            let batch = l.batch_of_offset(at);
            // The record the flip landed in (a marker counts as its batch's first
            // record, and so does the padding before it, which belongs to the batch
            // before).
            let damaged = l.ends.iter().position(|e| at < *e).expect("inside some record");
            prop_assert_eq!(s.records.len(), damaged, "flip at {} in batch {}: {:?}", at, batch, s.end);
            if batch >= l.first_in_flight() {
                prop_assert!(matches!(s.end, End::Torn { .. }), "{:?}", s.end);
            } else {
                prop_assert!(matches!(s.end, End::Corrupt { .. }), "{:?}", s.end);
            }
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(ps in payloads()) {
            let (data, _) = log(&ps);
            let s = scan(&data);
            prop_assert_eq!(&s.end, &End::Clean);
            prop_assert_eq!(s.records.len(), ps.len());
            for (r, p) in s.records.iter().zip(&ps) {
                prop_assert_eq!(&data[r.payload.clone()], &p[..]);
            }
        }

        /// Cutting the log anywhere recovers exactly the records written completely
        /// before the cut.
        #[test]
        fn truncation_recovers_the_longest_complete_prefix(ps in payloads(), cut in any::<prop::sample::Index>()) {
            let (data, ends) = log(&ps);
            let cut = cut.index(data.len() + 1);
            let s = scan(&data[..cut]);
            let complete = ends.iter().filter(|e| **e <= cut).count();
            prop_assert_eq!(s.records.len(), complete);
            // Records are valid up to the last complete one; a complete marker after it
            // is skipped over (it opens a write with nothing in it yet). Bytes after the
            // valid part that are all zeros are no write at all: a clean end.
            let boundary = if complete == 0 { 0 } else { ends[complete - 1] };
            let marker_end = boundary + BATCH_MARKER_BYTES;
            let valid = if cut >= marker_end { marker_end } else { boundary };
            prop_assert_eq!(s.valid_len, valid);
            if data[valid..cut].iter().all(|b| *b == 0) {
                prop_assert_eq!(s.end, End::Clean);
            } else {
                prop_assert_eq!(s.end, End::Torn { offset: valid });
            }
        }

        /// A write torn by a crash can lose any of its blocks, not only the last ones:
        /// zeroing any span inside the last write is a torn tail, never corruption.
        #[test]
        fn lost_blocks_in_the_last_write_are_a_torn_tail(ps in payloads(), per in 1usize..6, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
            let (mut data, ends, last_batch) = log_in_batches(&ps, per);
            let batch_start = if last_batch == 0 { 0 } else { ends[last_batch - 1] };
            let span = data.len() - batch_start;
            let (x, y) = (a.index(span), b.index(span));
            let (lo, hi) = (batch_start + x.min(y), batch_start + x.max(y) + 1);
            let before = data.clone();
            data[lo..hi].fill(0);
            let s = scan(&data);
            prop_assert!(matches!(s.end, End::Torn { .. } | End::Clean), "{:?}", s.end);
            prop_assert!(s.records.len() >= last_batch);
            // Every record read back is one that was written, byte for byte: either
            // the zeroed span missed it, or it fell on bytes that were zeros already.
            for r in &s.records {
                let whole = r.payload.start - RECORD_HEADER_BYTES..r.payload.end;
                prop_assert_eq!(&data[whole.clone()], &before[whole]);
            }
        }

        /// A flipped bit in the last write is a torn write; in any earlier write, it is
        /// corruption that stops recovery at the damaged record.
        #[test]
        fn bit_flips_are_torn_in_the_last_write_and_corrupt_elsewhere(ps in payloads(), per in 1usize..6, pick in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut data, ends, last_batch) = log_in_batches(&ps, per);
            let at = pick.index(data.len());
            data[at] ^= 1 << bit;
            let s = scan(&data);
            // The record (or the marker before it) the flip landed in.
            let damaged = ends.iter().position(|e| at < *e).expect("inside some record");
            prop_assert_eq!(s.records.len(), damaged);
            if damaged >= last_batch {
                prop_assert!(matches!(s.end, End::Torn { .. }), "{:?}", s.end);
            } else {
                let corrupt = matches!(s.end, End::Corrupt { .. });
                prop_assert!(corrupt, "{:?}", s.end);
            }
            let prefix = ends[..s.records.len()].last().copied().unwrap_or(0);
            prop_assert!(s.valid_len >= prefix && s.valid_len <= at);
        }
    }
}
