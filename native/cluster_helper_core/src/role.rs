//! Roles: any Erlang term, compared with Erlang's exact equality.
//!
//! Owns [`Role`], which holds the canonical external-term bytes of a term
//! (see [`crate::canon`]), so that hashing, equality and ordering are byte
//! operations, and the same term lands in the same index slot whoever encoded
//! it. Knows nothing of scopes, nodes or the index.

use std::fmt;
use std::sync::Arc;

use crate::canon::{self, CanonError, VERSION};

/// Why a term cannot be a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The bytes are not a valid external term.
    #[error("invalid external term: {0}")]
    Canon(#[from] CanonError),
    /// eetf could not encode the term (e.g. an atom longer than 255 characters).
    #[error("cannot encode term: {0}")]
    Encode(String),
}

/// A role: any Erlang term, kept as canonical external-term bytes.
///
/// Two roles are equal exactly when the terms are `=:=` (so `1` and `1.0`
/// differ, and maps are equal whatever their key order on the wire).
/// Cheap to clone.
///
/// ```
/// use cluster_helper_core::Role;
/// // `web` as an old Latin-1 atom and as a UTF-8 atom.
/// let a = Role::from_etf(&[131, 100, 0, 3, b'w', b'e', b'b']).unwrap();
/// let b = Role::atom("web");
/// assert_eq!(a, b);
/// assert_eq!(b.to_string(), "web");
/// assert_ne!(Role::int(1), Role::float(1.0));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Role(Arc<[u8]>);

impl Role {
    /// A role from a complete external term (`term_to_binary/1,2` output) in
    /// any valid encoding.
    pub fn from_etf(bytes: &[u8]) -> Result<Role, RoleError> {
        Ok(Role(Arc::from(canon::canonicalize(bytes)?)))
    }

    /// A role from a term body (external term without the version byte).
    pub fn from_body(body: &[u8]) -> Result<Role, RoleError> {
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(VERSION);
        canon::canonicalize_body(body, &mut out)?;
        Ok(Role(Arc::from(out)))
    }

    /// A role from bytes already in canonical form (no version byte).
    /// Crate-internal: callers outside have no way to know bytes are canonical.
    pub(crate) fn from_canonical_body(body: &[u8]) -> Role {
        let mut v = Vec::with_capacity(body.len() + 1);
        v.push(VERSION);
        v.extend_from_slice(body);
        Role(Arc::from(v))
    }

    /// A role from an [`eetf::Term`].
    pub fn from_term(term: &eetf::Term) -> Result<Role, RoleError> {
        let bytes = canon::encode_term(term).map_err(|e| RoleError::Encode(e.to_string()))?;
        Ok(Role(Arc::from(bytes)))
    }

    /// The role as an [`eetf::Term`].
    pub fn to_term(&self) -> eetf::Term {
        // Canonical bytes are valid external terms of tags eetf decodes.
        eetf::Term::decode(&self.0[..]).unwrap_or_else(|_| {
            eetf::Term::from(eetf::Atom::from("cluster_helper_undecodable_role"))
        })
    }

    /// The canonical external term, version byte included (`binary_to_term/1` input).
    pub fn as_etf(&self) -> &[u8] {
        &self.0
    }

    /// The canonical term without the version byte.
    pub fn body(&self) -> &[u8] {
        &self.0[1..]
    }

    /// The atom role `text`.
    pub fn atom(text: &str) -> Role {
        let mut v = vec![VERSION];
        canon::write_atom(&mut v, text);
        Role(Arc::from(v))
    }

    /// The integer role `v`.
    pub fn int(v: i64) -> Role {
        let mut out = vec![VERSION];
        canon::write_i64(&mut out, v);
        Role(Arc::from(out))
    }

    /// The float role `v` (not equal to the integer of the same value).
    /// Non-finite values, which Erlang has no terms for, become `0.0`.
    pub fn float(v: f64) -> Role {
        let v = if v.is_finite() { v } else { 0.0 };
        let mut out = vec![VERSION, canon::NEW_FLOAT_EXT];
        out.extend_from_slice(&v.to_be_bytes());
        Role(Arc::from(out))
    }

    /// The binary role `<<"text">>` (an Elixir string).
    pub fn binary(bytes: impl AsRef<[u8]>) -> Role {
        let b = bytes.as_ref();
        let mut out = Vec::with_capacity(b.len() + 6);
        out.push(VERSION);
        out.push(canon::BINARY_EXT);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
        Role(Arc::from(out))
    }

    /// The tuple role `{e1, e2, ...}`.
    pub fn tuple(elems: &[Role]) -> Role {
        let mut out = vec![VERSION];
        canon::write_tuple_header(&mut out, elems.len());
        for e in elems {
            out.extend_from_slice(e.body());
        }
        Role(Arc::from(out))
    }
}

impl std::borrow::Borrow<[u8]> for Role {
    /// Lookups by canonical bytes (version byte included), without building a `Role`.
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Role {
    /// Erlang syntax, for logs and the CLI: `web`, `{shard,1}`, `<<"cache">>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_erlang(f, &self.to_term())
    }
}

const RESERVED: &[&str] = &[
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
    "rem", "try", "when", "xor", "maybe", "else",
];

fn write_atom_text(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let mut chars = name.chars();
    let plain = matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        && !RESERVED.contains(&name);
    if plain {
        f.write_str(name)
    } else {
        f.write_str("'")?;
        for c in name.chars() {
            match c {
                '\'' => f.write_str("\\'")?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("'")
    }
}

fn write_seq(f: &mut fmt::Formatter<'_>, items: &[eetf::Term]) -> fmt::Result {
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write_erlang(f, t)?;
    }
    Ok(())
}

fn write_erlang(f: &mut fmt::Formatter<'_>, t: &eetf::Term) -> fmt::Result {
    use eetf::Term;
    match t {
        Term::Atom(a) => write_atom_text(f, &a.name),
        Term::FixInteger(i) => write!(f, "{}", i.value),
        Term::BigInteger(i) => write!(f, "{}", i.value),
        Term::Float(x) => write!(f, "{:?}", x.value),
        Term::Binary(b) => match std::str::from_utf8(&b.bytes) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "<<{:?}>>", s),
            _ => {
                f.write_str("<<")?;
                for (i, byte) in b.bytes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{byte}")?;
                }
                f.write_str(">>")
            }
        },
        Term::ByteList(l) => {
            if !l.bytes.is_empty() && l.bytes.iter().all(|&b| (32..127).contains(&b)) {
                write!(f, "{:?}", String::from_utf8_lossy(&l.bytes))
            } else {
                f.write_str("[")?;
                for (i, byte) in l.bytes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{byte}")?;
                }
                f.write_str("]")
            }
        }
        Term::List(l) => {
            f.write_str("[")?;
            write_seq(f, &l.elements)?;
            f.write_str("]")
        }
        Term::ImproperList(l) => {
            f.write_str("[")?;
            write_seq(f, &l.elements)?;
            f.write_str("|")?;
            write_erlang(f, &l.last)?;
            f.write_str("]")
        }
        Term::Tuple(tu) => {
            f.write_str("{")?;
            write_seq(f, &tu.elements)?;
            f.write_str("}")
        }
        Term::Map(m) => {
            // Print in canonical key order so equal maps print alike.
            let mut pairs: Vec<(Role, &eetf::Term)> = m
                .map
                .iter()
                .filter_map(|(k, v)| Role::from_term(k).ok().map(|r| (r, v)))
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            f.write_str("#{")?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k} => ")?;
                write_erlang(f, v)?;
            }
            f.write_str("}")
        }
        other => write!(f, "{other}"),
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Role({})", self)
    }
}

impl From<&eetf::Term> for Role {
    /// Panics only on terms eetf cannot encode; prefer [`Role::from_term`] for input.
    fn from(t: &eetf::Term) -> Role {
        Role::from_term(t).expect("term eetf can encode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eetf::{Atom as EAtom, BigInteger, FixInteger, Map, Term, Tuple};

    #[test]
    fn helpers_match_terms() {
        assert_eq!(
            Role::atom("web"),
            Role::from_term(&Term::from(EAtom::from("web"))).unwrap()
        );
        assert_eq!(
            Role::int(7),
            Role::from_term(&Term::from(FixInteger::from(7))).unwrap()
        );
        assert_eq!(
            Role::int(1 << 40),
            Role::from_term(&Term::from(BigInteger::from(1i64 << 40))).unwrap()
        );
        assert_eq!(
            Role::tuple(&[Role::atom("shard"), Role::int(1)]),
            Role::from_term(&Term::from(Tuple::from(vec![
                Term::from(EAtom::from("shard")),
                Term::from(FixInteger::from(1))
            ])))
            .unwrap()
        );
    }

    #[test]
    fn round_trips_through_eetf() {
        let mut m = std::collections::HashMap::new();
        m.insert(
            Term::from(EAtom::from("b")),
            Term::from(FixInteger::from(2)),
        );
        m.insert(
            Term::from(EAtom::from("a")),
            Term::from(FixInteger::from(1)),
        );
        let t = Term::from(Map::from(m));
        let r = Role::from_term(&t).unwrap();
        assert_eq!(Role::from_term(&r.to_term()).unwrap(), r);
    }

    #[test]
    fn display_is_erlang_like() {
        assert_eq!(
            Role::tuple(&[Role::atom("shard"), Role::int(1)]).to_string(),
            "{shard,1}"
        );
    }
}
