//! The ClusterHelper service of a Rust node: the core engine driven over cnode.
//!
//! Owns the driver task (one per service) that turns cnode's node events,
//! `:pg` events, server-mailbox messages and erpc replies into engine
//! [`Input`]s and carries out the engine's [`Action`]s; and the public handle
//! [`ClusterHelper`]. Reads are served from the core's shared index, never
//! through the task. Knows no wire format: shapes live in
//! `cluster_helper_core::protocol`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cluster_helper_core::canon;
use cluster_helper_core::protocol::{
    Msg, ALL_NODES_GROUP, API_MODULE, GENERATION_TIMEOUT_MS, GET_GENERATION, GET_MY_ROLES,
    GET_SCOPES, NODE_CONFIG_MODULE, OURS_GROUP, SCOPES_TIMEOUT_MS, SERVER_NAME,
};
use cluster_helper_core::{
    Action, Event, Group, Input, NodeName, Role, Scope, SharedIndex, SyncEngine, Via,
};
use cnode::term::{atom, list};
use cnode::{Dest, Mailbox, Node, NodeEvent, PgEvent, PgScope, RpcResult, Term};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;

/// Errors of the local API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("already joined")]
    AlreadyJoined,
    #[error("not joined")]
    NotJoined,
    #[error("the service has stopped")]
    Stopped,
    #[error("cannot start: {0}")]
    Start(String),
}

enum Cmd {
    Input(Input, Option<oneshot::Sender<Result<(), Error>>>),
    Subscribe(mpsc::UnboundedSender<Event>),
    Stop(oneshot::Sender<()>),
}

/// What readers share with the driver task.
struct Shared {
    me: NodeName,
    index: Arc<SharedIndex>,
    /// Joined scopes and their generations, republished after each input.
    scopes: RwLock<Vec<(Scope, u64)>>,
}

impl Shared {
    fn scopes(&self) -> Vec<(Scope, u64)> {
        self.scopes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running ClusterHelper member on a cnode [`Node`]. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHelper {
    node: Node,
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<Cmd>,
    default_scope: Scope,
}

/// A stream of [`Event`]s (see [`ClusterHelper::events`]).
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the service stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl futures::Stream for Events {
    type Item = Event;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

impl ClusterHelper {
    /// Starts the service on `node`: registers the server name and the erpc
    /// functions 0.5.1 peers call, joins the configured scopes with the
    /// configured roles, and syncs with connected nodes.
    pub async fn start(node: Node, config: Config) -> Result<ClusterHelper, Error> {
        let me = NodeName::new(node.name());
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let engine = SyncEngine::new(me.clone(), incarnation);
        let shared = Arc::new(Shared {
            me,
            index: engine.shared_index(),
            scopes: RwLock::new(Vec::new()),
        });
        let server = node.mailbox();
        server
            .register(SERVER_NAME)
            .map_err(|e| Error::Start(format!("registering {SERVER_NAME}: {e}")))?;
        register_rpcs(&node, &shared);
        let (tx, rx) = mpsc::unbounded_channel();
        let helper = ClusterHelper {
            node: node.clone(),
            shared: shared.clone(),
            cmd: tx.clone(),
            default_scope: config.scope.clone(),
        };
        let driver = Driver {
            node: node.clone(),
            engine,
            shared,
            server,
            cmd_tx: tx,
            pg: BTreeMap::new(),
            subscribers: Vec::new(),
            pull_timeout: config.pull_timeout,
        };
        let span = tracing::info_span!("cluster_helper", node = %node.name());
        tokio::spawn(driver.run(rx, config.pull_interval).instrument(span));
        // Configured scopes first (empty ones too), then the roles in the default scope.
        for s in &config.scopes {
            match helper.join_scope(s.clone()).await {
                Ok(()) | Err(Error::AlreadyJoined) => {}
                Err(e) => return Err(e),
            }
        }
        if !config.roles.is_empty() {
            helper
                .add_roles_in(config.roles.clone(), config.scope.clone())
                .await?;
        }
        Ok(helper)
    }

    async fn input(&self, input: Input) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Input(input, Some(tx)))
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// The cnode node this service runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The local node's name.
    pub fn local_node(&self) -> &NodeName {
        &self.shared.me
    }

    /// Whether `node` is the local node.
    pub fn is_local_node(&self, node: &str) -> bool {
        self.shared.me.as_str() == node
    }

    /// The default scope.
    pub fn default_scope(&self) -> &Scope {
        &self.default_scope
    }

    /// Adds a role in the default scope.
    pub async fn add_role(&self, role: Role) -> Result<(), Error> {
        self.add_roles_in(vec![role], self.default_scope.clone())
            .await
    }

    /// Adds roles in the default scope.
    pub async fn add_roles(&self, roles: Vec<Role>) -> Result<(), Error> {
        self.add_roles_in(roles, self.default_scope.clone()).await
    }

    /// Adds roles in `scope` (joining it if needed).
    pub async fn add_roles_in(&self, roles: Vec<Role>, scope: Scope) -> Result<(), Error> {
        self.input(Input::AddRoles { scope, roles }).await
    }

    /// Removes a role in the default scope.
    pub async fn remove_role(&self, role: Role) -> Result<(), Error> {
        self.remove_roles_in(vec![role], self.default_scope.clone())
            .await
    }

    /// Removes roles in the default scope.
    pub async fn remove_roles(&self, roles: Vec<Role>) -> Result<(), Error> {
        self.remove_roles_in(roles, self.default_scope.clone())
            .await
    }

    /// Removes roles in `scope`.
    pub async fn remove_roles_in(&self, roles: Vec<Role>, scope: Scope) -> Result<(), Error> {
        self.input(Input::RemoveRoles { scope, roles }).await
    }

    /// Joins `scope`.
    pub async fn join_scope(&self, scope: Scope) -> Result<(), Error> {
        self.input(Input::JoinScope(scope)).await
    }

    /// Leaves `scope`, telling peers first.
    pub async fn leave_scope(&self, scope: Scope) -> Result<(), Error> {
        self.input(Input::LeaveScope(scope)).await
    }

    /// Nodes that have `role` in the default scope.
    pub fn get_nodes(&self, role: &Role) -> Vec<NodeName> {
        self.get_nodes_in(role, &self.default_scope)
    }

    /// Nodes that have `role` in `scope`.
    pub fn get_nodes_in(&self, role: &Role, scope: &Scope) -> Vec<NodeName> {
        self.shared.index.load().get_nodes(scope, role)
    }

    /// Roles of `node` in the default scope.
    pub fn get_roles(&self, node: &NodeName) -> Vec<Role> {
        self.get_roles_in(node, &self.default_scope)
    }

    /// Roles of `node` in `scope`.
    pub fn get_roles_in(&self, node: &NodeName, scope: &Scope) -> Vec<Role> {
        self.shared.index.load().get_roles(scope, node)
    }

    /// Nodes with at least one role in the default scope.
    pub fn all_nodes(&self) -> Vec<NodeName> {
        self.all_nodes_in(&self.default_scope)
    }

    /// Nodes with at least one role in `scope`.
    pub fn all_nodes_in(&self, scope: &Scope) -> Vec<NodeName> {
        self.shared.index.load().all_nodes(scope)
    }

    /// The local roles in the default scope.
    pub fn get_my_roles(&self) -> Vec<Role> {
        self.get_roles(&self.shared.me)
    }

    /// The local roles in `scope`.
    pub fn get_my_roles_in(&self, scope: &Scope) -> Vec<Role> {
        self.get_roles_in(&self.shared.me, scope)
    }

    /// Scopes the local node has joined.
    pub fn list_scopes(&self) -> Vec<Scope> {
        self.shared.scopes().into_iter().map(|(s, _)| s).collect()
    }

    /// The local generation in `scope` (0 when not joined).
    pub fn generation(&self, scope: &Scope) -> u64 {
        self.shared
            .scopes()
            .into_iter()
            .find(|(s, _)| s == scope)
            .map_or(0, |(_, g)| g)
    }

    /// Events from now on: roles added/removed, nodes added/removed.
    pub fn events(&self) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.cmd.send(Cmd::Subscribe(tx));
        Events { rx }
    }

    /// Leaves every scope (telling peers), then stops the driver.
    /// The cnode node keeps running; shut it down separately.
    pub async fn stop(&self) {
        for s in self.list_scopes() {
            let _ = self.leave_scope(s).await;
        }
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A scope argument from an erpc caller.
fn scope_arg(args: &[Term]) -> Option<Scope> {
    match args.first()? {
        Term::Atom(a) => Some(Scope::new(&a.name)),
        _ => None,
    }
}

/// A non-negative integer term, small when it fits (as the BEAM writes it).
fn int_term(v: u64) -> Term {
    match i32::try_from(v) {
        Ok(i) => Term::from(eetf::FixInteger::from(i)),
        Err(_) => Term::from(eetf::BigInteger::from(v)),
    }
}

fn badarg() -> RpcResult {
    RpcResult::Error(atom("badarg"))
}

fn roles_term(roles: &[Role]) -> Term {
    list(roles.iter().map(Role::to_term).collect())
}

fn nodes_term(nodes: &[NodeName]) -> Term {
    list(nodes.iter().map(|n| atom(n.as_str())).collect())
}

/// The erpc functions peers call: 0.5.1's three, and the read API so
/// `cluster-helper roles` can ask a Rust node as it asks an Elixir one.
fn register_rpcs(node: &Node, shared: &Arc<Shared>) {
    let s = shared.clone();
    node.register_rpc_sync(API_MODULE, GET_MY_ROLES, 1, move |args| {
        match scope_arg(&args) {
            Some(scope) => RpcResult::Ok(roles_term(&s.index.load().get_roles(&scope, &s.me))),
            None => badarg(),
        }
    });
    let s = shared.clone();
    node.register_rpc_sync(
        NODE_CONFIG_MODULE,
        GET_GENERATION,
        1,
        move |args| match scope_arg(&args) {
            Some(scope) => {
                let g = s
                    .scopes()
                    .into_iter()
                    .find(|(x, _)| *x == scope)
                    .map_or(0, |(_, g)| g);
                RpcResult::Ok(int_term(g))
            }
            None => badarg(),
        },
    );
    let s = shared.clone();
    node.register_rpc_sync(NODE_CONFIG_MODULE, GET_SCOPES, 0, move |_| {
        RpcResult::Ok(list(
            s.scopes()
                .into_iter()
                .map(|(x, _)| atom(x.as_str()))
                .collect(),
        ))
    });
    let s = shared.clone();
    node.register_rpc_sync(API_MODULE, "all_nodes", 1, move |args| {
        match scope_arg(&args) {
            Some(scope) => RpcResult::Ok(nodes_term(&s.index.load().all_nodes(&scope))),
            None => badarg(),
        }
    });
    let s = shared.clone();
    node.register_rpc_sync(API_MODULE, "get_roles", 2, move |args| {
        match (&args[0], scope_arg(&args[1..])) {
            (Term::Atom(n), Some(scope)) => RpcResult::Ok(roles_term(
                &s.index.load().get_roles(&scope, &NodeName::new(&n.name)),
            )),
            _ => badarg(),
        }
    });
    let s = shared.clone();
    node.register_rpc_sync(API_MODULE, "list_scopes", 0, move |_| {
        RpcResult::Ok(list(
            s.scopes()
                .into_iter()
                .map(|(x, _)| atom(x.as_str()))
                .collect(),
        ))
    });
}

/// A term received from the network, as a protocol message.
pub(crate) fn decode_msg(term: &Term) -> Result<Msg, String> {
    let bytes = canon::encode_term(term).map_err(|e| e.to_string())?;
    Msg::decode(&bytes).map_err(|e| e.to_string())
}

/// A protocol message as a term to send.
pub(crate) fn encode_msg(msg: &Msg) -> Option<Term> {
    eetf::Term::decode(&msg.encode()[..]).ok()
}

struct Driver {
    node: Node,
    engine: SyncEngine,
    shared: Arc<Shared>,
    server: Mailbox,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    pg: BTreeMap<Scope, PgScope>,
    subscribers: Vec<mpsc::UnboundedSender<Event>>,
    pull_timeout: Duration,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>, pull_interval: Duration) {
        let mut node_events = self.node.events();
        let (pg_tx, mut pg_rx) = mpsc::unbounded_channel::<(Scope, PgEvent)>();
        let mut tick = tokio::time::interval(pull_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; skip it
                           // Nodes connected before we started count as up.
        for n in self.node.nodes() {
            let _ = self.feed(Input::NodeUp(NodeName::new(&n)), &pg_tx);
        }
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Input(input, reply)) => {
                        let r = self.feed(input, &pg_tx);
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                    Some(Cmd::Subscribe(tx)) => self.subscribers.push(tx),
                    Some(Cmd::Stop(done)) => {
                        for (_, scope) in std::mem::take(&mut self.pg) {
                            scope.stop().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                msg = self.server.recv() => match msg {
                    Some(term) => match decode_msg(&term) {
                        Ok(m) => { let _ = self.feed(Input::Message(m), &pg_tx); }
                        Err(e) => warn!(error = %e, "dropping a message the server does not understand"),
                    },
                    None => return,
                },
                ev = node_events.recv() => match ev {
                    Some(NodeEvent::Up { node, hidden: false }) => { let _ = self.feed(Input::NodeUp(NodeName::new(&node)), &pg_tx); }
                    Some(NodeEvent::Up { hidden: true, .. }) => {}
                    Some(NodeEvent::Down { node, .. }) => { let _ = self.feed(Input::NodeDown(NodeName::new(&node)), &pg_tx); }
                    None => return,
                },
                Some((scope, ev)) = pg_rx.recv() => self.pg_event(scope, ev, &pg_tx),
                _ = tick.tick() => {
                    let connected = self.node.nodes().iter().map(|n| NodeName::new(n)).collect();
                    let _ = self.feed(Input::Tick { connected }, &pg_tx);
                }
            }
        }
    }

    /// Feeds one input to the engine and carries out its actions.
    fn feed(
        &mut self,
        input: Input,
        pg_tx: &mpsc::UnboundedSender<(Scope, PgEvent)>,
    ) -> Result<(), Error> {
        let actions = match self.engine.handle(input) {
            Ok(a) => a,
            Err(cluster_helper_core::EngineError::AlreadyJoined) => {
                return Err(Error::AlreadyJoined)
            }
            Err(cluster_helper_core::EngineError::NotJoined) => return Err(Error::NotJoined),
        };
        let scopes = self.engine.scope_generations();
        *self
            .shared
            .scopes
            .write()
            .unwrap_or_else(|p| p.into_inner()) = scopes;
        for a in actions {
            self.act(a, pg_tx);
        }
        Ok(())
    }

    fn act(&mut self, action: Action, pg_tx: &mpsc::UnboundedSender<(Scope, PgEvent)>) {
        match action {
            Action::JoinGroups(scope) => {
                let Some(pg) = self.pg_scope(&scope, pg_tx) else {
                    return;
                };
                let me = self.server.pid().clone();
                // Ours first: a peer that sees us in all_nodes already knows we are ours.
                tokio::spawn(async move {
                    let _ = pg.join(atom(OURS_GROUP), std::slice::from_ref(&me)).await;
                    let _ = pg.join(atom(ALL_NODES_GROUP), &[me]).await;
                });
            }
            Action::LeaveGroups(scope) => {
                if let Some(pg) = self.pg.get(&scope).cloned() {
                    let me = self.server.pid().clone();
                    tokio::spawn(async move {
                        let _ = pg
                            .leave(atom(ALL_NODES_GROUP), std::slice::from_ref(&me))
                            .await;
                        let _ = pg.leave(atom(OURS_GROUP), &[me]).await;
                    });
                }
            }
            Action::Send {
                node,
                scope,
                via,
                msg,
            } => {
                let Some(term) = encode_msg(&msg) else {
                    warn!(?msg, "cannot encode a message");
                    return;
                };
                match via {
                    Via::Server => self.server.send(
                        Dest::Remote {
                            name: SERVER_NAME.into(),
                            node: node.to_string(),
                        },
                        term,
                    ),
                    Via::AllNodesMembers => {
                        let pids = self
                            .pg
                            .get(&scope)
                            .and_then(|pg| {
                                pg.get_members_by_node(&atom(ALL_NODES_GROUP))
                                    .remove(node.as_str())
                            })
                            .unwrap_or_default();
                        for pid in pids {
                            self.server.send(pid, term.clone());
                        }
                    }
                }
            }
            Action::AskScopes(node) => {
                let (n, tx) = (self.node.clone(), self.cmd_tx.clone());
                tokio::spawn(async move {
                    let r = n
                        .erpc_call(
                            node.as_str(),
                            NODE_CONFIG_MODULE,
                            GET_SCOPES,
                            vec![],
                            Duration::from_millis(SCOPES_TIMEOUT_MS),
                        )
                        .await;
                    let result = r.ok().and_then(|t| cnode::term::as_list(&t)).map(|l| {
                        l.iter()
                            .filter_map(|s| cnode::term::as_atom(s).map(Scope::new))
                            .collect()
                    });
                    let _ = tx.send(Cmd::Input(Input::Scopes { node, result }, None));
                });
            }
            Action::AskGeneration { node, scope } => {
                let (n, tx) = (self.node.clone(), self.cmd_tx.clone());
                tokio::spawn(async move {
                    let result = generation_of(&n, &node, &scope).await;
                    let _ = tx.send(Cmd::Input(
                        Input::Generation {
                            node,
                            scope,
                            result,
                        },
                        None,
                    ));
                });
            }
            Action::Pull { node, scope, token } => {
                let (n, tx, timeout) = (self.node.clone(), self.cmd_tx.clone(), self.pull_timeout);
                tokio::spawn(async move {
                    let result = pull(&n, &node, &scope, timeout).await;
                    let _ = tx.send(Cmd::Input(
                        Input::PullResult {
                            node,
                            scope,
                            token,
                            result,
                        },
                        None,
                    ));
                });
            }
            Action::Event(e) => {
                match &e {
                    Event::RoleAdded { scope, node, role } => {
                        debug!(%scope, %node, %role, "role added")
                    }
                    Event::RoleRemoved { scope, node, role } => {
                        debug!(%scope, %node, %role, "role removed")
                    }
                    Event::NodeAdded { scope, node } => info!(%scope, %node, "node added"),
                    Event::NodeRemoved { scope, node } => info!(%scope, %node, "node removed"),
                }
                self.subscribers.retain(|s| s.send(e.clone()).is_ok());
            }
        }
    }

    /// The `:pg` scope process for `scope`, started (and watched) on first use.
    fn pg_scope(
        &mut self,
        scope: &Scope,
        pg_tx: &mpsc::UnboundedSender<(Scope, PgEvent)>,
    ) -> Option<PgScope> {
        if let Some(pg) = self.pg.get(scope) {
            return Some(pg.clone());
        }
        let pg = match self.node.pg_scope(scope.as_str()) {
            Ok(pg) => pg,
            Err(e) => {
                warn!(%scope, error = %e, "cannot start the :pg scope");
                return None;
            }
        };
        let mut events = pg.events();
        let (tx, s) = (pg_tx.clone(), scope.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if tx.send((s.clone(), ev)).is_err() {
                    break;
                }
            }
        });
        self.pg.insert(scope.clone(), pg.clone());
        Some(pg)
    }

    /// A `:pg` join/leave: tell the engine, per node, whether it is still in the group.
    fn pg_event(
        &mut self,
        scope: Scope,
        ev: PgEvent,
        pg_tx: &mpsc::UnboundedSender<(Scope, PgEvent)>,
    ) {
        let (group_term, pids) = match &ev {
            PgEvent::Join { group, pids } | PgEvent::Leave { group, pids } => (group, pids),
        };
        let group = match cnode::term::as_atom(group_term) {
            Some(ALL_NODES_GROUP) => Group::AllNodes,
            Some(OURS_GROUP) => Group::Ours,
            _ => return,
        };
        let Some(pg) = self.pg.get(&scope) else {
            return;
        };
        let members = pg.get_members_by_node(group_term);
        let mut nodes: Vec<String> = pids.iter().map(|p| p.node.name.clone()).collect();
        nodes.sort();
        nodes.dedup();
        for n in nodes {
            if n == self.node.name() {
                continue;
            }
            let present = members.contains_key(&n);
            let input = Input::Member {
                scope: scope.clone(),
                group,
                node: NodeName::new(&n),
                present,
            };
            let _ = self.feed(input, pg_tx);
        }
    }
}

async fn generation_of(n: &Node, node: &NodeName, scope: &Scope) -> Option<u64> {
    let t = n
        .erpc_call(
            node.as_str(),
            NODE_CONFIG_MODULE,
            GET_GENERATION,
            vec![atom(scope.as_str())],
            Duration::from_millis(GENERATION_TIMEOUT_MS),
        )
        .await
        .ok()?;
    match t {
        Term::FixInteger(i) => u64::try_from(i.value).ok(),
        Term::BigInteger(b) => u64::try_from(&b.value).ok(),
        _ => None,
    }
}

/// 0.5.1's pull, guarded: generation, roles, generation.
async fn pull(
    n: &Node,
    node: &NodeName,
    scope: &Scope,
    timeout: Duration,
) -> Option<(u64, Vec<Role>, u64)> {
    let g1 = generation_of(n, node, scope).await?;
    let roles = n
        .erpc_call(
            node.as_str(),
            API_MODULE,
            GET_MY_ROLES,
            vec![atom(scope.as_str())],
            timeout,
        )
        .await
        .ok()?;
    let roles = cnode::term::as_list(&roles)?
        .iter()
        .map(Role::from_term)
        .collect::<Result<Vec<Role>, _>>()
        .ok()?;
    let g2 = generation_of(n, node, scope).await?;
    Some((g1, roles, g2))
}
