//! The role index: per scope, role -> nodes and node -> roles.
//!
//! Owns the data structure that every read hits. Knows nothing of the
//! network or of generations: the engine ([`crate::engine`]) decides what to
//! write; this module only stores it and reports what really changed.
//!
//! # Why persistent maps behind an atomic pointer
//!
//! Reads (`get_nodes`, `get_roles`, `all_nodes`) come from any scheduler
//! thread, many at once, and must never wait for a writer; writes come from
//! one driver at a time and are rare next to reads. So the index is a
//! persistent (structurally shared) value, [`IndexState`], built on `imbl`'s
//! B-tree maps, and readers see it through [`SharedIndex`], an `ArcSwap`:
//!
//! - a read is one atomic load and a B-tree walk: no lock, no reference-count
//!   contention on the hot path (`arc_swap` uses hazard-style debts), never
//!   blocked by a writer, and always a consistent snapshot;
//! - a write copies only the path to what changed (O(log n) per role), so
//!   add/remove cost O(roles changed x log n), not O(roles the node has),
//!   and publishing a new snapshot is O(1);
//! - B-trees keep results in a deterministic (sorted) order, and `all_nodes`
//!   is a walk over the keys of node -> roles: O(result).
//!
//! A concurrent hash map (dashmap) was the alternative: its readers take a
//! shard lock that a writer can hold, and results come back in hash order.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use imbl::{OrdMap, OrdSet};

use crate::{NodeName, Role, Scope};

/// One scope's view: who has which role.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ScopeView {
    role_nodes: OrdMap<Role, OrdSet<NodeName>>,
    node_roles: OrdMap<NodeName, OrdSet<Role>>,
}

impl ScopeView {
    /// Nodes that have `role`, in order.
    pub fn nodes_with<'a>(&'a self, role: &Role) -> impl Iterator<Item = &'a NodeName> + 'a {
        self.role_nodes.get(role).into_iter().flat_map(|s| s.iter())
    }
    /// Nodes that have the role whose canonical bytes (version byte included) are `etf`.
    pub fn nodes_with_etf<'a>(&'a self, etf: &[u8]) -> impl Iterator<Item = &'a NodeName> + 'a {
        self.role_nodes.get(etf).into_iter().flat_map(|s| s.iter())
    }
    /// How many nodes have the role whose canonical bytes are `etf`.
    pub fn count_nodes_with_etf(&self, etf: &[u8]) -> usize {
        self.role_nodes.get(etf).map_or(0, |s| s.len())
    }
    /// How many nodes have `role`.
    pub fn count_nodes_with(&self, role: &Role) -> usize {
        self.role_nodes.get(role).map_or(0, |s| s.len())
    }
    /// Roles of `node`, in order.
    pub fn roles_of<'a>(&'a self, node: &NodeName) -> impl Iterator<Item = &'a Role> + 'a {
        self.node_roles.get(node).into_iter().flat_map(|s| s.iter())
    }
    /// How many roles `node` has.
    pub fn count_roles_of(&self, node: &NodeName) -> usize {
        self.node_roles.get(node).map_or(0, |s| s.len())
    }
    /// Whether `node` has `role`.
    pub fn has(&self, node: &NodeName, role: &Role) -> bool {
        self.node_roles.get(node).is_some_and(|s| s.contains(role))
    }
    /// Nodes with at least one role, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeName> {
        self.node_roles.keys()
    }
    /// How many nodes have at least one role.
    pub fn node_count(&self) -> usize {
        self.node_roles.len()
    }
    /// Whether no node has any role.
    pub fn is_empty(&self) -> bool {
        self.node_roles.is_empty()
    }
}

/// The whole index: every scope's view. Cloning is O(1).
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct IndexState {
    scopes: OrdMap<Scope, ScopeView>,
}

/// What a replace changed.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<Role>,
    pub removed: Vec<Role>,
}

impl IndexState {
    /// An empty index.
    pub fn new() -> IndexState {
        IndexState::default()
    }

    /// The view of `scope`, if any node has a role in it.
    pub fn scope(&self, scope: &Scope) -> Option<&ScopeView> {
        self.scopes.get(scope)
    }

    /// Scopes in which some node has a role.
    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.keys()
    }

    /// Adds roles to `node` in `scope`; returns those it did not have, in input order.
    pub fn add<I: IntoIterator<Item = Role>>(
        &mut self,
        scope: &Scope,
        node: &NodeName,
        roles: I,
    ) -> Vec<Role> {
        let view = self.scopes.entry(scope.clone()).or_default();
        let mut added = Vec::new();
        let mut mine = view.node_roles.get(node).cloned().unwrap_or_default();
        for role in roles {
            if mine.insert(role.clone()).is_none() {
                view.role_nodes
                    .entry(role.clone())
                    .or_default()
                    .insert(node.clone());
                added.push(role);
            }
        }
        if !added.is_empty() {
            view.node_roles.insert(node.clone(), mine);
        }
        if view.is_empty() {
            self.scopes.remove(scope);
        }
        added
    }

    /// Removes roles from `node` in `scope`; returns those it had, in input order.
    pub fn remove<'r, I: IntoIterator<Item = &'r Role>>(
        &mut self,
        scope: &Scope,
        node: &NodeName,
        roles: I,
    ) -> Vec<Role> {
        let Some(view) = self.scopes.get_mut(scope) else {
            return Vec::new();
        };
        let Some(mine) = view.node_roles.get_mut(node) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for role in roles {
            if mine.remove(role).is_some() {
                removed.push(role.clone());
            }
        }
        let now_empty = mine.is_empty();
        for role in &removed {
            if let Some(nodes) = view.role_nodes.get_mut(role) {
                nodes.remove(node);
                if nodes.is_empty() {
                    view.role_nodes.remove(role);
                }
            }
        }
        if now_empty {
            view.node_roles.remove(node);
        }
        if view.is_empty() {
            self.scopes.remove(scope);
        }
        removed
    }

    /// Makes `node`'s roles in `scope` exactly `roles`; returns the difference.
    pub fn replace(&mut self, scope: &Scope, node: &NodeName, roles: &OrdSet<Role>) -> Diff {
        let old: OrdSet<Role> = self
            .scopes
            .get(scope)
            .and_then(|v| v.node_roles.get(node).cloned())
            .unwrap_or_default();
        let removed: Vec<Role> = old
            .iter()
            .filter(|r| !roles.contains(*r))
            .cloned()
            .collect();
        let added: Vec<Role> = roles
            .iter()
            .filter(|r| !old.contains(*r))
            .cloned()
            .collect();
        self.remove(scope, node, removed.iter());
        self.add(scope, node, added.iter().cloned());
        Diff { added, removed }
    }

    /// Removes `node` from `scope`; returns the roles it had, in order.
    pub fn drop_node(&mut self, scope: &Scope, node: &NodeName) -> Vec<Role> {
        let roles: Vec<Role> = match self.scopes.get(scope).and_then(|v| v.node_roles.get(node)) {
            Some(set) => set.iter().cloned().collect(),
            None => return Vec::new(),
        };
        self.remove(scope, node, roles.iter())
    }

    /// Removes a whole scope; returns what each node had in it.
    pub fn drop_scope(&mut self, scope: &Scope) -> Vec<(NodeName, Vec<Role>)> {
        match self.scopes.remove(scope) {
            Some(view) => view
                .node_roles
                .into_iter()
                .map(|(n, rs)| (n, rs.into_iter().collect()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Nodes that have `role` in `scope`, in order.
    pub fn get_nodes(&self, scope: &Scope, role: &Role) -> Vec<NodeName> {
        self.scope(scope)
            .map(|v| v.nodes_with(role).cloned().collect())
            .unwrap_or_default()
    }

    /// Roles `node` has in `scope`, in order.
    pub fn get_roles(&self, scope: &Scope, node: &NodeName) -> Vec<Role> {
        self.scope(scope)
            .map(|v| v.roles_of(node).cloned().collect())
            .unwrap_or_default()
    }

    /// Nodes with at least one role in `scope`, in order.
    pub fn all_nodes(&self, scope: &Scope) -> Vec<NodeName> {
        self.scope(scope)
            .map(|v| v.nodes().cloned().collect())
            .unwrap_or_default()
    }
}

/// The published index: readers load a snapshot, the one writer publishes new ones.
#[derive(Default)]
pub struct SharedIndex {
    current: ArcSwap<IndexState>,
}

impl SharedIndex {
    /// An empty shared index.
    pub fn new() -> SharedIndex {
        SharedIndex::default()
    }

    /// The current snapshot. Never blocks; hold it briefly.
    pub fn load(&self) -> Guard<Arc<IndexState>> {
        self.current.load()
    }

    /// Makes `state` the snapshot that readers see from now on.
    pub fn publish(&self, state: IndexState) {
        self.current.store(Arc::new(state));
    }
}

impl std::fmt::Debug for SharedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedIndex").field(&*self.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn n(s: &str) -> NodeName {
        NodeName::new(s)
    }

    #[test]
    fn add_remove_replace_drop() {
        let s = Scope::new("s");
        let mut ix = IndexState::new();
        assert_eq!(
            ix.add(&s, &n("a"), [Role::atom("web"), Role::atom("db")])
                .len(),
            2
        );
        assert_eq!(ix.add(&s, &n("a"), [Role::atom("web")]), vec![]);
        ix.add(&s, &n("b"), [Role::atom("web")]);
        assert_eq!(ix.get_nodes(&s, &Role::atom("web")), vec![n("a"), n("b")]);
        assert_eq!(ix.all_nodes(&s), vec![n("a"), n("b")]);
        let d = ix.replace(
            &s,
            &n("a"),
            &[Role::atom("db"), Role::atom("x")].into_iter().collect(),
        );
        assert_eq!(d.added, vec![Role::atom("x")]);
        assert_eq!(d.removed, vec![Role::atom("web")]);
        assert_eq!(ix.drop_node(&s, &n("b")), vec![Role::atom("web")]);
        assert_eq!(ix.get_nodes(&s, &Role::atom("web")), vec![]);
        assert_eq!(
            ix.remove(&s, &n("a"), &[Role::atom("db"), Role::atom("x")])
                .len(),
            2
        );
        assert!(ix.scope(&s).is_none(), "an empty scope view is dropped");
    }

    #[test]
    fn readers_keep_their_snapshot() {
        let shared = SharedIndex::new();
        let s = Scope::new("s");
        let mut ix = IndexState::new();
        ix.add(&s, &n("a"), [Role::atom("web")]);
        shared.publish(ix.clone());
        let before = shared.load();
        ix.drop_node(&s, &n("a"));
        shared.publish(ix);
        assert_eq!(before.all_nodes(&s), vec![n("a")]);
        assert_eq!(shared.load().all_nodes(&s), vec![]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u8, Vec<u8>),
        Remove(u8, u8, Vec<u8>),
        Replace(u8, u8, Vec<u8>),
        DropNode(u8, u8),
        DropScope(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let roles = proptest::collection::vec(0u8..12, 0..6);
        prop_oneof![
            (0u8..3, 0u8..5, roles.clone()).prop_map(|(s, n, r)| Op::Add(s, n, r)),
            (0u8..3, 0u8..5, roles.clone()).prop_map(|(s, n, r)| Op::Remove(s, n, r)),
            (0u8..3, 0u8..5, roles).prop_map(|(s, n, r)| Op::Replace(s, n, r)),
            (0u8..3, 0u8..5).prop_map(|(s, n)| Op::DropNode(s, n)),
            (0u8..3).prop_map(Op::DropScope),
        ]
    }

    type Model = BTreeMap<(u8, u8), BTreeSet<u8>>;

    fn role(r: u8) -> Role {
        if r.is_multiple_of(2) {
            Role::int(r as i64)
        } else {
            Role::tuple(&[Role::atom("r"), Role::binary([r])])
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]
        #[test]
        fn index_matches_a_plain_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut ix = IndexState::new();
            let mut model: Model = BTreeMap::new();
            let sc = |s: u8| Scope::new(&format!("s{s}"));
            let nd = |x: u8| NodeName::new(&format!("n{x}@h"));
            for op in ops {
                match op {
                    Op::Add(s, x, rs) => {
                        let set = model.entry((s, x)).or_default();
                        let mut want = Vec::new();
                        for r in &rs { if set.insert(*r) { want.push(role(*r)); } }
                        prop_assert_eq!(ix.add(&sc(s), &nd(x), rs.iter().map(|r| role(*r))), want);
                    }
                    Op::Remove(s, x, rs) => {
                        let set = model.entry((s, x)).or_default();
                        let mut want = Vec::new();
                        for r in &rs { if set.remove(r) { want.push(role(*r)); } }
                        let rs: Vec<Role> = rs.iter().map(|r| role(*r)).collect();
                        prop_assert_eq!(ix.remove(&sc(s), &nd(x), rs.iter()), want);
                    }
                    Op::Replace(s, x, rs) => {
                        let new: BTreeSet<u8> = rs.iter().copied().collect();
                        let old = model.insert((s, x), new.clone()).unwrap_or_default();
                        let d = ix.replace(&sc(s), &nd(x), &new.iter().map(|r| role(*r)).collect());
                        let mut added: Vec<Role> = new.difference(&old).map(|r| role(*r)).collect();
                        let mut removed: Vec<Role> = old.difference(&new).map(|r| role(*r)).collect();
                        added.sort(); removed.sort();
                        let (mut da, mut dr) = (d.added, d.removed);
                        da.sort(); dr.sort();
                        prop_assert_eq!(da, added);
                        prop_assert_eq!(dr, removed);
                    }
                    Op::DropNode(s, x) => {
                        let old = model.remove(&(s, x)).unwrap_or_default();
                        let mut got = ix.drop_node(&sc(s), &nd(x));
                        got.sort();
                        let mut want: Vec<Role> = old.iter().map(|r| role(*r)).collect();
                        want.sort();
                        prop_assert_eq!(got, want);
                    }
                    Op::DropScope(s) => {
                        model.retain(|(ms, _), _| *ms != s);
                        ix.drop_scope(&sc(s));
                    }
                }
                // Every read agrees with the model after every step.
                for s in 0..3u8 {
                    let mut nodes: Vec<NodeName> = model.iter()
                        .filter(|((ms, _), set)| *ms == s && !set.is_empty())
                        .map(|((_, x), _)| nd(*x)).collect();
                    nodes.sort();
                    prop_assert_eq!(ix.all_nodes(&sc(s)), nodes);
                    for x in 0..5u8 {
                        let mut want: Vec<Role> = model.get(&(s, x)).map(|set| set.iter().map(|r| role(*r)).collect()).unwrap_or_default();
                        want.sort();
                        prop_assert_eq!(ix.get_roles(&sc(s), &nd(x)), want);
                    }
                    for r in 0..12u8 {
                        let mut want: Vec<NodeName> = model.iter()
                            .filter(|((ms, _), set)| *ms == s && set.contains(&r))
                            .map(|((_, x), _)| nd(*x)).collect();
                        want.sort();
                        prop_assert_eq!(ix.get_nodes(&sc(s), &role(r)), want);
                    }
                }
            }
        }
    }
}
