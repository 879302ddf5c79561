//! Apache ZooKeeper's data files, as `FileSnap`, `SnapStream` and `FileTxnLog` write
//! them in `dataDir/version-2` (3.4 to 3.9 share the layout):
//!
//! - `snapshot.<zxid hex>`: a FileHeader (`"ZKSN"`, version 2, dbid), the sessions and
//!   the data tree ([`ZkTree`]), then a seal: the Adler32 of every byte before it (a
//!   long) and the string "/". Since 3.6, when digests are on, a ZxidDigest (zxid,
//!   digest version, digest) follows with a second seal over everything before it.
//!   `snapshot.<zxid>.gz` and `.snappy` (3.6+, `zookeeper.snapshot.compression.method`)
//!   are the same stream compressed (gzip; snappy-java's framing: a magic header, then
//!   length-prefixed raw snappy blocks).
//! - `log.<zxid hex>`: a FileHeader (`"ZKLG"`, version 2, dbid), then one entry per
//!   txn: the Adler32 of the txn's bytes (a long), the bytes (a jute buffer: TxnHeader,
//!   record, 3.6+ digest) and the byte 'B'. The file is preallocated: a zero length is
//!   the end; a last entry cut short is a write a crash interrupted.

use std::io::Read;

use bytes::BufMut;

use super::snapshot::ZkTree;
use super::txn::ZkTxn;
use crate::proto::jute::{DecodeError, JuteWrite, Reader};

/// `"ZKSN"`.
pub const SNAP_MAGIC: i32 = i32::from_be_bytes(*b"ZKSN");
/// `"ZKLG"`.
pub const TXNLOG_MAGIC: i32 = i32::from_be_bytes(*b"ZKLG");
pub const FILE_VERSION: i32 = 2;
/// The dbid every ZooKeeper writes (FileTxnSnapLog's dbId).
pub const DBID: i64 = -1;
const HEADER_BYTES: usize = 4 + 4 + 8;
/// The byte that ends each txn log entry.
const END_OF_ENTRY: u8 = b'B';

/// What is wrong with a file, and where (an offset into the file as ZooKeeper reads
/// it: for a compressed snapshot, into the uncompressed stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset}: {reason}")]
pub struct FileError {
    pub offset: u64,
    pub reason: String,
}

fn fail<T>(offset: usize, reason: impl Into<String>) -> Result<T, FileError> {
    Err(FileError {
        offset: offset as u64,
        reason: reason.into(),
    })
}

fn decode_error(e: DecodeError, base: usize) -> FileError {
    let offset = match &e {
        DecodeError::Truncated { offset, .. } => *offset,
        DecodeError::BadLength { offset, .. } => *offset,
        _ => 0,
    };
    FileError {
        offset: (base + offset) as u64,
        reason: e.to_string(),
    }
}

/// Adler32 (java.util.zip.Adler32) of `bytes`, continuing from `sum` (1 to start).
pub fn adler32(sum: u32, bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // The largest run after which the sums cannot overflow a u32 before the modulo.
    const NMAX: usize = 5552;
    let (mut a, mut b) = (sum & 0xffff, sum >> 16);
    for chunk in bytes.chunks(NMAX) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub magic: i32,
    pub version: i32,
    pub dbid: i64,
}

impl FileHeader {
    fn read(b: &[u8], magic: i32, what: &str) -> Result<FileHeader, FileError> {
        if b.len() < HEADER_BYTES {
            return fail(b.len(), format!("shorter than a {what} file header"));
        }
        let mut r = Reader::new(b);
        let h = FileHeader {
            magic: r.i32().expect("checked"),
            version: r.i32().expect("checked"),
            dbid: r.i64().expect("checked"),
        };
        if h.magic != magic {
            return fail(
                0,
                format!(
                    "not a ZooKeeper {what} (magic {:08x}, expected {magic:08x})",
                    h.magic
                ),
            );
        }
        if h.version != FILE_VERSION {
            return fail(
                4,
                format!("{what} format version {} (expected 2)", h.version),
            );
        }
        Ok(h)
    }

    fn write(&self, b: &mut Vec<u8>) {
        b.put_i32(self.magic);
        b.put_i32(self.version);
        b.put_i64(self.dbid);
    }
}

/// The digest a 3.6+ snapshot may carry after its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZxidDigest {
    pub zxid: i64,
    pub version: i32,
    pub digest: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkSnapshotFile {
    pub header: FileHeader,
    pub tree: ZkTree,
    pub digest: Option<ZxidDigest>,
}

/// How a snapshot file is compressed, by its name (SnapStream.getStreamMode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
}

impl Compression {
    pub fn of_name(name: &str) -> Compression {
        if name.ends_with(".gz") {
            Compression::Gzip
        } else if name.ends_with(".snappy") {
            Compression::Snappy
        } else {
            Compression::None
        }
    }
}

/// snappy-java's stream header: a magic, then its version and the oldest compatible.
const SNAPPY_JAVA_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// The snapshot stream inside a file's bytes.
pub fn decompress(bytes: &[u8], compression: Compression) -> Result<Vec<u8>, FileError> {
    match compression {
        Compression::None => Ok(bytes.to_vec()),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| FileError {
                    offset: out.len() as u64,
                    reason: format!("gzip stream: {e}"),
                })?;
            Ok(out)
        }
        Compression::Snappy => {
            if bytes.len() < 16 || bytes[..8] != SNAPPY_JAVA_MAGIC {
                return fail(0, "not a snappy-java stream (bad magic)");
            }
            let mut out = Vec::new();
            let mut at = 16;
            while at < bytes.len() {
                let Some(len) = bytes.get(at..at + 4) else {
                    return fail(out.len(), "snappy stream cut inside a block length");
                };
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                let Some(block) = bytes.get(at + 4..at + 4 + len) else {
                    return fail(out.len(), "snappy stream cut inside a block");
                };
                let data = snap::raw::Decoder::new()
                    .decompress_vec(block)
                    .map_err(|e| FileError {
                        offset: out.len() as u64,
                        reason: format!("snappy block: {e}"),
                    })?;
                out.extend_from_slice(&data);
                at += 4 + len;
            }
            Ok(out)
        }
    }
}

/// Checks a seal at `r`'s position: the Adler32 of `stream` before it, and "/".
fn check_seal(stream: &[u8], r: &mut Reader) -> Result<(), FileError> {
    let at = r.position();
    let expected = adler32(1, &stream[..at]);
    let val = r.i64().map_err(|e| decode_error(e, 0))?;
    let slash = r.string().map_err(|e| decode_error(e, 0))?;
    if val != i64::from(expected) {
        return fail(
            at,
            format!("checksum mismatch: the file says {val:#x}, its bytes give {expected:#x}"),
        );
    }
    if slash != "/" {
        return fail(at + 8, format!("seal ends with {slash:?}, not \"/\""));
    }
    Ok(())
}

/// Reads a snapshot stream (decompressed), checking its header and seals.
pub fn read_snapshot(stream: &[u8]) -> Result<ZkSnapshotFile, FileError> {
    let header = FileHeader::read(stream, SNAP_MAGIC, "snapshot")?;
    let mut r = Reader::new(stream);
    r.bytes(HEADER_BYTES).expect("checked");
    let tree = ZkTree::decode(&mut r).map_err(|e| decode_error(e, 0))?;
    check_seal(stream, &mut r)?;
    let mut digest = None;
    if r.remaining() > 0 {
        let at = r.position();
        let d = (|| {
            Ok::<_, DecodeError>(ZxidDigest {
                zxid: r.i64()?,
                version: r.i32()?,
                digest: r.i64()?,
            })
        })()
        .map_err(|_| FileError {
            offset: at as u64,
            reason: "bytes after the seal that are not a digest".into(),
        })?;
        check_seal(stream, &mut r)?;
        digest = Some(d);
    }
    Ok(ZkSnapshotFile {
        header,
        tree,
        digest,
    })
}

/// A snapshot file's bytes (uncompressed, without a digest, as ZooKeeper writes one
/// with digests off; ZooKeeper reads either).
pub fn write_snapshot(tree: &ZkTree) -> Vec<u8> {
    let mut b = Vec::new();
    FileHeader {
        magic: SNAP_MAGIC,
        version: FILE_VERSION,
        dbid: DBID,
    }
    .write(&mut b);
    tree.encode(&mut b);
    let sum = adler32(1, &b);
    b.put_i64(i64::from(sum));
    b.put_string("/");
    b
}

/// One entry of a txn log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkLogEntry {
    /// Where the entry starts in the file.
    pub offset: u64,
    pub txn: ZkTxn,
}

/// How a txn log's entries end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// At the end of the file or at preallocated zeros.
    Clean,
    /// With an entry cut short at `offset` (a crash during its write; ZooKeeper
    /// stops reading there too).
    Torn { offset: u64 },
}

/// Reads a txn log: its header and every entry, checking each one's checksum and its
/// end byte. Damage before the end is an error naming the entry's offset.
pub fn read_log(b: &[u8]) -> Result<(FileHeader, Vec<ZkLogEntry>, LogEnd), FileError> {
    let header = FileHeader::read(b, TXNLOG_MAGIC, "txn log")?;
    let mut entries = Vec::new();
    let mut at = HEADER_BYTES;
    let torn = |at: usize| LogEnd::Torn { offset: at as u64 };
    loop {
        let Some(head) = b.get(at..at + 12) else {
            let rest = &b[at.min(b.len())..];
            let end = if rest.iter().all(|x| *x == 0) {
                LogEnd::Clean
            } else {
                torn(at)
            };
            return Ok((header, entries, end));
        };
        let crc = i64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
        if len == 0 {
            // Preallocated space (ZooKeeper: "an empty transaction" is the end).
            if b[at..].iter().all(|x| *x == 0) {
                return Ok((header, entries, LogEnd::Clean));
            }
            return fail(at, "an empty entry with data after it");
        }
        if len < 0 {
            return fail(at + 8, format!("entry length {len}"));
        }
        let start = at + 12;
        let Some(bytes) = b.get(start..start + len as usize) else {
            return Ok((header, entries, torn(at)));
        };
        match b.get(start + len as usize) {
            None => return Ok((header, entries, torn(at))),
            Some(&END_OF_ENTRY) => {}
            Some(x) => {
                return fail(
                    start + len as usize,
                    format!("entry ends with {x:#04x}, not 'B'"),
                )
            }
        }
        let sum = adler32(1, bytes);
        if crc != i64::from(sum) {
            return fail(
                at,
                format!("entry checksum mismatch: the file says {crc:#x}, its bytes give {sum:#x}"),
            );
        }
        let txn = ZkTxn::decode(bytes).map_err(|e| decode_error(e, start))?;
        entries.push(ZkLogEntry {
            offset: at as u64,
            txn,
        });
        at = start + len as usize + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zkformat::snapshot::{StatPersisted, ZkNode};
    use crate::zkformat::txn::{TxnHeader, TxnRecord};

    #[test]
    fn adler32_matches_the_published_values() {
        assert_eq!(adler32(1, b""), 1);
        assert_eq!(adler32(1, b"Wikipedia"), 0x11E6_0398);
        // Longer than NMAX, all 0xff: the sums stay exact across the modulo.
        let big = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(1, &big), ((b << 16) | a) as u32);
        // Continuing a sum is the sum of the whole.
        assert_eq!(adler32(adler32(1, &big[..7]), &big[7..]), adler32(1, &big));
    }

    fn tree() -> ZkTree {
        let stat = StatPersisted {
            czxid: 0,
            mzxid: 0,
            ctime: 0,
            mtime: 0,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            pzxid: 0,
        };
        ZkTree {
            sessions: vec![(0x100, 30_000)],
            acls: vec![],
            nodes: vec![ZkNode {
                path: String::new(),
                data: None,
                acl_ref: -1,
                stat,
            }],
        }
    }

    #[test]
    fn a_snapshot_reads_back_and_damage_names_its_offset() {
        let bytes = write_snapshot(&tree());
        let back = read_snapshot(&bytes).unwrap();
        assert_eq!(back.tree, tree());
        assert_eq!(back.header.magic, SNAP_MAGIC);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        let e = read_snapshot(&bad).unwrap_err();
        assert!(e.reason.contains("checksum mismatch"), "{e}");
        let e = read_snapshot(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.offset > 0, "{e}");
        let mut magic = bytes;
        magic[0] = b'X';
        assert_eq!(read_snapshot(&magic).unwrap_err().offset, 0);
    }

    fn entry(zxid: i64) -> Vec<u8> {
        let txn = ZkTxn {
            header: TxnHeader {
                client_id: 5,
                cxid: 1,
                zxid,
                time: 9,
                txn_type: crate::zkformat::txn::txn_type::DELETE,
            },
            record: Some(TxnRecord::Delete { path: "/a".into() }),
            digest: None,
        };
        let bytes = txn.to_bytes();
        let mut e = Vec::new();
        e.put_i64(i64::from(adler32(1, &bytes)));
        e.put_buffer(&bytes);
        e.push(END_OF_ENTRY);
        e
    }

    #[test]
    fn a_log_reads_to_its_preallocated_end_and_tells_a_torn_entry_from_damage() {
        let mut log = Vec::new();
        FileHeader {
            magic: TXNLOG_MAGIC,
            version: 2,
            dbid: 0,
        }
        .write(&mut log);
        log.extend(entry(1));
        let second = log.len();
        log.extend(entry(2));
        let whole = log.len();
        log.extend(vec![0u8; 4096]);
        let (_, entries, end) = read_log(&log).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].offset, second as u64);
        assert_eq!(end, LogEnd::Clean);
        // Cut inside the second entry: torn there.
        let (_, entries, end) = read_log(&log[..whole - 3]).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            end,
            LogEnd::Torn {
                offset: second as u64
            }
        );
        // A flipped bit inside the first entry: an error at its offset.
        let mut bad = log.clone();
        bad[HEADER_BYTES + 20] ^= 4;
        assert_eq!(read_log(&bad).unwrap_err().offset, HEADER_BYTES as u64);
    }
}
