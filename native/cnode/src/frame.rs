//! Distribution framing and bounded term decoding.
//!
//! Owns: the byte layout of a post-handshake frame (4-byte big-endian length,
//! length 0 = tick, else `112` pass-through then control term and optional
//! payload term) and the *validation* of every external-term byte that comes
//! from a peer before `eetf` sees it. Does not touch sockets or node state.
//!
//! `eetf` trusts its input: it panics on `ATOM_CACHE_REF`, on a bit-binary
//! with 0 tail bits, and pre-allocates whatever length a header claims. So a
//! frame is first walked by [`validate_term`], which checks every length
//! against the bytes really present, bounds nesting depth, and rejects tags
//! we never negotiated (atom cache, compressed terms, distribution headers).

use eetf::Term;
use thiserror::Error;

/// Pass-through marker that starts every non-tick frame (no atom cache).
pub const PASS_THROUGH: u8 = 112;
const VERSION: u8 = 131;
/// Deepest nesting accepted from a peer (stack safety for `eetf`'s recursion).
pub const MAX_DEPTH: usize = 256;

/// Why a frame was rejected. Any of these closes only that connection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("frame does not start with pass-through byte 112 (got {0})")]
    NotPassThrough(u8),
    #[error("truncated term at byte {0}")]
    Truncated(usize),
    #[error("bad version byte {0}")]
    BadVersion(u8),
    #[error("unsupported or unknown term tag {tag} at byte {at}")]
    BadTag { tag: u8, at: usize },
    #[error("term nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("invalid term content at byte {0}")]
    Invalid(usize),
    #[error("trailing bytes after payload")]
    Trailing,
    #[error("empty frame body")]
    Empty,
    #[error("decoder rejected term: {0}")]
    Decode(String),
}

/// Walks one external term (without the 131 version byte) starting at `pos`
/// and returns the position just after it, never reading past `buf`.
pub fn validate_term(buf: &[u8], pos: usize) -> Result<usize, FrameError> {
    walk(buf, pos, 0)
}

fn need(buf: &[u8], pos: usize, n: usize) -> Result<(), FrameError> {
    match pos.checked_add(n) {
        Some(end) if end <= buf.len() => Ok(()),
        _ => Err(FrameError::Truncated(pos)),
    }
}

fn u8_at(buf: &[u8], pos: usize) -> Result<u8, FrameError> {
    buf.get(pos).copied().ok_or(FrameError::Truncated(pos))
}

fn u16_at(buf: &[u8], pos: usize) -> Result<usize, FrameError> {
    need(buf, pos, 2)?;
    Ok(u16::from_be_bytes([buf[pos], buf[pos + 1]]) as usize)
}

fn u32_at(buf: &[u8], pos: usize) -> Result<usize, FrameError> {
    need(buf, pos, 4)?;
    Ok(u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize)
}

fn skip(buf: &[u8], pos: usize, n: usize) -> Result<usize, FrameError> {
    need(buf, pos, n)?;
    Ok(pos + n)
}

/// Like `walk` but the term must be an atom (node names inside pids, refs, ...).
fn walk_atom(buf: &[u8], pos: usize) -> Result<usize, FrameError> {
    let tag = u8_at(buf, pos)?;
    let p = pos + 1;
    match tag {
        100 | 118 => {
            let n = u16_at(buf, p)?;
            check_atom_text(buf, p + 2, n, tag == 118)
        }
        115 | 119 => {
            let n = u8_at(buf, p)? as usize;
            check_atom_text(buf, p + 1, n, tag == 119)
        }
        _ => Err(FrameError::BadTag { tag, at: pos }),
    }
}

fn check_atom_text(buf: &[u8], pos: usize, n: usize, utf8: bool) -> Result<usize, FrameError> {
    need(buf, pos, n)?;
    if utf8 && std::str::from_utf8(&buf[pos..pos + n]).is_err() {
        return Err(FrameError::Invalid(pos));
    }
    Ok(pos + n)
}

fn walk(buf: &[u8], pos: usize, depth: usize) -> Result<usize, FrameError> {
    if depth > MAX_DEPTH {
        return Err(FrameError::TooDeep);
    }
    let tag = u8_at(buf, pos)?;
    let p = pos + 1;
    let d = depth + 1;
    match tag {
        // NEW_FLOAT_EXT
        70 => skip(buf, p, 8),
        // BIT_BINARY_EXT: eetf shifts by (8 - bits): bits must be 1..=8, len >= 1
        77 => {
            let len = u32_at(buf, p)?;
            let bits = u8_at(buf, p + 4)?;
            if !(1..=8).contains(&bits) || len == 0 {
                return Err(FrameError::Invalid(p + 4));
            }
            skip(buf, p + 5, len)
        }
        // SMALL_INTEGER_EXT, INTEGER_EXT
        97 => skip(buf, p, 1),
        98 => skip(buf, p, 4),
        // FLOAT_EXT: 31 bytes of text
        99 => {
            need(buf, p, 31)?;
            let text = &buf[p..p + 31];
            let s = text.split(|b| *b == 0).next().unwrap_or(&[]);
            match std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
            {
                Some(_) => Ok(p + 31),
                None => Err(FrameError::Invalid(p)),
            }
        }
        // atoms
        100 | 115 | 118 | 119 => walk_atom(buf, pos),
        // REFERENCE_EXT (old): atom, u32 id, u8 creation
        101 => skip(buf, walk_atom(buf, p)?, 5),
        // PORT_EXT, NEW_PORT_EXT, V4_PORT_EXT
        102 => skip(buf, walk_atom(buf, p)?, 5),
        89 => skip(buf, walk_atom(buf, p)?, 8),
        120 => skip(buf, walk_atom(buf, p)?, 12),
        // PID_EXT, NEW_PID_EXT
        103 => skip(buf, walk_atom(buf, p)?, 9),
        88 => skip(buf, walk_atom(buf, p)?, 12),
        // SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
        104 => {
            let n = u8_at(buf, p)? as usize;
            walk_n(buf, p + 1, n, d)
        }
        105 => {
            let n = u32_at(buf, p)?;
            walk_n(buf, p + 4, n, d)
        }
        // NIL_EXT
        106 => Ok(p),
        // STRING_EXT
        107 => {
            let n = u16_at(buf, p)?;
            skip(buf, p + 2, n)
        }
        // LIST_EXT: n elements + tail
        108 => {
            let n = u32_at(buf, p)?;
            let after = walk_n(buf, p + 4, n, d)?;
            walk(buf, after, d)
        }
        // BINARY_EXT
        109 => {
            let n = u32_at(buf, p)?;
            skip(buf, p + 4, n)
        }
        // SMALL_BIG_EXT, LARGE_BIG_EXT
        110 | 111 => {
            let (n, q) = if tag == 110 {
                (u8_at(buf, p)? as usize, p + 1)
            } else {
                (u32_at(buf, p)?, p + 4)
            };
            let sign = u8_at(buf, q)?;
            if sign > 1 {
                return Err(FrameError::Invalid(q));
            }
            skip(buf, q + 1, n)
        }
        // NEW_FUN_EXT: size, arity, uniq16, index, numfree, module, oldindex, olduniq, pid, free vars
        112 => {
            let size = u32_at(buf, p)?;
            need(buf, p, size)?;
            let mut q = p + 4 + 1 + 16 + 4;
            let numfree = u32_at(buf, q)?;
            q += 4;
            q = walk_atom(buf, q)?;
            q = walk_int(buf, q)?;
            q = walk_int(buf, q)?;
            q = walk_pid(buf, q)?;
            q = walk_n(buf, q, numfree, d)?;
            if q != p + size {
                return Err(FrameError::Invalid(p));
            }
            Ok(q)
        }
        // EXPORT_EXT: module atom, function atom, arity small int
        113 => {
            let q = walk_atom(buf, p)?;
            let q = walk_atom(buf, q)?;
            if u8_at(buf, q)? != 97 {
                return Err(FrameError::Invalid(q));
            }
            skip(buf, q + 1, 1)
        }
        // NEW_REFERENCE_EXT, NEWER_REFERENCE_EXT: len u16 (max 5 words), atom, creation, ids
        114 | 90 => {
            let n = u16_at(buf, p)?;
            if n > 5 {
                return Err(FrameError::Invalid(p));
            }
            let q = walk_atom(buf, p + 2)?;
            let creation = if tag == 114 { 1 } else { 4 };
            skip(buf, q, creation + 4 * n)
        }
        // MAP_EXT: n key/value pairs
        116 => {
            let n = u32_at(buf, p)?;
            let pairs = n.checked_mul(2).ok_or(FrameError::Invalid(p))?;
            walk_n(buf, p + 4, pairs, d)
        }
        // FUN_EXT (old): numfree, pid, module, index, uniq, free vars
        117 => {
            let numfree = u32_at(buf, p)?;
            let mut q = walk_pid(buf, p + 4)?;
            q = walk_atom(buf, q)?;
            q = walk_int(buf, q)?;
            q = walk_int(buf, q)?;
            walk_n(buf, q, numfree, d)
        }
        // 82 ATOM_CACHE_REF, 80 compressed, 68 dist header, 121 LOCAL_EXT, anything else
        _ => Err(FrameError::BadTag { tag, at: pos }),
    }
}

fn walk_int(buf: &[u8], pos: usize) -> Result<usize, FrameError> {
    match u8_at(buf, pos)? {
        97 => skip(buf, pos + 1, 1),
        98 => skip(buf, pos + 1, 4),
        tag => Err(FrameError::BadTag { tag, at: pos }),
    }
}

fn walk_pid(buf: &[u8], pos: usize) -> Result<usize, FrameError> {
    match u8_at(buf, pos)? {
        103 => skip(buf, walk_atom(buf, pos + 1)?, 9),
        88 => skip(buf, walk_atom(buf, pos + 1)?, 12),
        tag => Err(FrameError::BadTag { tag, at: pos }),
    }
}

fn walk_n(buf: &[u8], mut pos: usize, n: usize, depth: usize) -> Result<usize, FrameError> {
    // Every element takes at least one byte: a count beyond the remaining
    // bytes is a lie, rejected before any work (and before eetf allocates).
    if n > buf.len().saturating_sub(pos) {
        return Err(FrameError::Truncated(pos));
    }
    for _ in 0..n {
        pos = walk(buf, pos, depth)?;
    }
    Ok(pos)
}

/// Validates then decodes one versioned term (`131` + term) at `pos`.
/// Returns the term and the position after it.
pub fn decode_term_at(buf: &[u8], pos: usize) -> Result<(Term, usize), FrameError> {
    let v = u8_at(buf, pos)?;
    if v != VERSION {
        return Err(FrameError::BadVersion(v));
    }
    let end = validate_term(buf, pos + 1)?;
    let slice = &buf[pos..end];
    // The validator rejects everything eetf is known to panic on; the
    // catch_unwind is a second fence so a peer can never take the node down.
    let res = std::panic::catch_unwind(|| Term::decode(std::io::Cursor::new(slice)));
    match res {
        Ok(Ok(t)) => Ok((t, end)),
        Ok(Err(e)) => Err(FrameError::Decode(e.to_string())),
        Err(_) => Err(FrameError::Decode("decoder panicked".into())),
    }
}

/// Decodes a frame body (after the length prefix, length > 0) into its
/// control term and optional payload term.
pub fn decode_body(body: &[u8]) -> Result<(Term, Option<Term>), FrameError> {
    let first = *body.first().ok_or(FrameError::Empty)?;
    if first != PASS_THROUGH {
        return Err(FrameError::NotPassThrough(first));
    }
    let (ctrl, end) = decode_term_at(body, 1)?;
    if end == body.len() {
        return Ok((ctrl, None));
    }
    let (payload, end2) = decode_term_at(body, end)?;
    if end2 != body.len() {
        return Err(FrameError::Trailing);
    }
    Ok((ctrl, Some(payload)))
}

/// Encodes a full frame (length prefix included) for a control term and
/// optional payload.
pub fn encode_frame(ctrl: &Term, payload: Option<&Term>) -> Result<Vec<u8>, eetf::EncodeError> {
    let mut buf = vec![0u8, 0, 0, 0, PASS_THROUGH];
    encode_term(ctrl, &mut buf)?;
    if let Some(p) = payload {
        encode_term(p, &mut buf)?;
    }
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Encodes `131` + `term`. Containers are written here; leaves by `eetf`.
///
/// `eetf` 0.11 writes a list of small integers as `STRING_EXT` even when
/// some are negative (`[-1]` would arrive as `[255]`): lists are ours.
pub fn encode_term(term: &Term, buf: &mut Vec<u8>) -> Result<(), eetf::EncodeError> {
    buf.push(VERSION);
    encode_inner(term, buf)
}

fn encode_inner(term: &Term, buf: &mut Vec<u8>) -> Result<(), eetf::EncodeError> {
    match term {
        Term::List(l) if l.elements.is_empty() => buf.push(106),
        Term::List(l) => {
            let bytes: Option<Vec<u8>> = l
                .elements
                .iter()
                .map(|e| match e {
                    Term::FixInteger(i) => u8::try_from(i.value).ok(),
                    _ => None,
                })
                .collect();
            match bytes {
                Some(b) if b.len() <= usize::from(u16::MAX) => {
                    buf.push(107);
                    buf.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    buf.extend_from_slice(&b);
                }
                _ => {
                    encode_list_header(l.elements.len(), buf)?;
                    for e in &l.elements {
                        encode_inner(e, buf)?;
                    }
                    buf.push(106);
                }
            }
        }
        Term::ImproperList(l) => {
            encode_list_header(l.elements.len(), buf)?;
            for e in &l.elements {
                encode_inner(e, buf)?;
            }
            encode_inner(&l.last, buf)?;
        }
        Term::Tuple(t) => {
            match u8::try_from(t.elements.len()) {
                Ok(n) => buf.extend_from_slice(&[104, n]),
                Err(_) => {
                    buf.push(105);
                    buf.extend_from_slice(
                        &u32::try_from(t.elements.len())
                            .map_err(|_| too_big())?
                            .to_be_bytes(),
                    );
                }
            }
            for e in &t.elements {
                encode_inner(e, buf)?;
            }
        }
        Term::Map(m) => {
            buf.push(116);
            buf.extend_from_slice(
                &u32::try_from(m.map.len())
                    .map_err(|_| too_big())?
                    .to_be_bytes(),
            );
            for (k, v) in &m.map {
                encode_inner(k, buf)?;
                encode_inner(v, buf)?;
            }
        }
        leaf => {
            let start = buf.len();
            leaf.encode(&mut *buf)?;
            buf.remove(start); // eetf's version byte
        }
    }
    Ok(())
}

fn encode_list_header(n: usize, buf: &mut Vec<u8>) -> Result<(), eetf::EncodeError> {
    buf.push(108);
    buf.extend_from_slice(&u32::try_from(n).map_err(|_| too_big())?.to_be_bytes());
    Ok(())
}

fn too_big() -> eetf::EncodeError {
    eetf::EncodeError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "term too large",
    ))
}

/// A tick frame: a zero length.
pub const TICK: [u8; 4] = [0, 0, 0, 0];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::*;

    #[test]
    fn roundtrip() {
        let ctrl = tuple(vec![int(2), atom(""), atom("x")]);
        let payload = tuple(vec![
            atom("hello"),
            bin(b"abc"),
            list(vec![int(1), int(300)]),
        ]);
        let f = encode_frame(&ctrl, Some(&payload)).unwrap();
        let (c, p) = decode_body(&f[4..]).unwrap();
        assert_eq!(c, ctrl);
        assert_eq!(p, Some(payload));
    }

    #[test]
    fn negative_small_ints_in_lists_survive() {
        let t = list(vec![int(-1), int(2), int(255), int(256)]);
        let mut buf = Vec::new();
        encode_term(&list(vec![int(-1)]), &mut buf).unwrap();
        let (back, _) = decode_term_at(&buf, 0).unwrap();
        assert_eq!(as_list(&back), Some(vec![int(-1)]));
        let mut buf = Vec::new();
        encode_term(&t, &mut buf).unwrap();
        let (back, _) = decode_term_at(&buf, 0).unwrap();
        assert_eq!(back, t);
        let mut buf = Vec::new();
        encode_term(&list(vec![int(104), int(105)]), &mut buf).unwrap();
        assert_eq!(buf, vec![131, 107, 0, 2, 104, 105]);
    }

    #[test]
    fn rejects_atom_cache_ref_and_bad_bits() {
        assert!(decode_body(&[112, 131, 82, 0]).is_err());
        assert!(decode_body(&[112, 131, 77, 0, 0, 0, 1, 0, 5]).is_err());
        assert!(decode_body(&[112, 131, 108, 255, 255, 255, 255]).is_err());
        assert!(decode_body(&[112, 131, 80, 0, 0, 0, 1]).is_err());
    }
}
