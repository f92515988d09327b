//! The sync engine: what a ClusterHelper node decides, with no I/O.
//!
//! Owns the local roles, the generations, what is known of each peer, and
//! the index writes; publishes every change to a [`SharedIndex`] for readers.
//! Knows nothing of sockets, processes, timers or clocks: a driver (the NIF's
//! GenServer, or the Rust node) feeds [`Input`]s to [`SyncEngine::handle`] and
//! carries out the [`Action`]s it returns, in order.
//!
//! # What it does, in words
//!
//! - A **local change** that changes something bumps the scope's generation,
//!   fires events and is broadcast to every `:all_nodes` member of the scope:
//!   a [`Msg::Update`] to our nodes, `new_roles`/`remove_roles` to 0.5.1 nodes.
//! - **Node up**: ask its scopes (erpc), then pull each shared scope.
//! - **Our peers** (members of [`crate::protocol::OURS_GROUP`]) are kept in
//!   sync by their ordered, generation-tagged messages: an update one past what
//!   we hold is applied; an older one is a duplicate and dropped; a gap is
//!   applied and repaired by a snapshot pull. Once per tick each gets one
//!   [`Msg::Digest`] for all scopes; a generation that differs from ours
//!   triggers a pull.
//! - **0.5.1 peers** are polled as 0.5.1 does (generation per scope per tick,
//!   pull roles when it changed). Their pulls travel by erpc and can cross a
//!   broadcast, so a pull result is dropped (and retried next tick) when the
//!   peer's generation moved during the pull or a broadcast from that peer
//!   arrived meanwhile.
//! - **Node down**: the node leaves every scope.
//! - Every index change goes through a diff, so **events fire once per real
//!   change**: a pull that finds the same roles fires nothing.
//!
//! Generations are per scope, start at 0, grow by one per local change that
//! changed something, and never go back within one incarnation (leaving and
//! re-joining a scope continues the count; `generation` reads 0 while not
//! joined). An incarnation number tells two lives of one node name apart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdSet;

use crate::index::{IndexState, SharedIndex};
use crate::protocol::Msg;
use crate::{NodeName, Role, Scope};

/// The `:pg` groups the engine is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// `all_nodes`: every ClusterHelper server, ours and 0.5.1.
    AllNodes,
    /// [`crate::protocol::OURS_GROUP`]: only our servers.
    Ours,
}

/// Something that happened, for the engine to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The local node takes these roles in `scope` (joining it if needed).
    AddRoles { scope: Scope, roles: Vec<Role> },
    /// The local node drops these roles in `scope`.
    RemoveRoles { scope: Scope, roles: Vec<Role> },
    /// The local node joins `scope`.
    JoinScope(Scope),
    /// The local node leaves `scope`.
    LeaveScope(Scope),
    /// A visible node connected.
    NodeUp(NodeName),
    /// A node disconnected.
    NodeDown(NodeName),
    /// After a `:pg` join or leave in `scope`: whether `node` now has a member in `group`.
    Member {
        scope: Scope,
        group: Group,
        node: NodeName,
        present: bool,
    },
    /// A protocol message received by the server.
    Message(Msg),
    /// Reply to [`Action::AskScopes`]; `None` when the call failed.
    Scopes {
        node: NodeName,
        result: Option<Vec<Scope>>,
    },
    /// Reply to [`Action::AskGeneration`]; `None` when the call failed.
    Generation {
        node: NodeName,
        scope: Scope,
        result: Option<u64>,
    },
    /// Reply to [`Action::Pull`]: generation before, roles, generation after;
    /// `None` when any of the calls failed.
    PullResult {
        node: NodeName,
        scope: Scope,
        token: u64,
        result: Option<(u64, Vec<Role>, u64)>,
    },
    /// The periodic sync, with the nodes connected now (`Node.list()`).
    Tick { connected: Vec<NodeName> },
}

/// How a [`Action::Send`] reaches its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// To every pid of the node in `:pg` group `all_nodes` of the message's scope (0.5.1's way).
    AllNodesMembers,
    /// To the registered server [`crate::protocol::SERVER_NAME`] on the node.
    Server,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Join `:pg` groups `OURS_GROUP` then `all_nodes` in the scope (start the scope first).
    JoinGroups(Scope),
    /// Leave both groups of the scope.
    LeaveGroups(Scope),
    /// Send a message to the ClusterHelper server of `node`.
    Send {
        node: NodeName,
        scope: Scope,
        via: Via,
        msg: Msg,
    },
    /// erpc `__get_scopes__()` on `node`, answer with [`Input::Scopes`].
    AskScopes(NodeName),
    /// erpc `__get_generation__(scope)` on `node`, answer with [`Input::Generation`].
    AskGeneration { node: NodeName, scope: Scope },
    /// erpc generation, `get_my_roles(scope)`, generation on `node`; answer with
    /// [`Input::PullResult`]. The driver must always answer (`None` on any
    /// failure or timeout): the engine starts no other pull of that node and
    /// scope until it does, or until the node comes up again.
    Pull {
        node: NodeName,
        scope: Scope,
        token: u64,
    },
    /// Tell the user.
    Event(Event),
}

/// A change of the local view, for event handlers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    RoleAdded {
        scope: Scope,
        node: NodeName,
        role: Role,
    },
    RoleRemoved {
        scope: Scope,
        node: NodeName,
        role: Role,
    },
    /// A peer became known in the scope.
    NodeAdded { scope: Scope, node: NodeName },
    /// A known peer went down (or the local node left the scope).
    NodeRemoved { scope: Scope, node: NodeName },
}

/// Misuse of the local API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("already joined")]
    AlreadyJoined,
    #[error("not joined")]
    NotJoined,
}

/// An in-flight pull of one peer's roles in one scope.
#[derive(Debug, Clone)]
struct InFlight {
    token: u64,
    /// Sent as a `ch_pull` message, which nobody answers if lost; an erpc
    /// pull is always answered by the driver (`:error` on timeout).
    by_message: bool,
    started_tick: u64,
    /// The peer's broadcast count when the pull started.
    epoch: u64,
}

/// What we know of one peer in one joined scope.
#[derive(Debug, Clone, Default)]
struct PeerScope {
    /// Generation of the peer whose state we hold.
    seen: Option<u64>,
    /// What we hold may be incomplete: pull when possible.
    dirty: bool,
    pull: Option<InFlight>,
    /// Broadcasts received from the peer (guards erpc pulls).
    epoch: u64,
}

/// A scope the local node has joined.
#[derive(Debug, Clone, Default)]
struct JoinedScope {
    generation: u64,
    /// Peers known to be in this scope (NodeAdded fired for each).
    known: BTreeSet<NodeName>,
    /// Sync state of every peer we talked to about this scope.
    sync: BTreeMap<NodeName, PeerScope>,
    /// Local changes since the last tick, to repeat once to 0.5.1 peers.
    echo: Echo,
}

/// What a 0.5.1 peer may have missed of our changes since the last tick.
///
/// A 0.5.1 node pulls roles before the generation, so a change of ours that
/// lands between its two reads leaves it with old roles and the new
/// generation: it never pulls again until our next change. Repeating the
/// change once, at the next tick, in 0.5.1's own (idempotent) messages heals
/// that; it costs nothing while nothing changes.
#[derive(Debug, Clone, Default)]
struct Echo {
    changed: bool,
    removed: BTreeSet<Role>,
}

/// What we know of a connected peer, across scopes.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// Highest incarnation heard from it (our nodes only).
    incarnation: Option<u64>,
    /// It speaks our protocol.
    ours: bool,
}

/// `:pg` membership of one node in one scope.
#[derive(Debug, Clone, Copy, Default)]
struct Membership {
    all_nodes: bool,
    ours: bool,
}

/// Ticks after which an unanswered `ch_pull` message is forgotten and retried.
const PULL_EXPIRY_TICKS: u64 = 3;

/// The sync engine of one node. See the module docs.
pub struct SyncEngine {
    me: NodeName,
    incarnation: u64,
    index: IndexState,
    shared: Arc<SharedIndex>,
    joined: BTreeMap<Scope, JoinedScope>,
    /// Last generation of every scope ever joined, so a re-join continues it.
    counters: BTreeMap<Scope, u64>,
    /// Scopes left since the last tick, with the roles we held: repeated once
    /// to 0.5.1 peers (see [`Echo`]).
    left: BTreeMap<Scope, Vec<Role>>,
    members: BTreeMap<Scope, BTreeMap<NodeName, Membership>>,
    connected: BTreeSet<NodeName>,
    peers: BTreeMap<NodeName, Peer>,
    next_token: u64,
    tick: u64,
}

impl SyncEngine {
    /// An engine for node `me` in its `incarnation` (any number that grows
    /// from one life of the node to the next, e.g. start time in microseconds).
    pub fn new(me: NodeName, incarnation: u64) -> SyncEngine {
        SyncEngine {
            me,
            incarnation,
            index: IndexState::new(),
            shared: Arc::new(SharedIndex::new()),
            joined: BTreeMap::new(),
            counters: BTreeMap::new(),
            left: BTreeMap::new(),
            members: BTreeMap::new(),
            connected: BTreeSet::new(),
            peers: BTreeMap::new(),
            next_token: 1,
            tick: 0,
        }
    }

    /// The index readers use; every [`SyncEngine::handle`] publishes to it.
    pub fn shared_index(&self) -> Arc<SharedIndex> {
        self.shared.clone()
    }

    /// The engine's current index (same as the published one between calls).
    pub fn index(&self) -> &IndexState {
        &self.index
    }

    /// The local node.
    pub fn node(&self) -> &NodeName {
        &self.me
    }

    /// This life's incarnation number.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Scopes the local node has joined, in order.
    pub fn scopes(&self) -> Vec<Scope> {
        self.joined.keys().cloned().collect()
    }

    /// Joined scopes with their generations, in order.
    pub fn scope_generations(&self) -> Vec<(Scope, u64)> {
        self.joined
            .iter()
            .map(|(s, j)| (s.clone(), j.generation))
            .collect()
    }

    /// Whether the local node is in `scope`.
    pub fn is_joined(&self, scope: &Scope) -> bool {
        self.joined.contains_key(scope)
    }

    /// The local generation in `scope`: 0 when not joined.
    pub fn generation(&self, scope: &Scope) -> u64 {
        self.joined.get(scope).map_or(0, |j| j.generation)
    }

    /// The local roles in `scope`, in order.
    pub fn my_roles(&self, scope: &Scope) -> Vec<Role> {
        self.index.get_roles(scope, &self.me)
    }

    /// Feeds one input; returns what the driver must do, in order.
    pub fn handle(&mut self, input: Input) -> Result<Vec<Action>, EngineError> {
        let mut out = Vec::new();
        let before = self.index.clone();
        let r = self.dispatch(input, &mut out);
        if self.index != before {
            self.shared.publish(self.index.clone());
        }
        r.map(|()| out)
    }

    fn dispatch(&mut self, input: Input, out: &mut Vec<Action>) -> Result<(), EngineError> {
        match input {
            Input::AddRoles { scope, roles } => self.add_roles(scope, roles, out),
            Input::RemoveRoles { scope, roles } => self.remove_roles(scope, roles, out),
            Input::JoinScope(scope) => {
                if self.joined.contains_key(&scope) {
                    return Err(EngineError::AlreadyJoined);
                }
                self.join(scope, out);
            }
            Input::LeaveScope(scope) => self.leave(scope, out)?,
            Input::NodeUp(node) => self.node_up(node, out),
            Input::NodeDown(node) => self.node_down(&node, out),
            Input::Member {
                scope,
                group,
                node,
                present,
            } => self.member(scope, group, node, present, out),
            Input::Message(msg) => self.message(msg, out),
            Input::Scopes { node, result } => self.scopes_result(node, result, out),
            Input::Generation {
                node,
                scope,
                result,
            } => self.generation_result(node, scope, result, out),
            Input::PullResult {
                node,
                scope,
                token,
                result,
            } => self.pull_result(node, scope, token, result, out),
            Input::Tick { connected } => self.on_tick(connected, out),
        }
        Ok(())
    }

    // ---- local changes -------------------------------------------------

    fn add_roles(&mut self, scope: Scope, roles: Vec<Role>, out: &mut Vec<Action>) {
        if !self.joined.contains_key(&scope) {
            self.join(scope.clone(), out);
        }
        let me = self.me.clone();
        let added = self.index.add(&scope, &me, roles);
        if added.is_empty() {
            return;
        }
        for role in &added {
            out.push(role_added(&scope, &me, role));
        }
        if let Some(j) = self.joined.get_mut(&scope) {
            j.echo.changed = true;
            for role in &added {
                j.echo.removed.remove(role);
            }
        }
        let generation = self.bump(&scope);
        self.broadcast(&scope, generation, added, Vec::new(), out);
    }

    fn remove_roles(&mut self, scope: Scope, roles: Vec<Role>, out: &mut Vec<Action>) {
        if !self.joined.contains_key(&scope) {
            return;
        }
        let me = self.me.clone();
        let removed = self.index.remove(&scope, &me, roles.iter());
        if removed.is_empty() {
            return;
        }
        for role in &removed {
            out.push(role_removed(&scope, &me, role));
        }
        if let Some(j) = self.joined.get_mut(&scope) {
            j.echo.changed = true;
            j.echo.removed.extend(removed.iter().cloned());
        }
        let generation = self.bump(&scope);
        self.broadcast(&scope, generation, Vec::new(), removed, out);
    }

    fn bump(&mut self, scope: &Scope) -> u64 {
        let j = self.joined.get_mut(scope).expect("bump of a joined scope");
        j.generation += 1;
        self.counters.insert(scope.clone(), j.generation);
        j.generation
    }

    fn broadcast(
        &self,
        scope: &Scope,
        generation: u64,
        added: Vec<Role>,
        removed: Vec<Role>,
        out: &mut Vec<Action>,
    ) {
        let Some(members) = self.members.get(scope) else {
            return;
        };
        for (node, m) in members {
            if !m.all_nodes || *node == self.me {
                continue;
            }
            if self.is_ours(node, m) {
                out.push(Action::Send {
                    node: node.clone(),
                    scope: scope.clone(),
                    via: Via::Server,
                    msg: Msg::Update {
                        scope: scope.clone(),
                        node: self.me.clone(),
                        incarnation: self.incarnation,
                        generation,
                        added: added.clone(),
                        removed: removed.clone(),
                    },
                });
            } else {
                // 0.5.1 sends only what really changed, and only its own shapes.
                if !added.is_empty() {
                    out.push(legacy_send(
                        node,
                        scope,
                        Msg::NewRoles {
                            scope: scope.clone(),
                            roles: added.clone(),
                            node: self.me.clone(),
                        },
                    ));
                }
                if !removed.is_empty() {
                    out.push(legacy_send(
                        node,
                        scope,
                        Msg::RemoveRoles {
                            scope: scope.clone(),
                            roles: removed.clone(),
                            node: self.me.clone(),
                        },
                    ));
                }
            }
        }
    }

    fn is_ours(&self, node: &NodeName, m: &Membership) -> bool {
        m.ours || self.peers.get(node).is_some_and(|p| p.ours)
    }

    fn join(&mut self, scope: Scope, out: &mut Vec<Action>) {
        self.left.remove(&scope);
        let generation = self.counters.get(&scope).copied().unwrap_or(0);
        self.joined.insert(
            scope.clone(),
            JoinedScope {
                generation,
                ..JoinedScope::default()
            },
        );
        self.counters.insert(scope.clone(), generation);
        out.push(Action::JoinGroups(scope.clone()));
        // Pull what the connected nodes hold in this scope (0.5.1 did this on auto-join too).
        let nodes: Vec<NodeName> = self.connected.iter().cloned().collect();
        for node in nodes {
            self.start_pull(&scope, &node, out);
        }
        // Members we already see through :pg are known in the scope.
        let present: Vec<NodeName> = self
            .members
            .get(&scope)
            .map(|m| {
                m.iter()
                    .filter(|(n, m)| m.all_nodes && **n != self.me)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        for node in present {
            self.know(&scope, &node, out);
        }
    }

    fn leave(&mut self, scope: Scope, out: &mut Vec<Action>) -> Result<(), EngineError> {
        if !self.joined.contains_key(&scope) {
            return Err(EngineError::NotJoined);
        }
        // Tell peers first: our roles go (0.5.1 told nobody; its peers noticed a pull later).
        let mine = self.my_roles(&scope);
        if !mine.is_empty() {
            let generation = self.bump(&scope);
            self.broadcast(&scope, generation, Vec::new(), mine.clone(), out);
            self.left.insert(scope.clone(), mine);
        }
        out.push(Action::LeaveGroups(scope.clone()));
        for (node, roles) in self.index.drop_scope(&scope) {
            for role in roles {
                out.push(role_removed(&scope, &node, &role));
            }
        }
        if let Some(j) = self.joined.remove(&scope) {
            for node in j.known {
                out.push(Action::Event(Event::NodeRemoved {
                    scope: scope.clone(),
                    node,
                }));
            }
        }
        Ok(())
    }

    // ---- nodes -----------------------------------------------------------

    fn node_up(&mut self, node: NodeName, out: &mut Vec<Action>) {
        if node == self.me {
            return;
        }
        self.connected.insert(node.clone());
        // A (re)started driver lost whatever pulls of this node were in flight.
        for j in self.joined.values_mut() {
            if let Some(p) = j.sync.get_mut(&node) {
                if p.pull.take().is_some() {
                    p.dirty = true;
                }
            }
        }
        out.push(Action::AskScopes(node));
    }

    fn node_down(&mut self, node: &NodeName, out: &mut Vec<Action>) {
        self.connected.remove(node);
        self.peers.remove(node);
        for m in self.members.values_mut() {
            m.remove(node);
        }
        let scopes: Vec<Scope> = self.joined.keys().cloned().collect();
        for scope in scopes {
            for role in self.index.drop_node(&scope, node) {
                out.push(role_removed(&scope, node, &role));
            }
            if let Some(j) = self.joined.get_mut(&scope) {
                j.sync.remove(node);
                if j.known.remove(node) {
                    out.push(Action::Event(Event::NodeRemoved {
                        scope: scope.clone(),
                        node: node.clone(),
                    }));
                }
            }
        }
    }

    fn member(
        &mut self,
        scope: Scope,
        group: Group,
        node: NodeName,
        present: bool,
        out: &mut Vec<Action>,
    ) {
        if node == self.me {
            return;
        }
        let m = self.members.entry(scope.clone()).or_default();
        let entry = m.entry(node.clone()).or_default();
        let was_member = entry.all_nodes;
        match group {
            Group::AllNodes => entry.all_nodes = present,
            Group::Ours => entry.ours = present,
        }
        let now = *entry;
        if !now.all_nodes && !now.ours {
            m.remove(&node);
        }
        if now.ours {
            self.peers.entry(node.clone()).or_default().ours = true;
        }
        if now.all_nodes && self.joined.contains_key(&scope) {
            self.know(&scope, &node, out);
            // A peer that joined the scope after we met it: sync it now, not at the next tick.
            let needs = self
                .peer_scope(&scope, &node)
                .is_none_or(|p| p.seen.is_none() && p.pull.is_none());
            if needs {
                self.start_pull(&scope, &node, out);
            }
            // An update we made before we saw it join never reached it, and its
            // pull of us may have been answered before that update: push our
            // state once, in order with the updates that follow.
            if !was_member && now.ours {
                let snapshot = self.snapshot(&scope);
                out.push(Action::Send {
                    node: node.clone(),
                    scope: scope.clone(),
                    via: Via::Server,
                    msg: snapshot,
                });
            } else if !was_member && now.all_nodes {
                // A 0.5.1 node reads roles before the generation when it pulls, so
                // a change of ours between the two reads leaves it stale until our
                // next change. Its own message says the same thing idempotently.
                let roles = self.my_roles(&scope);
                if !roles.is_empty() {
                    out.push(legacy_send(
                        &node,
                        &scope,
                        Msg::NewRoles {
                            scope: scope.clone(),
                            roles,
                            node: self.me.clone(),
                        },
                    ));
                }
            }
        }
    }

    /// Our state in `scope`, as a snapshot message.
    fn snapshot(&self, scope: &Scope) -> Msg {
        Msg::Snapshot {
            scope: scope.clone(),
            node: self.me.clone(),
            incarnation: self.incarnation,
            joined: self.joined.contains_key(scope),
            generation: self.generation(scope),
            roles: self.my_roles(scope),
        }
    }

    /// Marks `node` known in joined `scope`, firing NodeAdded the first time.
    fn know(&mut self, scope: &Scope, node: &NodeName, out: &mut Vec<Action>) {
        if *node == self.me {
            return;
        }
        if let Some(j) = self.joined.get_mut(scope) {
            if j.known.insert(node.clone()) {
                out.push(Action::Event(Event::NodeAdded {
                    scope: scope.clone(),
                    node: node.clone(),
                }));
            }
        }
    }

    fn peer_scope(&self, scope: &Scope, node: &NodeName) -> Option<&PeerScope> {
        self.joined.get(scope)?.sync.get(node)
    }

    /// The sync state of `node` in joined `scope`, created if new (without an
    /// event: a node is known, with NodeAdded, only once it proves to be in the scope).
    fn peer_scope_mut(&mut self, scope: &Scope, node: &NodeName) -> Option<&mut PeerScope> {
        Some(
            self.joined
                .get_mut(scope)?
                .sync
                .entry(node.clone())
                .or_default(),
        )
    }

    fn peer_is_ours(&self, scope: &Scope, node: &NodeName) -> bool {
        self.peers.get(node).is_some_and(|p| p.ours)
            || self
                .members
                .get(scope)
                .and_then(|m| m.get(node))
                .is_some_and(|m| m.ours)
    }

    /// Starts a pull of `node`'s roles in `scope` unless one is in flight:
    /// a `ch_pull` message to our nodes (ordered with their updates), an erpc
    /// pull to anyone else.
    fn start_pull(&mut self, scope: &Scope, node: &NodeName, out: &mut Vec<Action>) {
        if !self.joined.contains_key(scope) || *node == self.me {
            return;
        }
        let ours = self.peer_is_ours(scope, node);
        let token = self.next_token;
        let tick = self.tick;
        let me = self.me.clone();
        let Some(p) = self.peer_scope_mut(scope, node) else {
            return;
        };
        if p.pull.is_some() {
            return;
        }
        p.pull = Some(InFlight {
            token,
            by_message: ours,
            started_tick: tick,
            epoch: p.epoch,
        });
        self.next_token += 1;
        if ours {
            out.push(Action::Send {
                node: node.clone(),
                scope: scope.clone(),
                via: Via::Server,
                msg: Msg::Pull {
                    scope: scope.clone(),
                    node: me,
                },
            });
        } else {
            out.push(Action::Pull {
                node: node.clone(),
                scope: scope.clone(),
                token,
            });
        }
    }

    // ---- messages -----------------------------------------------------------

    fn message(&mut self, msg: Msg, out: &mut Vec<Action>) {
        if *msg.sender() == self.me {
            return;
        }
        match msg {
            Msg::NewRoles { scope, roles, node } => {
                self.legacy_broadcast(scope, node, roles, Vec::new(), out)
            }
            Msg::RemoveRoles { scope, roles, node } => {
                self.legacy_broadcast(scope, node, Vec::new(), roles, out)
            }
            Msg::Update {
                scope,
                node,
                incarnation,
                generation,
                added,
                removed,
            } => {
                if !self.accept_incarnation(&node, incarnation) || !self.joined.contains_key(&scope)
                {
                    return;
                }
                self.know(&scope, &node, out);
                let p = self.peer_scope_mut(&scope, &node).expect("joined");
                p.epoch += 1;
                match p.seen {
                    Some(s) if generation <= s => return, // duplicate or stale
                    Some(s) if generation == s + 1 => p.seen = Some(generation),
                    _ => {
                        // A gap (or no base yet): apply, then repair with a snapshot.
                        p.seen = Some(generation);
                        p.dirty = true;
                    }
                }
                let dirty = p.dirty;
                for role in self.index.remove(&scope, &node, removed.iter()) {
                    out.push(role_removed(&scope, &node, &role));
                }
                for role in self.index.add(&scope, &node, added) {
                    out.push(role_added(&scope, &node, &role));
                }
                if dirty {
                    self.start_pull(&scope, &node, out);
                }
            }
            Msg::Digest {
                node,
                incarnation,
                scopes,
            } => {
                if !self.accept_incarnation(&node, incarnation) {
                    return;
                }
                let theirs: BTreeMap<Scope, u64> = scopes.into_iter().collect();
                let mine: Vec<Scope> = self.joined.keys().cloned().collect();
                for scope in mine {
                    match theirs.get(&scope) {
                        Some(&g) => {
                            self.know(&scope, &node, out);
                            let p = self.peer_scope_mut(&scope, &node).expect("joined");
                            if p.dirty || p.seen != Some(g) {
                                self.start_pull(&scope, &node, out);
                            }
                        }
                        None => self.not_in_scope(&scope, &node, out),
                    }
                }
            }
            Msg::Pull { scope, node } => {
                let snapshot = self.snapshot(&scope);
                out.push(Action::Send {
                    node,
                    scope,
                    via: Via::Server,
                    msg: snapshot,
                });
            }
            Msg::Snapshot {
                scope,
                node,
                incarnation,
                joined,
                generation,
                roles,
            } => {
                if !self.accept_incarnation(&node, incarnation) || !self.joined.contains_key(&scope)
                {
                    return;
                }
                if let Some(p) = self.peer_scope_mut(&scope, &node) {
                    p.pull = None;
                }
                if !joined {
                    self.not_in_scope(&scope, &node, out);
                    return;
                }
                self.know(&scope, &node, out);
                let p = self.peer_scope_mut(&scope, &node).expect("joined");
                if p.seen.is_some_and(|s| generation < s) {
                    return; // overtaken by updates we already applied
                }
                p.seen = Some(generation);
                p.dirty = false;
                self.replace(&scope, &node, roles, out);
            }
        }
    }

    /// A 0.5.1 broadcast: applied as it comes (it carries no generation), and
    /// counted so an erpc pull that crossed it is not trusted.
    fn legacy_broadcast(
        &mut self,
        scope: Scope,
        node: NodeName,
        added: Vec<Role>,
        removed: Vec<Role>,
        out: &mut Vec<Action>,
    ) {
        if !self.joined.contains_key(&scope) {
            return;
        }
        self.know(&scope, &node, out);
        if let Some(p) = self.peer_scope_mut(&scope, &node) {
            p.epoch += 1;
        }
        for role in self.index.add(&scope, &node, added) {
            out.push(role_added(&scope, &node, &role));
        }
        for role in self.index.remove(&scope, &node, removed.iter()) {
            out.push(role_removed(&scope, &node, &role));
        }
    }

    /// Records a message's incarnation; false when it is from an older life.
    fn accept_incarnation(&mut self, node: &NodeName, incarnation: u64) -> bool {
        let peer = self.peers.entry(node.clone()).or_default();
        peer.ours = true;
        match peer.incarnation {
            Some(known) if incarnation < known => false,
            Some(known) if incarnation == known => true,
            _ => {
                let restarted = peer.incarnation.is_some();
                peer.incarnation = Some(incarnation);
                if restarted {
                    // A new life: what we hold of the old one must be re-pulled.
                    for j in self.joined.values_mut() {
                        if let Some(p) = j.sync.get_mut(node) {
                            p.seen = None;
                            p.dirty = true;
                            p.pull = None;
                        }
                    }
                }
                true
            }
        }
    }

    /// Repeats, once, what changed since the last tick to 0.5.1 members (see [`Echo`]).
    fn echo_to_legacy(&mut self, out: &mut Vec<Action>) {
        let mut sends = Vec::new();
        for (scope, j) in self.joined.iter_mut() {
            let echo = std::mem::take(&mut j.echo);
            if echo.changed {
                let mine = self.index.get_roles(scope, &self.me);
                sends.push((
                    scope.clone(),
                    mine,
                    echo.removed.into_iter().collect::<Vec<_>>(),
                ));
            }
        }
        for (scope, roles) in std::mem::take(&mut self.left) {
            sends.push((scope, Vec::new(), roles));
        }
        for (scope, added, removed) in sends {
            let legacy: Vec<NodeName> = self
                .members
                .get(&scope)
                .map(|m| {
                    m.iter()
                        .filter(|(n, m)| m.all_nodes && !self.is_ours(n, m))
                        .map(|(n, _)| n.clone())
                        .collect()
                })
                .unwrap_or_default();
            for node in legacy {
                if !added.is_empty() {
                    out.push(legacy_send(
                        &node,
                        &scope,
                        Msg::NewRoles {
                            scope: scope.clone(),
                            roles: added.clone(),
                            node: self.me.clone(),
                        },
                    ));
                }
                if !removed.is_empty() {
                    out.push(legacy_send(
                        &node,
                        &scope,
                        Msg::RemoveRoles {
                            scope: scope.clone(),
                            roles: removed.clone(),
                            node: self.me.clone(),
                        },
                    ));
                }
            }
        }
    }

    /// `node` is not in `scope`: it holds no roles there.
    fn not_in_scope(&mut self, scope: &Scope, node: &NodeName, out: &mut Vec<Action>) {
        if let Some(p) = self
            .joined
            .get_mut(scope)
            .and_then(|j| j.sync.get_mut(node))
        {
            p.seen = None;
            p.dirty = false;
        }
        for role in self.index.drop_node(scope, node) {
            out.push(role_removed(scope, node, &role));
        }
    }

    fn replace(&mut self, scope: &Scope, node: &NodeName, roles: Vec<Role>, out: &mut Vec<Action>) {
        let set: OrdSet<Role> = roles.into_iter().collect();
        let diff = self.index.replace(scope, node, &set);
        for role in &diff.removed {
            out.push(role_removed(scope, node, role));
        }
        for role in &diff.added {
            out.push(role_added(scope, node, role));
        }
    }

    // ---- erpc results ---------------------------------------------------------

    fn scopes_result(&mut self, node: NodeName, result: Option<Vec<Scope>>, out: &mut Vec<Action>) {
        let Some(scopes) = result else { return };
        if !self.connected.contains(&node) {
            return;
        }
        for scope in scopes {
            if self.joined.contains_key(&scope) {
                self.know(&scope, &node, out);
                // Never synced (no state yet, or no generation seen) or known stale: pull.
                let needs = self
                    .peer_scope(&scope, &node)
                    .is_none_or(|p| (p.seen.is_none() || p.dirty) && p.pull.is_none());
                if needs {
                    self.start_pull(&scope, &node, out);
                }
            }
        }
    }

    fn generation_result(
        &mut self,
        node: NodeName,
        scope: Scope,
        result: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let Some(g) = result else { return };
        if !self.joined.contains_key(&scope) || !self.connected.contains(&node) {
            return;
        }
        let has_roles = self
            .index
            .scope(&scope)
            .is_some_and(|v| v.count_roles_of(&node) > 0);
        let p = self.peer_scope_mut(&scope, &node).expect("joined");
        let current = match p.seen {
            Some(s) => s == g && !p.dirty,
            // Never synced: nothing to do only if it is not in the scope and we hold nothing of it.
            None => g == 0 && !has_roles && !p.dirty,
        };
        if !current {
            self.start_pull(&scope, &node, out);
        }
    }

    fn pull_result(
        &mut self,
        node: NodeName,
        scope: Scope,
        token: u64,
        result: Option<(u64, Vec<Role>, u64)>,
        out: &mut Vec<Action>,
    ) {
        let ours = self.peers.get(&node).is_some_and(|p| p.ours);
        let Some(p) = self
            .joined
            .get_mut(&scope)
            .and_then(|j| j.sync.get_mut(&node))
        else {
            return;
        };
        let Some(inflight) = p.pull.as_ref().filter(|f| f.token == token) else {
            return; // not the pull we are waiting for
        };
        let epoch_moved = inflight.epoch != p.epoch;
        p.pull = None;
        let Some((g1, roles, g2)) = result else {
            p.dirty = true;
            return;
        };
        if g1 != g2 || epoch_moved {
            // The snapshot may be older than a broadcast we applied: retry later.
            p.dirty = true;
            return;
        }
        if ours && p.seen.is_some_and(|s| s > g2) {
            return; // our ordered updates are already past it
        }
        p.seen = Some(g2);
        p.dirty = false;
        if g2 > 0 || !roles.is_empty() {
            self.know(&scope, &node, out);
        }
        self.replace(&scope, &node, roles, out);
    }

    // ---- tick --------------------------------------------------------------------

    fn on_tick(&mut self, connected: Vec<NodeName>, out: &mut Vec<Action>) {
        self.tick += 1;
        let now: BTreeSet<NodeName> = connected.into_iter().filter(|n| *n != self.me).collect();
        for node in now.difference(&self.connected).cloned().collect::<Vec<_>>() {
            self.node_up(node, out);
        }
        self.connected = now;
        let scopes: Vec<Scope> = self.joined.keys().cloned().collect();
        for scope in &scopes {
            // Drop nodes that hold roles here but are not connected.
            let stale: Vec<NodeName> = self
                .index
                .scope(scope)
                .map(|v| {
                    v.nodes()
                        .filter(|n| **n != self.me && !self.connected.contains(*n))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for node in stale {
                for role in self.index.drop_node(scope, &node) {
                    out.push(role_removed(scope, &node, &role));
                }
                if let Some(p) = self
                    .joined
                    .get_mut(scope)
                    .and_then(|j| j.sync.get_mut(&node))
                {
                    p.seen = None;
                }
            }
            // Forget pulls that never came back; pull what is dirty.
            let tick = self.tick;
            let mut retry = Vec::new();
            if let Some(j) = self.joined.get_mut(scope) {
                for (node, p) in j.sync.iter_mut() {
                    if p.pull
                        .as_ref()
                        .is_some_and(|f| f.by_message && f.started_tick + PULL_EXPIRY_TICKS <= tick)
                    {
                        p.pull = None;
                        p.dirty = true;
                    }
                    if p.dirty && p.pull.is_none() && self.connected.contains(node) {
                        retry.push(node.clone());
                    }
                }
            }
            for node in retry {
                self.start_pull(scope, &node, out);
            }
            // 0.5.1 peers: ask each connected node's generation, as 0.5.1 does.
            for node in self.connected.iter().cloned().collect::<Vec<_>>() {
                if self.peers.get(&node).is_some_and(|p| p.ours) {
                    continue;
                }
                let busy = self
                    .peer_scope(scope, &node)
                    .is_some_and(|p| p.pull.is_some());
                if !busy {
                    out.push(Action::AskGeneration {
                        node,
                        scope: scope.clone(),
                    });
                }
            }
        }
        self.echo_to_legacy(out);
        // Our peers: one digest each, for all scopes together.
        let digest = self.scope_generations();
        for node in &self.connected {
            if self.peers.get(node).is_some_and(|p| p.ours) {
                out.push(Action::Send {
                    node: node.clone(),
                    scope: scopes
                        .first()
                        .cloned()
                        .unwrap_or_else(|| Scope::new(crate::protocol::DEFAULT_SCOPE)),
                    via: Via::Server,
                    msg: Msg::Digest {
                        node: self.me.clone(),
                        incarnation: self.incarnation,
                        scopes: digest.clone(),
                    },
                });
            }
        }
    }
}

fn role_added(scope: &Scope, node: &NodeName, role: &Role) -> Action {
    Action::Event(Event::RoleAdded {
        scope: scope.clone(),
        node: node.clone(),
        role: role.clone(),
    })
}

fn role_removed(scope: &Scope, node: &NodeName, role: &Role) -> Action {
    Action::Event(Event::RoleRemoved {
        scope: scope.clone(),
        node: node.clone(),
        role: role.clone(),
    })
}

fn legacy_send(node: &NodeName, scope: &Scope, msg: Msg) -> Action {
    Action::Send {
        node: node.clone(),
        scope: scope.clone(),
        via: Via::AllNodesMembers,
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s)
    }

    /// Two nodes that joined their scope before they connected: the scopes
    /// reply alone (no `:pg` event yet) must start a pull.
    #[test]
    fn a_scopes_reply_after_a_late_connect_pulls() {
        let s = Scope::new("s");
        let mut a = SyncEngine::new(n("a@h"), 1);
        a.handle(Input::AddRoles {
            scope: s.clone(),
            roles: vec![Role::atom("x")],
        })
        .unwrap();
        let acts = a.handle(Input::NodeUp(n("b@h"))).unwrap();
        assert_eq!(acts, vec![Action::AskScopes(n("b@h"))]);
        let acts = a
            .handle(Input::Scopes {
                node: n("b@h"),
                result: Some(vec![s.clone()]),
            })
            .unwrap();
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::Pull { node, .. } if *node == n("b@h"))),
            "{acts:?}"
        );
        // A second scopes reply while the pull is in flight starts no other.
        let acts = a
            .handle(Input::Scopes {
                node: n("b@h"),
                result: Some(vec![s.clone()]),
            })
            .unwrap();
        assert!(
            !acts.iter().any(|x| matches!(x, Action::Pull { .. })),
            "{acts:?}"
        );
    }

    /// A peer seen in `:pg` for the first time is pulled at once.
    #[test]
    fn a_new_pg_member_is_pulled() {
        let s = Scope::new("s");
        let mut a = SyncEngine::new(n("a@h"), 1);
        a.handle(Input::JoinScope(s.clone())).unwrap();
        let acts = a
            .handle(Input::Member {
                scope: s.clone(),
                group: Group::AllNodes,
                node: n("b@h"),
                present: true,
            })
            .unwrap();
        assert!(
            acts.iter().any(|x| matches!(x, Action::Pull { .. })),
            "{acts:?}"
        );
        assert!(acts.contains(&Action::Event(Event::NodeAdded {
            scope: s,
            node: n("b@h")
        })));
    }

    /// A peer of ours seen joining the scope gets our state pushed at once.
    #[test]
    fn a_new_ours_member_gets_our_snapshot() {
        let s = Scope::new("s");
        let mut a = SyncEngine::new(n("a@h"), 1);
        a.handle(Input::AddRoles {
            scope: s.clone(),
            roles: vec![Role::atom("x")],
        })
        .unwrap();
        a.handle(Input::Member {
            scope: s.clone(),
            group: Group::Ours,
            node: n("b@h"),
            present: true,
        })
        .unwrap();
        let acts = a
            .handle(Input::Member {
                scope: s.clone(),
                group: Group::AllNodes,
                node: n("b@h"),
                present: true,
            })
            .unwrap();
        let pushed = acts.iter().any(|x| {
            matches!(x, Action::Send { msg: Msg::Snapshot { roles, generation: 1, joined: true, .. }, .. } if *roles == vec![Role::atom("x")])
        });
        assert!(pushed, "{acts:?}");
    }

    /// An erpc pull waits for its answer however many ticks pass; a node-up
    /// (a restarted driver) forgets it so the next tick pulls again.
    #[test]
    fn erpc_pulls_do_not_expire_but_node_up_resets_them() {
        let s = Scope::new("s");
        let mut a = SyncEngine::new(n("a@h"), 1);
        a.handle(Input::JoinScope(s.clone())).unwrap();
        a.handle(Input::NodeUp(n("b@h"))).unwrap();
        let acts = a
            .handle(Input::Scopes {
                node: n("b@h"),
                result: Some(vec![s.clone()]),
            })
            .unwrap();
        let token = acts
            .iter()
            .find_map(|x| match x {
                Action::Pull { token, .. } => Some(*token),
                _ => None,
            })
            .expect("a pull");
        for _ in 0..10 {
            let acts = a
                .handle(Input::Tick {
                    connected: vec![n("b@h")],
                })
                .unwrap();
            assert!(
                !acts.iter().any(|x| matches!(x, Action::Pull { .. })),
                "{acts:?}"
            );
        }
        // The slow answer is still taken.
        let acts = a
            .handle(Input::PullResult {
                node: n("b@h"),
                scope: s.clone(),
                token,
                result: Some((2, vec![Role::atom("y")], 2)),
            })
            .unwrap();
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::Event(Event::RoleAdded { .. }))),
            "{acts:?}"
        );
        // A new pull, then a node-up: the tick after pulls again.
        a.handle(Input::Generation {
            node: n("b@h"),
            scope: s.clone(),
            result: Some(3),
        })
        .unwrap();
        a.handle(Input::NodeUp(n("b@h"))).unwrap();
        let acts = a
            .handle(Input::Tick {
                connected: vec![n("b@h")],
            })
            .unwrap();
        assert!(
            acts.iter().any(|x| matches!(x, Action::Pull { .. })),
            "{acts:?}"
        );
    }

    /// A 0.5.1 node seen joining the scope gets our roles in its own shape.
    #[test]
    fn a_new_legacy_member_gets_our_roles_as_new_roles() {
        let s = Scope::new("s");
        let mut a = SyncEngine::new(n("a@h"), 1);
        a.handle(Input::AddRoles {
            scope: s.clone(),
            roles: vec![Role::atom("x")],
        })
        .unwrap();
        let acts = a
            .handle(Input::Member {
                scope: s.clone(),
                group: Group::AllNodes,
                node: n("l@h"),
                present: true,
            })
            .unwrap();
        let pushed = acts.iter().any(|x| {
            matches!(x, Action::Send { via: Via::AllNodesMembers, msg: Msg::NewRoles { roles, .. }, .. } if *roles == vec![Role::atom("x")])
        });
        assert!(pushed, "{acts:?}");
        assert!(
            !acts.iter().any(|x| matches!(
                x,
                Action::Send {
                    via: Via::Server,
                    ..
                }
            )),
            "nothing of ours to a 0.5.1 node: {acts:?}"
        );
    }

    /// A change is repeated once to 0.5.1 members at the next tick (healing
    /// 0.5.1's roles-before-generation pull race), and not again.
    #[test]
    fn changes_are_echoed_once_to_legacy_members() {
        let s = Scope::new("s");
        let mut a = SyncEngine::new(n("a@h"), 1);
        a.handle(Input::JoinScope(s.clone())).unwrap();
        a.handle(Input::NodeUp(n("l@h"))).unwrap();
        a.handle(Input::Member {
            scope: s.clone(),
            group: Group::AllNodes,
            node: n("l@h"),
            present: true,
        })
        .unwrap();
        a.handle(Input::AddRoles {
            scope: s.clone(),
            roles: vec![Role::atom("x"), Role::atom("y")],
        })
        .unwrap();
        a.handle(Input::RemoveRoles {
            scope: s.clone(),
            roles: vec![Role::atom("y")],
        })
        .unwrap();
        let legacy_sends = |acts: &[Action]| -> Vec<Msg> {
            acts.iter()
                .filter_map(|x| match x {
                    Action::Send {
                        via: Via::AllNodesMembers,
                        msg,
                        ..
                    } => Some(msg.clone()),
                    _ => None,
                })
                .collect()
        };
        let acts = a
            .handle(Input::Tick {
                connected: vec![n("l@h")],
            })
            .unwrap();
        let sent = legacy_sends(&acts);
        assert!(
            sent.contains(&Msg::NewRoles {
                scope: s.clone(),
                roles: vec![Role::atom("x")],
                node: n("a@h")
            }),
            "{sent:?}"
        );
        assert!(
            sent.contains(&Msg::RemoveRoles {
                scope: s.clone(),
                roles: vec![Role::atom("y")],
                node: n("a@h")
            }),
            "{sent:?}"
        );
        let acts = a
            .handle(Input::Tick {
                connected: vec![n("l@h")],
            })
            .unwrap();
        assert!(
            legacy_sends(&acts).is_empty(),
            "nothing changed, nothing repeated: {acts:?}"
        );
        // Leaving is repeated too.
        a.handle(Input::LeaveScope(s.clone())).unwrap();
        let acts = a
            .handle(Input::Tick {
                connected: vec![n("l@h")],
            })
            .unwrap();
        assert_eq!(
            legacy_sends(&acts),
            vec![Msg::RemoveRoles {
                scope: s.clone(),
                roles: vec![Role::atom("x")],
                node: n("a@h")
            }]
        );
    }
}
