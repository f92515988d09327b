//! Every message ClusterHelper nodes send each other, written once.
//!
//! Owns the shapes of the messages and their encoding to and from external
//! term bytes. Knows nothing of what to do with them (that is
//! [`crate::engine`]) nor of how they travel (the drivers).
//!
//! # 0.5.1 protocol (kept for 0.5.1 peers, accepted from anyone)
//!
//! | message | sent by / to | meaning |
//! |---|---|---|
//! | `{new_roles, Scope, [Role], Node}` | server -> each `:all_nodes` member of `Scope` | `Node` gained these roles |
//! | `{remove_roles, Scope, [Role], Node}` | same | `Node` lost these roles |
//! | erpc `'Elixir.ClusterHelper':get_my_roles(Scope)` | anyone | the callee's roles in `Scope` |
//! | erpc `'Elixir.ClusterHelper.NodeConfig':'__get_generation__'(Scope)` | anyone | the callee's generation in `Scope` (0 if not joined) |
//! | erpc `'Elixir.ClusterHelper.NodeConfig':'__get_scopes__'()` | anyone | the callee's scopes |
//!
//! 0.5.1 matches by exact shape, so nothing else is ever sent to a 0.5.1 node.
//!
//! # Ours (only between nodes that joined [`OURS_GROUP`])
//!
//! Sent from server to server (registered as [`SERVER_NAME`]), so Erlang
//! distribution keeps them in order between two nodes; every one carries the
//! sender's incarnation and generation, so duplicates and stale ones are
//! recognisable.
//!
//! | message | meaning |
//! |---|---|
//! | `{ch_update, Scope, Node, Inc, Gen, Added, Removed}` | a local change of `Node` that made its generation `Gen` |
//! | `{ch_digest, Node, Inc, [{Scope, Gen}]}` | once per pull interval per peer, for all scopes at once: "here is where I am" |
//! | `{ch_pull, Scope, Node}` | `Node` asks for a snapshot of the receiver's roles in `Scope` |
//! | `{ch_snapshot, Scope, Node, Inc, Joined, Gen, Roles}` | the reply: `Node`'s roles at generation `Gen` (`Joined` false: not in `Scope`) |

use crate::canon::{
    self, term_len, write_atom, write_tuple_header, CanonError, LIST_EXT, NIL_EXT,
    SMALL_ATOM_UTF8_EXT, SMALL_BIG_EXT, SMALL_INTEGER_EXT, SMALL_TUPLE_EXT, STRING_EXT, VERSION,
};
use crate::{Atom, NodeName, Role, Scope};

/// The `:pg` group every ClusterHelper server joins in each of its scopes.
pub const ALL_NODES_GROUP: &str = "all_nodes";
/// The second `:pg` group that only our nodes (NIF-backed Elixir and Rust) join,
/// before `all_nodes`: a member of `all_nodes` outside it is a 0.5.1 node.
pub const OURS_GROUP: &str = "cluster_helper_v2";
/// The registered name of the ClusterHelper server process on every node.
pub const SERVER_NAME: &str = "Elixir.ClusterHelper.NodeConfig";
/// The default scope.
pub const DEFAULT_SCOPE: &str = "Elixir.ClusterHelper";
/// Module of `get_my_roles/1` (erpc).
pub const API_MODULE: &str = "Elixir.ClusterHelper";
/// Module of `__get_generation__/1` and `__get_scopes__/0` (erpc).
pub const NODE_CONFIG_MODULE: &str = "Elixir.ClusterHelper.NodeConfig";
/// `get_my_roles`.
pub const GET_MY_ROLES: &str = "get_my_roles";
/// `__get_generation__`.
pub const GET_GENERATION: &str = "__get_generation__";
/// `__get_scopes__`.
pub const GET_SCOPES: &str = "__get_scopes__";
/// Default timeout of a roles pull, in milliseconds.
pub const DEFAULT_PULL_TIMEOUT_MS: u64 = 5000;
/// Timeout of a generation request, in milliseconds.
pub const GENERATION_TIMEOUT_MS: u64 = 1000;
/// Timeout of a scopes request, in milliseconds.
pub const SCOPES_TIMEOUT_MS: u64 = 2000;
/// Default interval of the periodic sync, in milliseconds.
pub const DEFAULT_PULL_INTERVAL_MS: u64 = 7000;

/// A message between ClusterHelper servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// 0.5.1: `{new_roles, Scope, Roles, Node}`.
    NewRoles {
        scope: Scope,
        roles: Vec<Role>,
        node: NodeName,
    },
    /// 0.5.1: `{remove_roles, Scope, Roles, Node}`.
    RemoveRoles {
        scope: Scope,
        roles: Vec<Role>,
        node: NodeName,
    },
    /// Ours: a local change.
    Update {
        scope: Scope,
        node: NodeName,
        incarnation: u64,
        generation: u64,
        added: Vec<Role>,
        removed: Vec<Role>,
    },
    /// Ours: the periodic "where I am" for all scopes.
    Digest {
        node: NodeName,
        incarnation: u64,
        scopes: Vec<(Scope, u64)>,
    },
    /// Ours: ask for a snapshot.
    Pull { scope: Scope, node: NodeName },
    /// Ours: a snapshot.
    Snapshot {
        scope: Scope,
        node: NodeName,
        incarnation: u64,
        joined: bool,
        generation: u64,
        roles: Vec<Role>,
    },
}

impl Msg {
    /// The node that sent (and is described by) this message.
    pub fn sender(&self) -> &NodeName {
        match self {
            Msg::NewRoles { node, .. }
            | Msg::RemoveRoles { node, .. }
            | Msg::Update { node, .. }
            | Msg::Digest { node, .. }
            | Msg::Pull { node, .. }
            | Msg::Snapshot { node, .. } => node,
        }
    }

    /// Whether this is one of 0.5.1's shapes.
    pub fn is_legacy(&self) -> bool {
        matches!(self, Msg::NewRoles { .. } | Msg::RemoveRoles { .. })
    }

    /// The message as a complete external term (starting with byte 131).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = vec![VERSION];
        match self {
            Msg::NewRoles { scope, roles, node } | Msg::RemoveRoles { scope, roles, node } => {
                write_tuple_header(&mut o, 4);
                let tag = if matches!(self, Msg::NewRoles { .. }) {
                    "new_roles"
                } else {
                    "remove_roles"
                };
                write_atom(&mut o, tag);
                write_atom(&mut o, scope.as_str());
                write_roles(&mut o, roles);
                write_atom(&mut o, node.as_str());
            }
            Msg::Update {
                scope,
                node,
                incarnation,
                generation,
                added,
                removed,
            } => {
                write_tuple_header(&mut o, 7);
                write_atom(&mut o, "ch_update");
                write_atom(&mut o, scope.as_str());
                write_atom(&mut o, node.as_str());
                write_u64(&mut o, *incarnation);
                write_u64(&mut o, *generation);
                write_roles(&mut o, added);
                write_roles(&mut o, removed);
            }
            Msg::Digest {
                node,
                incarnation,
                scopes,
            } => {
                write_tuple_header(&mut o, 4);
                write_atom(&mut o, "ch_digest");
                write_atom(&mut o, node.as_str());
                write_u64(&mut o, *incarnation);
                write_list_header(&mut o, scopes.len());
                for (s, g) in scopes {
                    write_tuple_header(&mut o, 2);
                    write_atom(&mut o, s.as_str());
                    write_u64(&mut o, *g);
                }
                o.push(NIL_EXT);
            }
            Msg::Pull { scope, node } => {
                write_tuple_header(&mut o, 3);
                write_atom(&mut o, "ch_pull");
                write_atom(&mut o, scope.as_str());
                write_atom(&mut o, node.as_str());
            }
            Msg::Snapshot {
                scope,
                node,
                incarnation,
                joined,
                generation,
                roles,
            } => {
                write_tuple_header(&mut o, 7);
                write_atom(&mut o, "ch_snapshot");
                write_atom(&mut o, scope.as_str());
                write_atom(&mut o, node.as_str());
                write_u64(&mut o, *incarnation);
                write_atom(&mut o, if *joined { "true" } else { "false" });
                write_u64(&mut o, *generation);
                write_roles(&mut o, roles);
            }
        }
        o
    }

    /// Decodes a message from a complete external term in any valid encoding.
    pub fn decode(bytes: &[u8]) -> Result<Msg, ProtocolError> {
        let canonical = canon::canonicalize(bytes)?;
        let mut r = Reader {
            b: &canonical[1..],
            pos: 0,
        };
        let arity = r.tuple().ok_or(ProtocolError::NotAMessage)?;
        let tag = r.atom().ok_or(ProtocolError::NotAMessage)?;
        let msg = match (tag, arity) {
            ("new_roles" | "remove_roles", 4) => {
                let scope = r.atom_value("scope")?;
                let roles = r.roles("roles")?;
                let node = r.atom_value("node")?;
                if tag == "new_roles" {
                    Msg::NewRoles { scope, roles, node }
                } else {
                    Msg::RemoveRoles { scope, roles, node }
                }
            }
            ("ch_update", 7) => Msg::Update {
                scope: r.atom_value("scope")?,
                node: r.atom_value("node")?,
                incarnation: r.u64_value("incarnation")?,
                generation: r.u64_value("generation")?,
                added: r.roles("added")?,
                removed: r.roles("removed")?,
            },
            ("ch_digest", 4) => {
                let node = r.atom_value("node")?;
                let incarnation = r.u64_value("incarnation")?;
                let n = r.list().ok_or(ProtocolError::Field("scopes"))?;
                let mut scopes = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    if r.tuple() != Some(2) {
                        return Err(ProtocolError::Field("scopes"));
                    }
                    let s = r.atom_value("scopes")?;
                    let g = r.u64_value("scopes")?;
                    scopes.push((s, g));
                }
                r.nil().ok_or(ProtocolError::Field("scopes"))?;
                Msg::Digest {
                    node,
                    incarnation,
                    scopes,
                }
            }
            ("ch_pull", 3) => Msg::Pull {
                scope: r.atom_value("scope")?,
                node: r.atom_value("node")?,
            },
            ("ch_snapshot", 7) => Msg::Snapshot {
                scope: r.atom_value("scope")?,
                node: r.atom_value("node")?,
                incarnation: r.u64_value("incarnation")?,
                joined: match r.atom() {
                    Some("true") => true,
                    Some("false") => false,
                    _ => return Err(ProtocolError::Field("joined")),
                },
                generation: r.u64_value("generation")?,
                roles: r.roles("roles")?,
            },
            _ => return Err(ProtocolError::NotAMessage),
        };
        Ok(msg)
    }
}

/// Why bytes are not a protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not a valid external term at all.
    #[error("invalid external term: {0}")]
    Term(#[from] CanonError),
    /// A term, but not one of the messages.
    #[error("not a ClusterHelper message")]
    NotAMessage,
    /// The right tag, but a field of the wrong shape.
    #[error("bad field `{0}`")]
    Field(&'static str),
}

fn write_u64(o: &mut Vec<u8>, v: u64) {
    canon::write_integer(o, false, &v.to_le_bytes());
}

fn write_list_header(o: &mut Vec<u8>, n: usize) {
    if n > 0 {
        o.push(LIST_EXT);
        o.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// A list of roles, canonical: `[]`, a `STRING_EXT` when all are bytes, else a `LIST_EXT`.
fn write_roles(o: &mut Vec<u8>, roles: &[Role]) {
    let bytes: Option<Vec<u8>> = if roles.len() <= 65535 {
        roles
            .iter()
            .map(|r| match r.body() {
                [SMALL_INTEGER_EXT, v] => Some(*v),
                _ => None,
            })
            .collect()
    } else {
        None
    };
    match bytes {
        _ if roles.is_empty() => o.push(NIL_EXT),
        Some(b) => {
            o.push(STRING_EXT);
            o.extend_from_slice(&(b.len() as u16).to_be_bytes());
            o.extend_from_slice(&b);
        }
        None => {
            write_list_header(o, roles.len());
            for r in roles {
                o.extend_from_slice(r.body());
            }
            o.push(NIL_EXT);
        }
    }
}

/// Reads canonical bytes (from [`canon::canonicalize`]); never panics on any input.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn tuple(&mut self) -> Option<usize> {
        if self.peek()? == SMALL_TUPLE_EXT {
            self.pos += 1;
            Some(self.take(1)?[0] as usize)
        } else {
            None
        }
    }
    fn atom(&mut self) -> Option<&'a str> {
        if self.peek()? != SMALL_ATOM_UTF8_EXT {
            return None;
        }
        self.pos += 1;
        let n = self.take(1)?[0] as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn atom_value(&mut self, field: &'static str) -> Result<Atom, ProtocolError> {
        self.atom()
            .map(Atom::new)
            .ok_or(ProtocolError::Field(field))
    }
    fn u64_value(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        let bad = ProtocolError::Field(field);
        match self.peek() {
            Some(SMALL_INTEGER_EXT) => {
                self.pos += 1;
                Ok(self.take(1).ok_or(bad)?[0] as u64)
            }
            Some(canon::INTEGER_EXT) => {
                self.pos += 1;
                let b = self.take(4).ok_or(bad.clone())?;
                let v = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                u64::try_from(v).map_err(|_| bad)
            }
            Some(SMALL_BIG_EXT) => {
                self.pos += 1;
                let n = self.take(1).ok_or(bad.clone())?[0] as usize;
                let sign = self.take(1).ok_or(bad.clone())?[0];
                let mag = self.take(n).ok_or(bad.clone())?;
                if sign != 0 || n > 8 {
                    return Err(bad);
                }
                Ok(mag
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (i, b)| acc | (*b as u64) << (8 * i)))
            }
            _ => Err(bad),
        }
    }
    /// The header of a proper list: its length (elements follow, then `nil`).
    fn list(&mut self) -> Option<usize> {
        match self.peek()? {
            NIL_EXT => Some(0),
            LIST_EXT => {
                self.pos += 1;
                let b = self.take(4)?;
                Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            }
            _ => None,
        }
    }
    fn nil(&mut self) -> Option<()> {
        (self.take(1)? == [NIL_EXT]).then_some(())
    }
    /// A proper list of any terms, as roles.
    fn roles(&mut self, field: &'static str) -> Result<Vec<Role>, ProtocolError> {
        let bad = ProtocolError::Field(field);
        if self.peek() == Some(STRING_EXT) {
            self.pos += 1;
            let b = self.take(2).ok_or(bad.clone())?;
            let n = u16::from_be_bytes([b[0], b[1]]) as usize;
            let bytes = self.take(n).ok_or(bad)?;
            return Ok(bytes.iter().map(|v| Role::int(*v as i64)).collect());
        }
        let n = self.list().ok_or(bad.clone())?;
        let mut out = Vec::with_capacity(n.min(self.b.len()));
        for _ in 0..n {
            let rest = self.b.get(self.pos..).ok_or(bad.clone())?;
            let len = term_len(rest).ok_or(bad.clone())?;
            out.push(Role::from_canonical_body(&rest[..len]));
            self.pos += len;
        }
        self.nil().ok_or(bad)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_shapes() -> Vec<Msg> {
        let s = Scope::new("Elixir.ClusterHelper");
        let n = NodeName::new("a@127.0.0.1");
        let roles = vec![
            Role::atom("web"),
            Role::tuple(&[Role::atom("shard"), Role::int(1)]),
            Role::binary("x"),
        ];
        vec![
            Msg::NewRoles {
                scope: s.clone(),
                roles: roles.clone(),
                node: n.clone(),
            },
            Msg::RemoveRoles {
                scope: s.clone(),
                roles: vec![Role::int(1), Role::int(2)],
                node: n.clone(),
            },
            Msg::Update {
                scope: s.clone(),
                node: n.clone(),
                incarnation: 1_700_000_000_000_000,
                generation: 3,
                added: roles.clone(),
                removed: vec![],
            },
            Msg::Digest {
                node: n.clone(),
                incarnation: 7,
                scopes: vec![(s.clone(), 300), (Scope::new("x"), 0)],
            },
            Msg::Digest {
                node: n.clone(),
                incarnation: 7,
                scopes: vec![],
            },
            Msg::Pull {
                scope: s.clone(),
                node: n.clone(),
            },
            Msg::Snapshot {
                scope: s.clone(),
                node: n.clone(),
                incarnation: u64::MAX,
                joined: true,
                generation: 1 << 40,
                roles,
            },
        ]
    }

    #[test]
    fn every_shape_round_trips() {
        for m in all_shapes() {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn encoding_is_canonical() {
        for m in all_shapes() {
            let e = m.encode();
            assert_eq!(canon::canonicalize(&e).unwrap(), e, "{m:?}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let mut t = vec![VERSION];
        write_tuple_header(&mut t, 4);
        write_atom(&mut t, "new_roles");
        write_atom(&mut t, "s");
        write_atom(&mut t, "not_a_list");
        write_atom(&mut t, "n");
        assert_eq!(Msg::decode(&t), Err(ProtocolError::Field("roles")));
        assert_eq!(
            Msg::decode(&[VERSION, NIL_EXT]),
            Err(ProtocolError::NotAMessage)
        );
        assert!(matches!(
            Msg::decode(&[1, 2, 3]),
            Err(ProtocolError::Term(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut v = vec![VERSION];
            v.extend(bytes);
            let _ = Msg::decode(&v);
        }

        #[test]
        fn mutated_messages_never_panic(i in 0usize..7, pos in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let mut e = all_shapes()[i].encode();
            let p = pos % e.len();
            e[p] = byte;
            let _ = Msg::decode(&e);
            e.truncate(p);
            let _ = Msg::decode(&e);
        }
    }
}
