//! Canonical external term format: one byte string per Erlang term.
//!
//! Owns the rewriting of any valid external-term encoding into the single
//! encoding this crate compares, hashes and stores. Knows nothing of roles,
//! scopes or the network; [`crate::role`] and [`crate::protocol`] build on it.
//!
//! The canonical form is what OTP's `term_to_binary/1` writes (minor version 2),
//! with these choices where OTP has several encodings for one term:
//!
//! | term | canonical tag |
//! |---|---|
//! | atom | `SMALL_ATOM_UTF8_EXT` (or `ATOM_UTF8_EXT` past 255 bytes), Latin-1 atoms re-encoded as UTF-8 |
//! | integer | `SMALL_INTEGER_EXT` for 0..=255, `INTEGER_EXT` for i32, else `SMALL_BIG_EXT`/`LARGE_BIG_EXT` with no trailing zero bytes |
//! | float | `NEW_FLOAT_EXT` (`FLOAT_EXT`'s text form is parsed) |
//! | list | `NIL_EXT` when empty, `STRING_EXT` for proper lists of up to 65535 integers in 0..=255, else `LIST_EXT`; a list written as a chain of list tails is flattened |
//! | tuple | `SMALL_TUPLE_EXT` (or `LARGE_TUPLE_EXT` past 255 elements) |
//! | map | `MAP_EXT`, pairs sorted by the canonical bytes of their keys |
//! | binary | `BINARY_EXT`; `BIT_BINARY_EXT` only for a partial last byte, unused bits zeroed |
//! | pid / port / ref | `NEW_PID_EXT` / `NEW_PORT_EXT` (or `V4_PORT_EXT`) / `NEWER_REFERENCE_EXT` |
//! | compressed | decompressed (bounded by the zlib ratio the input could justify) |
//!
//! `-0.0` and `0.0` stay distinct, as `=:=` has them since OTP 27.
//!
//! Decoding is bounded and never panics: lengths are checked against the bytes
//! that remain before anything is allocated, nesting is limited to
//! [`MAX_DEPTH`], and `ATOM_CACHE_REF`, `LOCAL_EXT`, the old `FUN_EXT` and
//! distribution headers are refused.

use std::io::Read;

/// The version byte that starts every external term.
pub const VERSION: u8 = 131;
/// Deepest nesting of lists, tuples, maps and funs accepted.
pub const MAX_DEPTH: usize = 128;

pub(crate) const NEW_FLOAT_EXT: u8 = 70;
pub(crate) const BIT_BINARY_EXT: u8 = 77;
pub(crate) const COMPRESSED: u8 = 80;
pub(crate) const ATOM_CACHE_REF: u8 = 82;
pub(crate) const NEW_PID_EXT: u8 = 88;
pub(crate) const NEW_PORT_EXT: u8 = 89;
pub(crate) const NEWER_REFERENCE_EXT: u8 = 90;
pub(crate) const SMALL_INTEGER_EXT: u8 = 97;
pub(crate) const INTEGER_EXT: u8 = 98;
pub(crate) const FLOAT_EXT: u8 = 99;
pub(crate) const ATOM_EXT: u8 = 100;
pub(crate) const REFERENCE_EXT: u8 = 101;
pub(crate) const PORT_EXT: u8 = 102;
pub(crate) const PID_EXT: u8 = 103;
pub(crate) const SMALL_TUPLE_EXT: u8 = 104;
pub(crate) const LARGE_TUPLE_EXT: u8 = 105;
pub(crate) const NIL_EXT: u8 = 106;
pub(crate) const STRING_EXT: u8 = 107;
pub(crate) const LIST_EXT: u8 = 108;
pub(crate) const BINARY_EXT: u8 = 109;
pub(crate) const SMALL_BIG_EXT: u8 = 110;
pub(crate) const LARGE_BIG_EXT: u8 = 111;
pub(crate) const NEW_FUN_EXT: u8 = 112;
pub(crate) const EXPORT_EXT: u8 = 113;
pub(crate) const NEW_REFERENCE_EXT: u8 = 114;
pub(crate) const SMALL_ATOM_EXT: u8 = 115;
pub(crate) const MAP_EXT: u8 = 116;
pub(crate) const FUN_EXT: u8 = 117;
pub(crate) const ATOM_UTF8_EXT: u8 = 118;
pub(crate) const SMALL_ATOM_UTF8_EXT: u8 = 119;
pub(crate) const V4_PORT_EXT: u8 = 120;
pub(crate) const LOCAL_EXT: u8 = 121;
pub(crate) const DIST_HEADER: u8 = 68;

/// Why bytes are not a valid external term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    #[error("empty input")]
    Empty,
    #[error("missing version byte 131 (found {0})")]
    BadVersion(u8),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown or unsupported tag {tag} at byte {pos}")]
    BadTag { tag: u8, pos: usize },
    #[error("atom cache references are not accepted (byte {0})")]
    AtomCacheRef(usize),
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("invalid atom text at byte {0}")]
    BadAtom(usize),
    #[error("invalid float at byte {0}")]
    BadFloat(usize),
    #[error("invalid bit binary at byte {0}")]
    BadBits(usize),
    #[error("duplicate map key at byte {0}")]
    DuplicateKey(usize),
    #[error("invalid {what} at byte {pos}")]
    Invalid { what: &'static str, pos: usize },
    #[error("bad compressed term: {0}")]
    Compressed(&'static str),
    #[error("{0} trailing bytes after the term")]
    Trailing(usize),
}

/// Rewrites a complete external term (starting with byte 131) into canonical form.
///
/// The result starts with the version byte too, so it can go straight to
/// `binary_to_term/1`.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, CanonError> {
    let (&version, rest) = input.split_first().ok_or(CanonError::Empty)?;
    if version != VERSION {
        return Err(CanonError::BadVersion(version));
    }
    let mut out = Vec::with_capacity(input.len() + 8);
    out.push(VERSION);
    if rest.first() == Some(&COMPRESSED) {
        let inner = decompress(rest)?;
        canonicalize_body(&inner, &mut out)?;
    } else {
        canonicalize_body(rest, &mut out)?;
    }
    Ok(out)
}

/// Rewrites one term without version byte, appending it to `out`.
/// The input must hold exactly one term.
pub fn canonicalize_body(body: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
    let mut c = Canon { buf: body, pos: 0 };
    c.term(out, 0)?;
    if c.pos != body.len() {
        return Err(CanonError::Trailing(body.len() - c.pos));
    }
    Ok(())
}

fn decompress(rest: &[u8]) -> Result<Vec<u8>, CanonError> {
    // rest = COMPRESSED, u32 size, zlib data
    if rest.len() < 5 {
        return Err(CanonError::Truncated(rest.len()));
    }
    let declared = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
    let data = &rest[5..];
    // zlib cannot expand more than about 1032:1; a larger claim is a lie.
    let justified = data.len().saturating_mul(1032).saturating_add(64);
    if declared > justified {
        return Err(CanonError::Compressed(
            "declared size exceeds what the data can hold",
        ));
    }
    let mut inner = Vec::with_capacity(declared);
    let mut dec = flate2::read::ZlibDecoder::new(data).take(declared as u64 + 1);
    dec.read_to_end(&mut inner)
        .map_err(|_| CanonError::Compressed("zlib stream is corrupt"))?;
    if inner.len() != declared {
        return Err(CanonError::Compressed(
            "size differs from the declared size",
        ));
    }
    if inner.first() == Some(&COMPRESSED) {
        return Err(CanonError::Compressed("nested compression"));
    }
    Ok(inner)
}

struct Canon<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Writes an integer given as sign and little-endian magnitude in canonical form.
pub fn write_integer(out: &mut Vec<u8>, negative: bool, magnitude_le: &[u8]) {
    let mut len = magnitude_le.len();
    while len > 0 && magnitude_le[len - 1] == 0 {
        len -= 1;
    }
    let mag = &magnitude_le[..len];
    if mag.len() <= 8 {
        let mut v: u64 = 0;
        for (i, b) in mag.iter().enumerate() {
            v |= (*b as u64) << (8 * i);
        }
        if !negative && v <= 255 {
            out.push(SMALL_INTEGER_EXT);
            out.push(v as u8);
            return;
        }
        let fits = if negative {
            v <= 1u64 << 31
        } else {
            v <= i32::MAX as u64
        };
        if v == 0 {
            out.push(SMALL_INTEGER_EXT);
            out.push(0);
            return;
        }
        if fits {
            let signed = if negative {
                (-(v as i64)) as i32
            } else {
                v as i32
            };
            out.push(INTEGER_EXT);
            out.extend_from_slice(&signed.to_be_bytes());
            return;
        }
    }
    if mag.len() <= 255 {
        out.push(SMALL_BIG_EXT);
        out.push(mag.len() as u8);
    } else {
        out.push(LARGE_BIG_EXT);
        out.extend_from_slice(&(mag.len() as u32).to_be_bytes());
    }
    out.push(negative as u8);
    out.extend_from_slice(mag);
}

/// Writes an i64 in canonical form.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    write_integer(out, v < 0, &v.unsigned_abs().to_le_bytes());
}

/// Writes an atom from UTF-8 text in canonical form (no version byte).
pub fn write_atom(out: &mut Vec<u8>, text: &str) {
    if text.len() <= 255 {
        out.push(SMALL_ATOM_UTF8_EXT);
        out.push(text.len() as u8);
    } else {
        out.push(ATOM_UTF8_EXT);
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

/// Writes a tuple header in canonical form.
pub(crate) fn write_tuple_header(out: &mut Vec<u8>, arity: usize) {
    if arity <= 255 {
        out.push(SMALL_TUPLE_EXT);
        out.push(arity as u8);
    } else {
        out.push(LARGE_TUPLE_EXT);
        out.extend_from_slice(&(arity as u32).to_be_bytes());
    }
}

impl<'a> Canon<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CanonError> {
        if self.buf.len() - self.pos < n {
            return Err(CanonError::Truncated(self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CanonError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CanonError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CanonError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// A count of items each needing at least `min_bytes`: refuse counts the input cannot hold.
    fn count(&mut self, n: usize, min_bytes: usize) -> Result<usize, CanonError> {
        if n.saturating_mul(min_bytes) > self.remaining() {
            return Err(CanonError::Truncated(self.pos));
        }
        Ok(n)
    }

    /// One term. Its frame is kept small (leaves live in [`Self::leaf`]) because
    /// it recurses: the NIF runs it on scheduler threads with modest stacks.
    fn term(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), CanonError> {
        if depth > MAX_DEPTH {
            return Err(CanonError::TooDeep);
        }
        let at = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                let n = if tag == SMALL_TUPLE_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let n = self.count(n, 1)?;
                write_tuple_header(out, n);
                for _ in 0..n {
                    self.term(out, depth + 1)?;
                }
                Ok(())
            }
            STRING_EXT | LIST_EXT => {
                self.pos = at;
                self.list(out, depth)
            }
            MAP_EXT => self.map(out, at, depth),
            NEW_FUN_EXT => self.new_fun(out, at, depth),
            _ => self.leaf(tag, at, out),
        }
    }

    #[inline(never)]
    fn map(&mut self, out: &mut Vec<u8>, at: usize, depth: usize) -> Result<(), CanonError> {
        let n = self.u32()? as usize;
        let n = self.count(n, 2)?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(n);
        for _ in 0..n {
            let mut k = Vec::new();
            self.term(&mut k, depth + 1)?;
            let mut v = Vec::new();
            self.term(&mut v, depth + 1)?;
            pairs.push((k, v));
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(CanonError::DuplicateKey(at));
        }
        out.push(MAP_EXT);
        out.extend_from_slice(&(n as u32).to_be_bytes());
        for (k, v) in pairs {
            out.extend_from_slice(&k);
            out.extend_from_slice(&v);
        }
        Ok(())
    }

    /// Terms that contain no other terms (pids, ports and refs contain only an atom).
    #[inline(never)]
    fn leaf(&mut self, tag: u8, at: usize, out: &mut Vec<u8>) -> Result<(), CanonError> {
        match tag {
            SMALL_INTEGER_EXT => {
                let v = self.u8()?;
                out.push(SMALL_INTEGER_EXT);
                out.push(v);
            }
            INTEGER_EXT => {
                let v = self.u32()? as i32;
                write_i64(out, v as i64);
            }
            SMALL_BIG_EXT | LARGE_BIG_EXT => {
                let n = if tag == SMALL_BIG_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let sign = self.u8()?;
                let n = self.count(n, 1)?;
                let mag = self.take(n)?;
                write_integer(out, sign != 0, mag);
            }
            NEW_FLOAT_EXT => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                if !f.is_finite() {
                    return Err(CanonError::BadFloat(at));
                }
                out.push(NEW_FLOAT_EXT);
                out.extend_from_slice(b);
            }
            FLOAT_EXT => {
                let b = self.take(31)?;
                let end = b.iter().position(|&c| c == 0).unwrap_or(31);
                let text = std::str::from_utf8(&b[..end]).map_err(|_| CanonError::BadFloat(at))?;
                let f: f64 = text.trim().parse().map_err(|_| CanonError::BadFloat(at))?;
                if !f.is_finite() {
                    return Err(CanonError::BadFloat(at));
                }
                out.push(NEW_FLOAT_EXT);
                out.extend_from_slice(&f.to_be_bytes());
            }
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
                self.atom_after_tag(tag, at, out)?;
            }
            NIL_EXT => out.push(NIL_EXT),
            BINARY_EXT => {
                let n = self.u32()? as usize;
                let b = self.take(n)?;
                out.push(BINARY_EXT);
                out.extend_from_slice(&(n as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
            BIT_BINARY_EXT => {
                let n = self.u32()? as usize;
                let bits = self.u8()?;
                let b = self.take(n)?;
                match (n, bits) {
                    (0, 0) | (0, 8) => {
                        out.push(BINARY_EXT);
                        out.extend_from_slice(&0u32.to_be_bytes());
                    }
                    (_, 8) if n > 0 => {
                        out.push(BINARY_EXT);
                        out.extend_from_slice(&(n as u32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                    (_, 1..=7) if n > 0 => {
                        out.push(BIT_BINARY_EXT);
                        out.extend_from_slice(&(n as u32).to_be_bytes());
                        out.push(bits);
                        out.extend_from_slice(&b[..n - 1]);
                        let mask = 0xffu8 << (8 - bits);
                        out.push(b[n - 1] & mask);
                    }
                    _ => return Err(CanonError::BadBits(at)),
                }
            }
            PID_EXT | NEW_PID_EXT => {
                out.push(NEW_PID_EXT);
                self.atom(out)?;
                out.extend_from_slice(self.take(8)?); // id, serial
                let creation = if tag == PID_EXT {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                out.extend_from_slice(&creation.to_be_bytes());
            }
            PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT => {
                let mut node = Vec::new();
                self.atom(&mut node)?;
                let id: u64 = if tag == V4_PORT_EXT {
                    let b = self.take(8)?;
                    u64::from_be_bytes(b.try_into().expect("8 bytes"))
                } else {
                    self.u32()? as u64
                };
                let creation = if tag == PORT_EXT {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                if id <= u32::MAX as u64 {
                    out.push(NEW_PORT_EXT);
                    out.extend_from_slice(&node);
                    out.extend_from_slice(&(id as u32).to_be_bytes());
                } else {
                    out.push(V4_PORT_EXT);
                    out.extend_from_slice(&node);
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.extend_from_slice(&creation.to_be_bytes());
            }
            REFERENCE_EXT => {
                let mut node = Vec::new();
                self.atom(&mut node)?;
                let id = self.take(4)?;
                let creation = self.u8()? as u32;
                out.push(NEWER_REFERENCE_EXT);
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&node);
                out.extend_from_slice(&creation.to_be_bytes());
                out.extend_from_slice(id);
            }
            NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => {
                let len = self.u16()? as usize;
                if len == 0 || len > 5 {
                    return Err(CanonError::Invalid {
                        what: "reference length",
                        pos: at,
                    });
                }
                let mut node = Vec::new();
                self.atom(&mut node)?;
                let creation = if tag == NEW_REFERENCE_EXT {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                let ids = self.take(4 * len)?;
                out.push(NEWER_REFERENCE_EXT);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&node);
                out.extend_from_slice(&creation.to_be_bytes());
                out.extend_from_slice(ids);
            }
            EXPORT_EXT => {
                out.push(EXPORT_EXT);
                self.atom(out)?;
                self.atom(out)?;
                let arity_at = self.pos;
                if self.u8()? != SMALL_INTEGER_EXT {
                    return Err(CanonError::Invalid {
                        what: "export arity",
                        pos: arity_at,
                    });
                }
                out.push(SMALL_INTEGER_EXT);
                out.push(self.u8()?);
            }
            ATOM_CACHE_REF => return Err(CanonError::AtomCacheRef(at)),
            // Valid elsewhere, never inside a term we accept: a nested compressed
            // term, the pre-R8 fun, OTP 26's node-local term, a distribution header.
            COMPRESSED | FUN_EXT | LOCAL_EXT | DIST_HEADER | VERSION => {
                return Err(CanonError::BadTag { tag, pos: at })
            }
            _ => return Err(CanonError::BadTag { tag, pos: at }),
        }
        Ok(())
    }

    /// An atom in any of the four encodings, written canonically.
    fn atom(&mut self, out: &mut Vec<u8>) -> Result<(), CanonError> {
        let at = self.pos;
        let tag = self.u8()?;
        match tag {
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
                self.atom_after_tag(tag, at, out)
            }
            ATOM_CACHE_REF => Err(CanonError::AtomCacheRef(at)),
            _ => Err(CanonError::Invalid {
                what: "atom",
                pos: at,
            }),
        }
    }

    fn atom_after_tag(&mut self, tag: u8, at: usize, out: &mut Vec<u8>) -> Result<(), CanonError> {
        let len = match tag {
            ATOM_EXT | ATOM_UTF8_EXT => self.u16()? as usize,
            _ => self.u8()? as usize,
        };
        let raw = self.take(len)?;
        let latin1 = matches!(tag, ATOM_EXT | SMALL_ATOM_EXT);
        let text: std::borrow::Cow<'_, str> = if latin1 {
            if raw.is_ascii() {
                // ASCII is valid UTF-8 as it stands.
                std::borrow::Cow::Borrowed(
                    std::str::from_utf8(raw).map_err(|_| CanonError::BadAtom(at))?,
                )
            } else {
                std::borrow::Cow::Owned(raw.iter().map(|&b| b as char).collect())
            }
        } else {
            std::borrow::Cow::Borrowed(
                std::str::from_utf8(raw).map_err(|_| CanonError::BadAtom(at))?,
            )
        };
        if text.chars().count() > 255 {
            return Err(CanonError::BadAtom(at));
        }
        write_atom(out, &text);
        Ok(())
    }

    /// A list in `STRING_EXT` or `LIST_EXT` form, including lists whose tail is
    /// itself a list: all are flattened to one canonical list.
    fn list(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), CanonError> {
        let mut elems: Vec<u8> = Vec::new();
        let mut count: usize = 0;
        let mut all_bytes = true;
        let mut byte_vals: Vec<u8> = Vec::new();
        loop {
            let at = self.pos;
            let tag = self.u8()?;
            match tag {
                STRING_EXT => {
                    let n = self.u16()? as usize;
                    let b = self.take(n)?;
                    for &v in b {
                        elems.push(SMALL_INTEGER_EXT);
                        elems.push(v);
                    }
                    byte_vals.extend_from_slice(b);
                    count += n;
                    // A STRING_EXT has no tail of its own: the list ends here.
                    return self.finish_list(out, elems, count, all_bytes, &byte_vals, None);
                }
                LIST_EXT => {
                    let n = self.u32()? as usize;
                    let n = self.count(n, 1)?;
                    if depth + 1 > MAX_DEPTH {
                        return Err(CanonError::TooDeep);
                    }
                    for _ in 0..n {
                        let start = elems.len();
                        self.term(&mut elems, depth + 1)?;
                        let e = &elems[start..];
                        if e.len() == 2 && e[0] == SMALL_INTEGER_EXT {
                            byte_vals.push(e[1]);
                        } else {
                            all_bytes = false;
                        }
                    }
                    count += n;
                    // The tail follows; if it is a list, keep collecting.
                    continue;
                }
                NIL_EXT => {
                    return self.finish_list(out, elems, count, all_bytes, &byte_vals, None);
                }
                _ => {
                    // An improper tail: a term that is not a list.
                    self.pos = at;
                    let mut tail = Vec::new();
                    self.term(&mut tail, depth + 1)?;
                    if count == 0 {
                        // `[ | T]` with no elements is just T.
                        out.extend_from_slice(&tail);
                        return Ok(());
                    }
                    return self.finish_list(out, elems, count, false, &byte_vals, Some(tail));
                }
            }
        }
    }

    fn finish_list(
        &mut self,
        out: &mut Vec<u8>,
        elems: Vec<u8>,
        count: usize,
        all_bytes: bool,
        byte_vals: &[u8],
        tail: Option<Vec<u8>>,
    ) -> Result<(), CanonError> {
        if count == 0 && tail.is_none() {
            out.push(NIL_EXT);
            return Ok(());
        }
        if tail.is_none() && all_bytes && count <= 65535 {
            out.push(STRING_EXT);
            out.extend_from_slice(&(count as u16).to_be_bytes());
            out.extend_from_slice(byte_vals);
            return Ok(());
        }
        out.push(LIST_EXT);
        out.extend_from_slice(&(count as u32).to_be_bytes());
        out.extend_from_slice(&elems);
        match tail {
            Some(t) => out.extend_from_slice(&t),
            None => out.push(NIL_EXT),
        }
        Ok(())
    }

    fn new_fun(&mut self, out: &mut Vec<u8>, at: usize, depth: usize) -> Result<(), CanonError> {
        let size = self.u32()? as usize;
        // size counts itself and everything after the tag.
        if size < 4 || size - 4 > self.remaining() {
            return Err(CanonError::Truncated(at));
        }
        let end = self.pos - 4 + size;
        let mut body = Vec::new();
        body.push(self.u8()?); // arity
        body.extend_from_slice(self.take(16)?); // uniq
        body.extend_from_slice(self.take(4)?); // index
        let num_free = self.u32()? as usize;
        let num_free = self.count(num_free, 1)?;
        body.extend_from_slice(&(num_free as u32).to_be_bytes());
        self.atom(&mut body)?; // module
        self.term(&mut body, depth + 1)?; // old index
        self.term(&mut body, depth + 1)?; // old uniq
        let pid_at = self.pos;
        let mut pid = Vec::new();
        self.term(&mut pid, depth + 1)?;
        if pid.first() != Some(&NEW_PID_EXT) {
            return Err(CanonError::Invalid {
                what: "fun pid",
                pos: pid_at,
            });
        }
        body.extend_from_slice(&pid);
        for _ in 0..num_free {
            self.term(&mut body, depth + 1)?;
        }
        if self.pos != end {
            return Err(CanonError::Invalid {
                what: "fun size",
                pos: at,
            });
        }
        out.push(NEW_FUN_EXT);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }
}

/// Why an [`eetf::Term`] cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("atom longer than 255 characters")]
    AtomTooLong,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("{0} is not a valid term")]
    Invalid(&'static str),
    #[error("{0}")]
    Eetf(String),
}

/// Encodes an [`eetf::Term`] in canonical form (version byte included).
///
/// eetf's own encoder is not used for roles: it writes a list of small
/// negative integers as a `STRING_EXT` of wrapped bytes (`[-1]` becomes
/// `[255]`) and truncates byte lists past 65535 elements.
pub fn encode_term(term: &eetf::Term) -> Result<Vec<u8>, EncodeError> {
    let mut raw = vec![VERSION];
    write_any(&mut raw, term, 0)?;
    // One canonicalising pass turns the plain encoding into the canonical one
    // (map order, strings, integer sizes) with one set of rules.
    canonicalize(&raw).map_err(|e| EncodeError::Eetf(e.to_string()))
}

fn write_any(o: &mut Vec<u8>, t: &eetf::Term, depth: usize) -> Result<(), EncodeError> {
    use eetf::Term;
    if depth > MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    match t {
        Term::Atom(a) => write_atom_checked(o, &a.name)?,
        Term::FixInteger(i) => write_i64(o, i.value as i64),
        Term::BigInteger(b) => {
            let (sign, mag) = b.value.to_bytes_le();
            write_integer(o, sign == num_bigint::Sign::Minus, &mag);
        }
        Term::Float(f) => {
            if !f.value.is_finite() {
                return Err(EncodeError::Invalid("a non-finite float"));
            }
            o.push(NEW_FLOAT_EXT);
            o.extend_from_slice(&f.value.to_be_bytes());
        }
        Term::Pid(p) => {
            o.push(NEW_PID_EXT);
            write_atom_checked(o, &p.node.name)?;
            o.extend_from_slice(&p.id.to_be_bytes());
            o.extend_from_slice(&p.serial.to_be_bytes());
            o.extend_from_slice(&p.creation.to_be_bytes());
        }
        Term::Port(p) => {
            o.push(V4_PORT_EXT);
            write_atom_checked(o, &p.node.name)?;
            o.extend_from_slice(&p.id.to_be_bytes());
            o.extend_from_slice(&p.creation.to_be_bytes());
        }
        Term::Reference(r) => {
            if r.id.is_empty() || r.id.len() > 5 {
                return Err(EncodeError::Invalid("a reference of that length"));
            }
            o.push(NEWER_REFERENCE_EXT);
            o.extend_from_slice(&(r.id.len() as u16).to_be_bytes());
            write_atom_checked(o, &r.node.name)?;
            o.extend_from_slice(&r.creation.to_be_bytes());
            for id in &r.id {
                o.extend_from_slice(&id.to_be_bytes());
            }
        }
        Term::ExternalFun(f) => {
            o.push(EXPORT_EXT);
            write_atom_checked(o, &f.module.name)?;
            write_atom_checked(o, &f.function.name)?;
            o.push(SMALL_INTEGER_EXT);
            o.push(f.arity);
        }
        Term::InternalFun(_) => {
            // Rare as a role; eetf encodes funs correctly.
            let mut buf = Vec::new();
            t.encode(&mut buf)
                .map_err(|e| EncodeError::Eetf(e.to_string()))?;
            o.extend_from_slice(buf.get(1..).unwrap_or_default());
        }
        Term::Binary(b) => {
            o.push(BINARY_EXT);
            o.extend_from_slice(&(b.bytes.len() as u32).to_be_bytes());
            o.extend_from_slice(&b.bytes);
        }
        Term::BitBinary(b) => {
            o.push(BIT_BINARY_EXT);
            o.extend_from_slice(&(b.bytes.len() as u32).to_be_bytes());
            o.push(b.tail_bits_size);
            o.extend_from_slice(&b.bytes);
            // eetf keeps the partial last byte right-aligned; the wire has it left-aligned.
            if (1..=7).contains(&b.tail_bits_size) {
                if let Some(last) = o.last_mut() {
                    *last <<= 8 - b.tail_bits_size;
                }
            }
        }
        Term::ByteList(l) => {
            if l.bytes.is_empty() {
                o.push(NIL_EXT);
            } else {
                o.push(LIST_EXT);
                o.extend_from_slice(&(l.bytes.len() as u32).to_be_bytes());
                for b in &l.bytes {
                    o.push(SMALL_INTEGER_EXT);
                    o.push(*b);
                }
                o.push(NIL_EXT);
            }
        }
        Term::List(l) => {
            if !l.elements.is_empty() {
                o.push(LIST_EXT);
                o.extend_from_slice(&(l.elements.len() as u32).to_be_bytes());
                for e in &l.elements {
                    write_any(o, e, depth + 1)?;
                }
            }
            o.push(NIL_EXT);
        }
        Term::ImproperList(l) => {
            o.push(LIST_EXT);
            o.extend_from_slice(&(l.elements.len() as u32).to_be_bytes());
            for e in &l.elements {
                write_any(o, e, depth + 1)?;
            }
            write_any(o, &l.last, depth + 1)?;
        }
        Term::Tuple(tu) => {
            write_tuple_header(o, tu.elements.len());
            for e in &tu.elements {
                write_any(o, e, depth + 1)?;
            }
        }
        Term::Map(m) => {
            o.push(MAP_EXT);
            o.extend_from_slice(&(m.map.len() as u32).to_be_bytes());
            for (k, v) in &m.map {
                write_any(o, k, depth + 1)?;
                write_any(o, v, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn write_atom_checked(o: &mut Vec<u8>, name: &str) -> Result<(), EncodeError> {
    if name.chars().count() > 255 {
        return Err(EncodeError::AtomTooLong);
    }
    write_atom(o, name);
    Ok(())
}

/// Length in bytes of the canonical term that starts `bytes` (no version byte).
///
/// Only for bytes produced by [`canonicalize`]; anything else may give
/// `None`. Used to slice sub-terms out of a canonical message.
pub(crate) fn term_len(bytes: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    // Pending counts of terms still to skip, as an explicit stack (no recursion).
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let tag = *bytes.get(pos)?;
        pos += 1;
        let get = |p: usize, n: usize| bytes.get(p..p.checked_add(n)?);
        let be32 = |p: usize| -> Option<usize> {
            let b = get(p, 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        match tag {
            SMALL_INTEGER_EXT => pos += 1,
            INTEGER_EXT => pos += 4,
            SMALL_BIG_EXT => pos += 2 + *bytes.get(pos)? as usize,
            LARGE_BIG_EXT => pos += 5 + be32(pos)?,
            NEW_FLOAT_EXT => pos += 8,
            SMALL_ATOM_UTF8_EXT => pos += 1 + *bytes.get(pos)? as usize,
            ATOM_UTF8_EXT => {
                let b = get(pos, 2)?;
                pos += 2 + u16::from_be_bytes([b[0], b[1]]) as usize
            }
            SMALL_TUPLE_EXT => {
                pending += *bytes.get(pos)? as usize;
                pos += 1
            }
            LARGE_TUPLE_EXT => {
                pending += be32(pos)?;
                pos += 4
            }
            NIL_EXT => {}
            STRING_EXT => {
                let b = get(pos, 2)?;
                pos += 2 + u16::from_be_bytes([b[0], b[1]]) as usize
            }
            LIST_EXT => {
                pending += be32(pos)? + 1;
                pos += 4
            }
            BINARY_EXT => pos += 4 + be32(pos)?,
            BIT_BINARY_EXT => pos += 5 + be32(pos)?,
            MAP_EXT => {
                pending += 2 * be32(pos)?;
                pos += 4
            }
            NEW_PID_EXT => {
                let node_len = term_len(bytes.get(pos..)?)?;
                pos += node_len + 12;
            }
            NEW_PORT_EXT | V4_PORT_EXT => {
                let node_len = term_len(bytes.get(pos..)?)?;
                pos += node_len + if tag == NEW_PORT_EXT { 8 } else { 12 };
            }
            NEWER_REFERENCE_EXT => {
                let b = get(pos, 2)?;
                let len = u16::from_be_bytes([b[0], b[1]]) as usize;
                pos += 2;
                let node_len = term_len(bytes.get(pos..)?)?;
                pos += node_len + 4 + 4 * len;
            }
            EXPORT_EXT => pending += 3,
            NEW_FUN_EXT => pos += be32(pos)?,
            _ => return None,
        }
        if pos > bytes.len() {
            return None;
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(bytes: &[u8]) -> Vec<u8> {
        canonicalize(bytes).unwrap()
    }

    #[test]
    fn atoms_in_every_encoding_agree() {
        let a = canon(&[131, 100, 0, 3, b'f', b'o', b'o']);
        let b = canon(&[131, 115, 3, b'f', b'o', b'o']);
        let c = canon(&[131, 118, 0, 3, b'f', b'o', b'o']);
        let d = canon(&[131, 119, 3, b'f', b'o', b'o']);
        assert_eq!(a, d);
        assert_eq!(b, d);
        assert_eq!(c, d);
        assert_eq!(d, vec![131, 119, 3, b'f', b'o', b'o']);
    }

    #[test]
    fn latin1_atoms_become_utf8() {
        // 'é' in Latin-1 is 0xE9; in UTF-8 it is C3 A9.
        let a = canon(&[131, 115, 1, 0xE9]);
        assert_eq!(a, vec![131, 119, 2, 0xC3, 0xA9]);
    }

    #[test]
    fn integers_in_every_encoding_agree() {
        let small = canon(&[131, 97, 5]);
        let int = canon(&[131, 98, 0, 0, 0, 5]);
        let big = canon(&[131, 110, 1, 0, 5]);
        let big_padded = canon(&[131, 110, 3, 0, 5, 0, 0]);
        let large = canon(&[131, 111, 0, 0, 0, 1, 0, 5]);
        for x in [&int, &big, &big_padded, &large] {
            assert_eq!(x, &small);
        }
        // -1 as INTEGER and as SMALL_BIG.
        assert_eq!(
            canon(&[131, 98, 255, 255, 255, 255]),
            canon(&[131, 110, 1, 1, 1])
        );
        // 2^31 needs a big; i32::MIN stays INTEGER.
        assert_eq!(canon(&[131, 110, 4, 0, 0, 0, 0, 128])[1], SMALL_BIG_EXT);
        assert_eq!(canon(&[131, 110, 4, 1, 0, 0, 0, 128])[1], INTEGER_EXT);
        // Zero with a sign is zero.
        assert_eq!(canon(&[131, 110, 1, 1, 0]), vec![131, 97, 0]);
    }

    #[test]
    fn strings_and_byte_lists_agree() {
        let s = canon(&[131, 107, 0, 2, 1, 2]);
        let l = canon(&[131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 106]);
        assert_eq!(s, l);
        // [1 | [2]] is [1, 2].
        let chained = canon(&[131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 106]);
        assert_eq!(chained, s);
        // An empty STRING_EXT is [].
        assert_eq!(canon(&[131, 107, 0, 0]), vec![131, 106]);
        // An improper list stays improper.
        let improper = canon(&[131, 108, 0, 0, 0, 1, 97, 1, 97, 2]);
        assert_eq!(improper, vec![131, 108, 0, 0, 0, 1, 97, 1, 97, 2]);
    }

    #[test]
    fn map_key_order_does_not_matter() {
        let ab = canon(&[
            131, 116, 0, 0, 0, 2, 119, 1, b'a', 97, 1, 119, 1, b'b', 97, 2,
        ]);
        let ba = canon(&[
            131, 116, 0, 0, 0, 2, 119, 1, b'b', 97, 2, 119, 1, b'a', 97, 1,
        ]);
        assert_eq!(ab, ba);
        let dup = canonicalize(&[
            131, 116, 0, 0, 0, 2, 119, 1, b'a', 97, 1, 119, 1, b'a', 97, 2,
        ]);
        assert!(matches!(dup, Err(CanonError::DuplicateKey(_))));
    }

    #[test]
    fn floats_old_and_new_agree() {
        let mut old = vec![131, 99];
        let text = format!("{:.20e}", 1.5f64);
        let mut field = text.into_bytes();
        field.resize(31, 0);
        old.extend_from_slice(&field);
        let mut new = vec![131, 70];
        new.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(canon(&old), canon(&new));
        // 1 and 1.0 differ.
        assert_ne!(
            canon(&[131, 97, 1]),
            canon(&{
                let mut v = vec![131, 70];
                v.extend_from_slice(&1.0f64.to_be_bytes());
                v
            })
        );
    }

    #[test]
    fn hostile_input_is_refused() {
        assert_eq!(canonicalize(&[]), Err(CanonError::Empty));
        assert_eq!(
            canonicalize(&[130, 97, 1]),
            Err(CanonError::BadVersion(130))
        );
        assert!(matches!(
            canonicalize(&[131, 82, 0]),
            Err(CanonError::AtomCacheRef(_))
        ));
        // A list claiming 4 billion elements in 10 bytes.
        assert!(matches!(
            canonicalize(&[131, 108, 255, 255, 255, 255, 97, 1]),
            Err(CanonError::Truncated(_))
        ));
        // A binary claiming more bytes than there are.
        assert!(canonicalize(&[131, 109, 0, 0, 1, 0, 1]).is_err());
        // Nesting past the bound.
        let mut deep = vec![131];
        for _ in 0..(MAX_DEPTH + 5) {
            deep.extend_from_slice(&[104, 1]);
        }
        deep.push(106);
        assert_eq!(canonicalize(&deep), Err(CanonError::TooDeep));
        // Trailing bytes.
        assert_eq!(canonicalize(&[131, 106, 0]), Err(CanonError::Trailing(1)));
        // A compressed term that claims a huge size.
        assert!(canonicalize(&[131, 80, 255, 255, 255, 255, 120, 156]).is_err());
    }

    #[test]
    fn term_len_walks_canonical_terms() {
        let t = canon(&[131, 104, 2, 119, 1, b'a', 108, 0, 0, 0, 1, 104, 0, 97, 1]);
        assert_eq!(term_len(&t[1..]), Some(t.len() - 1));
    }
}
