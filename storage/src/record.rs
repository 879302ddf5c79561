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

use std::ops::Range;

use thiserror::Error;

pub const SEGMENT_MAGIC: [u8; 8] = *b"RKTXNLOG";
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 16;
/// Largest payload accepted; a longer length field is damage, not data.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

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

/// Reads the records of a segment body (the bytes after its header).
///
/// Stops at the first record that does not check out and decides whether it is a torn
/// tail (nothing valid follows it: safe to truncate) or corruption (a valid record
/// with a later zxid follows: refuse).
pub fn scan(data: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    let mut last_zxid = i64::MIN;
    loop {
        if at == data.len() {
            return Scan {
                records,
                valid_len: at,
                end: End::Clean,
            };
        }
        let rest = &data[at..];
        if rest.len() >= 4 && rest[..4] == [0, 0, 0, 0] && rest.iter().all(|b| *b == 0) {
            return Scan {
                records,
                valid_len: at,
                end: End::Clean,
            };
        }
        match record_at(data, at) {
            Some((zxid, payload, next)) => {
                if zxid <= last_zxid {
                    return Scan {
                        records,
                        valid_len: at,
                        end: End::Corrupt {
                            offset: at,
                            reason: "zxid not above the previous record's",
                        },
                    };
                }
                last_zxid = zxid;
                records.push(RecordRef { zxid, payload });
                at = next;
            }
            None => {
                // Is there any valid record further on? Then this is damage in the
                // middle of the log, not a torn write at its end.
                let later = (at + 1..data.len())
                    .filter_map(|o| record_at(data, o))
                    .any(|(zxid, _, _)| zxid > last_zxid);
                let end = if later {
                    End::Corrupt {
                        offset: at,
                        reason: "damaged record followed by valid records",
                    }
                } else {
                    End::Torn { offset: at }
                };
                return Scan {
                    records,
                    valid_len: at,
                    end,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn log(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut out, 100 + i as i64, p);
            ends.push(out.len());
        }
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
            let boundary = if complete == 0 { 0 } else { ends[complete - 1] };
            prop_assert_eq!(s.valid_len, boundary);
            if cut == boundary {
                prop_assert_eq!(s.end, End::Clean);
            } else {
                prop_assert_eq!(s.end, End::Torn { offset: boundary });
            }
        }

        /// A flipped bit in the last record is a torn write; anywhere before, it is
        /// corruption that stops recovery at the damaged record.
        #[test]
        fn bit_flips_are_torn_at_the_end_and_corrupt_elsewhere(ps in payloads(), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut data, ends) = log(&ps);
            let at = pick.index(data.len());
            data[at] ^= 1 << bit;
            let damaged = ends.iter().position(|e| at < *e).expect("inside some record");
            let start = if damaged == 0 { 0 } else { ends[damaged - 1] };
            let s = scan(&data);
            prop_assert_eq!(s.records.len(), damaged);
            prop_assert_eq!(s.valid_len, start);
            if damaged == ps.len() - 1 {
                prop_assert_eq!(s.end, End::Torn { offset: start });
            } else {
                let corrupt = matches!(s.end, End::Corrupt { offset, .. } if offset == start);
                prop_assert!(corrupt, "{:?}", s.end);
            }
        }
    }
}
