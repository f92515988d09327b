//! Atoms that name things: node names and scopes.
//!
//! Owns the [`Atom`] type only. Roles are not atoms here (a role is any term,
//! see [`crate::role`]); an atom used as a role is a [`crate::Role`].

use std::fmt;
use std::sync::Arc;

/// An Erlang atom used as a node name or a scope, e.g. `rust1@127.0.0.1` or
/// `ClusterHelper` (written `Elixir.ClusterHelper` on the wire).
///
/// Cheap to clone (a shared string); ordered by its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Atom(Arc<str>);

impl Atom {
    /// Makes an atom from its text.
    ///
    /// ```
    /// let a = cluster_helper_core::Atom::new("web@host");
    /// assert_eq!(a.as_str(), "web@host");
    /// ```
    pub fn new(text: &str) -> Atom {
        Atom(Arc::from(text))
    }

    /// The atom's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::new(s)
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom(Arc::from(s))
    }
}

impl AsRef<str> for Atom {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A node name.
pub type NodeName = Atom;
/// A scope name.
pub type Scope = Atom;
