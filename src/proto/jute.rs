//! Jute, ZooKeeper's binary record encoding: big-endian integers, length-prefixed
//! byte buffers and strings (length -1 = null), length-prefixed vectors.
//!
//! The reader never panics: every length is checked against the bytes that remain, so
//! arbitrary input yields a [`DecodeError`], never an out-of-bounds access or a huge
//! allocation.

use bytes::{BufMut, Bytes};
use thiserror::Error;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("record truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("negative length {len} at offset {offset}")]
    BadLength { offset: usize, len: i32 },
    #[error("string at offset {offset} is not valid UTF-8")]
    BadUtf8 { offset: usize },
    #[error("unknown opcode {0}")]
    UnknownOpCode(i32),
    #[error("invalid value {value} for {field}")]
    BadValue { field: &'static str, value: i64 },
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

/// A cursor over one frame's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// `N` raw bytes (a fixed-size field, not a length-prefixed buffer).
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A length prefix: -1 (null) reads as 0; any other negative value is an error.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let len = self.i32()?;
        if len == -1 {
            return Ok(0);
        }
        if len < 0 {
            return Err(DecodeError::BadLength { offset, len });
        }
        Ok(len as usize)
    }

    pub fn buffer(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    /// A buffer that keeps null (length -1) apart from empty, as znode data does.
    pub fn buffer_opt(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let offset = self.pos;
        let len = self.i32()?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::BadLength { offset, len: n }),
            n => self.take(n as usize).map(Some),
        }
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let offset = self.pos;
        let b = self.buffer()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8 { offset })
    }

    /// A vector's element count. Each element takes at least `min_elem_bytes`, so a count
    /// larger than the remaining bytes allow is rejected before anything is allocated.
    pub fn vec_len(&mut self, min_elem_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.len()?;
        if n.saturating_mul(min_elem_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset,
                needed: n.saturating_mul(min_elem_bytes.max(1)) - self.remaining(),
            });
        }
        Ok(n)
    }

    /// A vector's element count, keeping null (-1) apart from empty (see [`vec_len`]).
    ///
    /// [`vec_len`]: Reader::vec_len
    pub fn vec_len_opt(&mut self, min_elem_bytes: usize) -> Result<Option<usize>, DecodeError> {
        let offset = self.pos;
        if self.i32()? == -1 {
            return Ok(None);
        }
        self.pos = offset;
        self.vec_len(min_elem_bytes).map(Some)
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.vec_len(4)?;
        (0..n).map(|_| self.string()).collect()
    }

    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Appends jute-encoded values to a buffer.
pub trait JuteWrite: BufMut {
    fn put_bool_jute(&mut self, v: bool) {
        self.put_u8(v as u8);
    }
    fn put_buffer(&mut self, v: &[u8]) {
        self.put_i32(v.len() as i32);
        self.put_slice(v);
    }
    fn put_buffer_opt(&mut self, v: Option<&[u8]>) {
        match v {
            Some(b) => self.put_buffer(b),
            None => self.put_i32(-1),
        }
    }
    fn put_string(&mut self, v: &str) {
        self.put_buffer(v.as_bytes());
    }
    fn put_strings<S: AsRef<str>>(&mut self, v: &[S]) {
        self.put_i32(v.len() as i32);
        for s in v {
            self.put_string(s.as_ref());
        }
    }
}

impl<T: BufMut + ?Sized> JuteWrite for T {}

/// Copies a borrowed buffer out of a frame.
pub fn to_bytes(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_buffer_reads_as_empty() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.buffer().unwrap(), b"");
        r.finish().unwrap();
    }

    #[test]
    fn negative_length_other_than_null_is_rejected() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(matches!(r.buffer(), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn huge_vector_count_is_rejected_without_allocating() {
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        assert!(matches!(r.strings(), Err(DecodeError::Truncated { .. })));
    }
}
