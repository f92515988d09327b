//! Small helpers to build and take apart `eetf` terms.
//!
//! Owns: constructors (`atom`, `tuple`, ...), accessors that return `Option`
//! (never panic on a peer's shapes), and the normalisation of lists (`ByteList`
//! and `List` both mean a list). Knows nothing of the network.

use eetf::{Atom, BigInteger, Binary, FixInteger, ImproperList, List, Pid, Reference, Term, Tuple};

/// An atom term.
pub fn atom(name: &str) -> Term {
    Term::Atom(Atom::from(name))
}

/// An integer term (small or big as needed).
pub fn int(v: i64) -> Term {
    match i32::try_from(v) {
        Ok(small) => Term::FixInteger(FixInteger::from(small)),
        Err(_) => Term::BigInteger(BigInteger::from(v)),
    }
}

/// A tuple term.
pub fn tuple(elements: Vec<Term>) -> Term {
    Term::Tuple(Tuple::from(elements))
}

/// A proper list term.
pub fn list(elements: Vec<Term>) -> Term {
    Term::List(List::from(elements))
}

/// The empty list.
pub fn nil() -> Term {
    Term::List(List::nil())
}

/// A binary term.
pub fn bin(bytes: &[u8]) -> Term {
    Term::Binary(Binary::from(bytes))
}

/// An improper list `[head | tail]`.
pub fn improper(head: Vec<Term>, tail: Term) -> Term {
    Term::ImproperList(ImproperList::from((head, tail)))
}

/// `true` / `false`.
pub fn boolean(b: bool) -> Term {
    atom(if b { "true" } else { "false" })
}

/// Returns the atom's name if `t` is an atom.
pub fn as_atom(t: &Term) -> Option<&str> {
    match t {
        Term::Atom(a) => Some(a.name.as_str()),
        _ => None,
    }
}

/// Returns the elements if `t` is a tuple.
pub fn as_tuple(t: &Term) -> Option<&[Term]> {
    match t {
        Term::Tuple(x) => Some(&x.elements),
        _ => None,
    }
}

/// Returns the pid if `t` is a pid.
pub fn as_pid(t: &Term) -> Option<&Pid> {
    match t {
        Term::Pid(p) => Some(p),
        _ => None,
    }
}

/// Returns the reference if `t` is a reference.
pub fn as_ref(t: &Term) -> Option<&Reference> {
    match t {
        Term::Reference(r) => Some(r),
        _ => None,
    }
}

/// Returns the integer if `t` is an integer that fits in i64.
pub fn as_int(t: &Term) -> Option<i64> {
    match t {
        Term::FixInteger(i) => Some(i64::from(i.value)),
        Term::BigInteger(b) => i64::try_from(&b.value).ok(),
        _ => None,
    }
}

/// Returns the elements of a proper list (a `ByteList` becomes small ints).
pub fn as_list(t: &Term) -> Option<Vec<Term>> {
    match t {
        Term::List(l) => Some(l.elements.clone()),
        Term::ByteList(b) => Some(b.bytes.iter().map(|x| int(i64::from(*x))).collect()),
        _ => None,
    }
}

/// Borrowing variant of [`as_list`] for `List` only (`ByteList` yields None).
pub fn as_list_ref(t: &Term) -> Option<&[Term]> {
    match t {
        Term::List(l) => Some(&l.elements),
        _ => None,
    }
}

/// A tuple whose first element is the atom `tag`: returns the elements.
pub fn tagged<'a>(t: &'a Term, tag: &str) -> Option<&'a [Term]> {
    let els = as_tuple(t)?;
    (as_atom(els.first()?)? == tag).then_some(els)
}

/// Is `t` the atom `name`?
pub fn is_atom(t: &Term, name: &str) -> bool {
    as_atom(t) == Some(name)
}
