//! The node: builder, lifecycle, the shared state every layer works on, and
//! the connection table (who is connected, pending connects, simultaneous
//! connect resolution as OTP's net_kernel does it).
//!
//! Owns: `Node`, `NodeBuilder`, `NodeEvent`, the process/name/connection
//! tables behind one mutex (never held across an await), EPMD registration,
//! the listener. Does not parse frames (frame.rs, control.rs) nor run a
//! connection (connection.rs) nor interpret process signals (process.rs).

use crate::connection;
use crate::control::Control;
use crate::epmd;
use crate::erpc::RpcHandler;
use crate::handshake::{self, flags, AcceptStatus};
use crate::process::Proc;
use eetf::{Atom, Pid, Reference, Term};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Node lifecycle errors.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid node name {0:?} (want name@host)")]
    BadName(String),
    #[error("no cookie given and cannot read $HOME/.erlang.cookie: {0}")]
    NoCookie(String),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Epmd(#[from] epmd::EpmdError),
}

/// Connection establishment errors (`Node::connect`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    #[error("invalid node name {0:?}")]
    BadName(String),
    #[error("cannot connect to {node}: {reason}")]
    Failed { node: String, reason: String },
    #[error("node is shut down")]
    Shutdown,
}

/// A node joined or left (published and hidden peers alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A connection to `node` is up.
    Up { node: String, hidden: bool },
    /// The connection to `node` went down.
    Down { node: String, reason: String },
}

/// Tunables; defaults match `erl`'s.
#[derive(Debug, Clone)]
pub struct Config {
    pub tick_time: Duration,
    pub hidden: bool,
    pub max_frame: usize,
    /// Links + remote monitors one local process accepts from peers.
    pub max_links_per_process: usize,
    /// After a connection comes up, connect to the peer's `nodes()` too.
    pub mesh: bool,
    pub handshake_timeout: Duration,
}

/// Builds and starts a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    cookie: Option<String>,
    listen_ip: IpAddr,
    port: u16,
    cfg: Config,
}

impl NodeBuilder {
    /// Cookie (else `$HOME/.erlang.cookie`).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }
    /// Address to listen on for incoming connections (default 0.0.0.0).
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }
    /// Port to listen on (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// `net_ticktime` (default 60 s): ticks go out every quarter of it and a
    /// silent peer is dropped after it.
    pub fn tick_time(mut self, t: Duration) -> Self {
        self.cfg.tick_time = t;
        self
    }
    /// A hidden node (default: published/visible).
    pub fn hidden(mut self, hidden: bool) -> Self {
        self.cfg.hidden = hidden;
        self
    }
    /// Largest frame accepted from a peer (default 64 MiB).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.cfg.max_frame = bytes;
        self
    }
    /// Time allowed for EPMD lookup + TCP connect + handshake (default 7 s).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.cfg.handshake_timeout = t;
        self
    }
    /// Links plus monitors peers may set on one local process (default 100 000).
    pub fn max_links_per_process(mut self, n: usize) -> Self {
        self.cfg.max_links_per_process = n;
        self
    }
    /// Connect to the peers of each new peer (default true).
    pub fn mesh(mut self, mesh: bool) -> Self {
        self.cfg.mesh = mesh;
        self
    }

    /// Registers with EPMD, starts listening and the built-in services
    /// (net_kernel, rex, global_name_server).
    pub async fn start(self) -> Result<Node, NodeError> {
        let (alive, host) =
            split_name(&self.name).ok_or_else(|| NodeError::BadName(self.name.clone()))?;
        let cookie = match self.cookie {
            Some(c) => c,
            None => read_cookie_file()?,
        };
        let listener = TcpListener::bind(SocketAddr::new(self.listen_ip, self.port))
            .await
            .map_err(NodeError::Listen)?;
        let port = listener.local_addr().map_err(NodeError::Listen)?.port();
        let reg = epmd::register(alive, port, self.cfg.hidden).await?;
        let creation = reg.creation;
        let _ = host;
        let inner = Arc::new(Inner {
            name: self.name.clone(),
            name_atom: Atom::from(self.name.as_str()),
            creation,
            cookie,
            flags: flags::offered(!self.cfg.hidden),
            cfg: self.cfg,
            port,
            state: Mutex::new(State::default()),
            subscribers: Mutex::new(Default::default()),
            next_pid: AtomicU32::new(1),
            next_ref: AtomicU64::new(1),
            ref_salt: std::process::id() ^ (creation.rotate_left(7)),
            cancel: CancellationToken::new(),
            rpc: RwLock::new(HashMap::new()),
            rpc_workers: std::sync::atomic::AtomicUsize::new(0),
        });
        let node = Node { inner };
        tokio::spawn(reg.keep_alive(
            alive.to_owned(),
            port,
            node.inner.cfg.hidden,
            node.inner.cancel.clone(),
        ));
        let n2 = node.clone();
        let span = tracing::info_span!("cnode", node = %node.inner.name);
        tokio::spawn(async move { n2.accept_loop(listener).await }.instrument(span));
        crate::net_kernel::start(&node);
        // Built in, so peers that are Rust nodes can mesh through us
        // (`erpc:call(Node, erlang, nodes, [])` answers like a BEAM node).
        let weak = Arc::downgrade(&node.inner);
        node.register_rpc_sync("erlang", "nodes", 0, move |_| {
            // Weak: the handler lives inside the node it describes.
            let names = weak
                .upgrade()
                .map(|inner| Node { inner }.nodes())
                .unwrap_or_default();
            crate::erpc::RpcResult::Ok(crate::term::list(
                names.iter().map(|n| crate::term::atom(n)).collect(),
            ))
        });
        crate::global::start(&node);
        tracing::info!(node = %node.inner.name, port, creation, "node started");
        Ok(node)
    }
}

fn read_cookie_file() -> Result<String, NodeError> {
    let home = std::env::var("HOME").map_err(|e| NodeError::NoCookie(e.to_string()))?;
    let text = std::fs::read_to_string(format!("{home}/.erlang.cookie"))
        .map_err(|e| NodeError::NoCookie(e.to_string()))?;
    Ok(text.trim().to_owned())
}

/// `name@host` -> (`name`, `host`).
pub(crate) fn split_name(name: &str) -> Option<(&str, &str)> {
    let (a, h) = name.split_once('@')?;
    (!a.is_empty() && !h.is_empty() && name.len() < 256).then_some((a, h))
}

/// A running node. Cheap to clone; all clones are the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// A connection's send queue and its readiness watch.
type ConnHandles = (
    mpsc::UnboundedSender<Vec<u8>>,
    watch::Receiver<Option<bool>>,
);

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) name_atom: Atom,
    pub(crate) creation: u32,
    pub(crate) cookie: String,
    pub(crate) flags: u64,
    pub(crate) cfg: Config,
    pub(crate) port: u16,
    pub(crate) state: Mutex<State>,
    subscribers: Mutex<crate::events::Subscribers<NodeEvent>>,
    next_pid: AtomicU32,
    next_ref: AtomicU64,
    ref_salt: u32,
    pub(crate) cancel: CancellationToken,
    pub(crate) rpc: RwLock<HashMap<(String, String, usize), RpcHandler>>,
    pub(crate) rpc_workers: std::sync::atomic::AtomicUsize,
}

impl Inner {
    /// The node's tables. Never held across an await; a poisoned lock is
    /// still usable (no invariant spans a panic point).
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) procs: HashMap<u32, Proc>,
    pub(crate) names: HashMap<String, u32>,
    /// Alias reference -> pid id (gen_server replies via ALIAS_SEND).
    pub(crate) aliases: HashMap<Reference, u32>,
    pub(crate) conns: HashMap<String, Conn>,
    next_conn_id: u64,
    /// Why the last attempt with a peer failed, for `connect`'s error.
    /// Bounded: peers can make us record names.
    failures: HashMap<String, String>,
}

/// Most failure reasons kept (see [`State::failures`]).
const MAX_FAILURES_KEPT: usize = 1024;

pub(crate) enum ConnPhase {
    Pending,
    Up { hidden: bool },
}

pub(crate) struct Conn {
    /// Which attempt owns this slot (outgoing or accepted); stale attempts
    /// compare ids and back off.
    pub(crate) id: u64,
    pub(crate) tx: mpsc::UnboundedSender<Vec<u8>>,
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    pub(crate) phase: ConnPhase,
    /// Some(true) once up, Some(false) when the attempt failed.
    ready: watch::Sender<Option<bool>>,
    pub(crate) kill: CancellationToken,
    /// Cancels our outgoing attempt when an incoming connection takes over.
    attempt: CancellationToken,
}

impl State {
    /// A new pending slot; its kill token is a child of the node's, so a
    /// shutdown reaches every connection, even one set up during it.
    fn new_conn(
        &mut self,
        node_cancel: &CancellationToken,
    ) -> (u64, mpsc::UnboundedSender<Vec<u8>>, Conn) {
        self.next_conn_id += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready, _) = watch::channel(None);
        let id = self.next_conn_id;
        (
            id,
            tx.clone(),
            Conn {
                id,
                tx,
                rx: Some(rx),
                phase: ConnPhase::Pending,
                ready,
                kill: node_cancel.child_token(),
                attempt: CancellationToken::new(),
            },
        )
    }
}

impl Node {
    /// Starts building a node named `name@host`.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            cookie: None,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            cfg: Config {
                tick_time: Duration::from_secs(60),
                hidden: false,
                max_frame: 64 << 20,
                max_links_per_process: 100_000,
                mesh: true,
                handshake_timeout: Duration::from_secs(7),
            },
        }
    }

    /// Our full node name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Creation assigned by EPMD.
    pub fn creation(&self) -> u32 {
        self.inner.creation
    }

    /// The port we listen on.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Connected nodes (published ones, like `nodes()`).
    pub fn nodes(&self) -> Vec<String> {
        self.nodes_filtered(false)
    }

    /// Connected hidden nodes (like `nodes(hidden)`).
    pub fn hidden_nodes(&self) -> Vec<String> {
        self.nodes_filtered(true)
    }

    fn nodes_filtered(&self, want_hidden: bool) -> Vec<String> {
        let st = self.inner.state();
        let mut v: Vec<String> = st
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, ConnPhase::Up { hidden } if hidden == want_hidden))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// A stream of node up/down events from now on.
    pub fn events(&self) -> NodeEvents {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subscribe()
    }

    pub(crate) fn emit(&self, ev: NodeEvent) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .emit(ev);
    }

    /// A new pid of this node (not yet a process).
    pub(crate) fn new_pid(&self) -> Pid {
        let n = self.inner.next_pid.fetch_add(1, Ordering::Relaxed);
        Pid {
            node: self.inner.name_atom.clone(),
            id: n & 0x7fff,
            serial: (n >> 15) & 0x1fff,
            creation: self.inner.creation,
        }
    }

    /// A fresh reference of this node.
    pub fn make_ref(&self) -> Reference {
        let n = self.inner.next_ref.fetch_add(1, Ordering::Relaxed);
        Reference {
            node: self.inner.name_atom.clone(),
            id: vec![(n & 0x3ffff) as u32, (n >> 18) as u32, self.inner.ref_salt],
            creation: self.inner.creation,
        }
    }

    /// Is `pid` one of ours (this node, this creation)?
    pub(crate) fn is_local(&self, pid: &Pid) -> bool {
        pid.node.name == self.inner.name && pid.creation == self.inner.creation
    }

    /// Queues a control message (and payload) to `node`, connecting if needed.
    /// Messages to unreachable nodes are dropped, as on a BEAM node.
    pub(crate) fn send_ctrl(&self, node: &str, ctrl: Control, payload: Option<&Term>) {
        if node == self.inner.name {
            tracing::warn!(?ctrl, "control message addressed to ourselves dropped");
            return;
        }
        let frame = match crate::frame::encode_frame(&ctrl.to_term(), payload) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode outgoing message");
                return;
            }
        };
        if let Some((tx, _)) = self.conn_tx(node, true) {
            let _ = tx.send(frame);
        }
    }

    /// The send queue of the connection to `node`, starting a connection
    /// attempt if none exists and `start` is set.
    fn conn_tx(&self, node: &str, start: bool) -> Option<ConnHandles> {
        if self.inner.cancel.is_cancelled() || split_name(node).is_none() {
            return None;
        }
        let mut st = self.inner.state();
        if let Some(c) = st.conns.get(node) {
            return Some((c.tx.clone(), c.ready.subscribe()));
        }
        if !start {
            return None;
        }
        let (id, tx, conn) = st.new_conn(&self.inner.cancel);
        let ready = conn.ready.subscribe();
        let attempt = conn.attempt.clone();
        st.conns.insert(node.to_owned(), conn);
        drop(st);
        let me = self.clone();
        let peer = node.to_owned();
        let span = tracing::info_span!("connect", node = %self.inner.name, peer = %peer);
        tokio::spawn(async move { me.outgoing(id, peer, attempt).await }.instrument(span));
        Some((tx, ready))
    }

    /// Connects to `node` (no-op when connected) and waits until the
    /// connection is up.
    pub async fn connect(&self, node: &str) -> Result<(), ConnectError> {
        if split_name(node).is_none() {
            return Err(ConnectError::BadName(node.into()));
        }
        if node == self.inner.name {
            return Ok(());
        }
        let Some((_, ready)) = self.conn_tx(node, true) else {
            return Err(ConnectError::Shutdown);
        };
        let deadline = tokio::time::Instant::now() + self.inner.cfg.handshake_timeout * 2;
        let mut ready = ready;
        loop {
            let res = tokio::time::timeout_at(deadline, async {
                loop {
                    match *ready.borrow_and_update() {
                        Some(true) => return true,
                        Some(false) => return false,
                        None => {}
                    }
                    if ready.changed().await.is_err() {
                        return false;
                    }
                }
            })
            .await;
            match res {
                Ok(true) => return Ok(()),
                Err(_) => {
                    return Err(
                        self.connect_failed(node, "no connection within the handshake timeout")
                    )
                }
                Ok(false) => {
                    // Our attempt's slot ended, but in a simultaneous connect the
                    // peer's own connection may have taken a new slot meanwhile:
                    // wait for that one rather than report a failure.
                    if self.nodes().iter().any(|n| n == node) {
                        return Ok(());
                    }
                    match self.conn_tx(node, false) {
                        Some((_, next)) => ready = next,
                        None => {
                            return Err(self.connect_failed(node, "the connection attempt failed"))
                        }
                    }
                }
            }
        }
    }

    /// The error for a failed `connect`, with the recorded reason if any.
    fn connect_failed(&self, node: &str, fallback: &str) -> ConnectError {
        let reason = self
            .inner
            .state()
            .failures
            .remove(node)
            .unwrap_or_else(|| fallback.to_owned());
        ConnectError::Failed {
            node: node.to_owned(),
            reason,
        }
    }

    /// Drops the connection to `node` (like `erlang:disconnect_node/1`).
    pub fn disconnect(&self, node: &str) -> bool {
        let st = self.inner.state();
        match st.conns.get(node) {
            Some(c) => {
                c.kill.cancel();
                true
            }
            None => false,
        }
    }

    /// Does attempt `id` still own the (pending) slot for `peer`?
    fn owns_slot(&self, peer: &str, id: u64) -> bool {
        let st = self.inner.state();
        matches!(st.conns.get(peer), Some(c) if c.id == id && matches!(c.phase, ConnPhase::Pending))
    }

    async fn outgoing(self, id: u64, peer: String, attempt: CancellationToken) {
        use handshake::HandshakeError as H;
        let timeout = self.inner.cfg.handshake_timeout;
        let dial = async {
            let (alive, host) = split_name(&peer).ok_or_else(|| H::Failed {
                peer: peer.clone(),
                reason: "bad name".into(),
            })?;
            let port = epmd::lookup(alive, host).await.map_err(|e| H::Failed {
                peer: peer.clone(),
                reason: e.to_string(),
            })?;
            let stream = TcpStream::connect((host, port))
                .await
                .map_err(|e| H::Failed {
                    peer: peer.clone(),
                    reason: e.to_string(),
                })?;
            let _ = stream.set_nodelay(true);
            let inner = &self.inner;
            handshake::connect(
                stream,
                &inner.name,
                inner.creation,
                inner.flags,
                &inner.cookie,
                &peer,
                || self.owns_slot(&peer, id),
            )
            .await
        };
        let res = tokio::select! {
            // An incoming connection from the peer took over (simultaneous connect).
            _ = attempt.cancelled() => return tracing::debug!("outgoing attempt superseded"),
            r = tokio::time::timeout(timeout, dial) => r,
        };
        match res {
            Ok(Ok((stream, p))) => self.established(id, stream, p).await,
            Ok(Err(H::Nok { .. })) => {
                // The peer wins the simultaneous connect and connects to us;
                // keep the slot (and its queue) for that incoming connection.
                tracing::debug!("simultaneous connect: waiting for the peer's connection");
                tokio::time::sleep(timeout).await;
                self.fail_slot(&peer, id, "simultaneous connect never completed");
            }
            Ok(Err(H::Declined { .. })) => {
                tracing::debug!(
                    "peer has a connection with us already; this attempt is not needed"
                );
                self.fail_slot(&peer, id, "declined");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "connection attempt to {peer} failed");
                self.fail_slot(&peer, id, &e.to_string());
            }
            Err(_) => {
                tracing::warn!("connection attempt to {peer} timed out");
                self.fail_slot(&peer, id, "timeout");
            }
        }
    }

    /// Removes a pending slot owned by attempt `id`. Monitors and links
    /// that were set towards the node fire with `noconnection`, as on BEAM.
    fn fail_slot(&self, peer: &str, id: u64, why: &str) {
        let removed = {
            let mut st = self.inner.state();
            let ours = matches!(st.conns.get(peer), Some(c) if c.id == id && matches!(c.phase, ConnPhase::Pending));
            if ours {
                if st.failures.len() >= MAX_FAILURES_KEPT {
                    st.failures.clear();
                }
                st.failures.insert(peer.to_owned(), why.to_owned());
                st.conns.remove(peer)
            } else {
                None
            }
        };
        if let Some(c) = removed {
            c.ready.send_replace(Some(false));
            tracing::debug!(why, "dropped pending connection slot");
            crate::process::node_down(self, peer);
        }
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let me = self.clone();
                    let span = tracing::info_span!("accept", node = %self.inner.name, %addr);
                    tokio::spawn(async move { me.incoming(stream).await }.instrument(span));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn incoming(self, stream: TcpStream) {
        let timeout = self.inner.cfg.handshake_timeout;
        let inner = &self.inner;
        let acc = match tokio::time::timeout(
            timeout,
            handshake::accept_name(
                stream,
                &inner.name,
                inner.creation,
                inner.flags,
                &inner.cookie,
            ),
        )
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return tracing::warn!(error = %e, "refused incoming connection"),
            Err(_) => return tracing::warn!("incoming handshake timed out"),
        };
        let peer = acc.peer_name.clone();
        if split_name(&peer).is_none() || peer == inner.name {
            return tracing::warn!(%peer, "refused incoming connection: bad peer name");
        }
        // Simultaneous connect, as net_kernel: the greater name keeps its
        // own attempt. Already connected: ask the peer (`alive`).
        let (status, mut id) = {
            let mut st = inner.state();
            let next = st.next_conn_id + 1;
            match st.conns.get_mut(&peer) {
                None => {
                    let (id, _, conn) = st.new_conn(&inner.cancel);
                    st.conns.insert(peer.clone(), conn);
                    (AcceptStatus::Ok, id)
                }
                Some(c) if matches!(c.phase, ConnPhase::Pending) => {
                    if inner.name.as_str() > peer.as_str() {
                        (AcceptStatus::Nok, 0)
                    } else {
                        c.id = next;
                        c.attempt.cancel();
                        st.next_conn_id = next;
                        (AcceptStatus::OkSimultaneous, next)
                    }
                }
                Some(_) => (AcceptStatus::Alive, 0),
            }
        };
        let res = tokio::time::timeout(timeout, acc.finish(status)).await;
        if status == AcceptStatus::Alive && matches!(res, Ok(Ok(_))) {
            // The peer says our connection is stale (it restarted): replace it.
            id = self.take_over(&peer);
        }
        match res {
            Ok(Ok((stream, p))) if status != AcceptStatus::Nok => {
                self.established(id, stream, p).await
            }
            Ok(Ok(_)) => {}
            Ok(Err(handshake::HandshakeError::Nok { .. })) => {
                tracing::debug!(%peer, "simultaneous connect: kept our own attempt")
            }
            Ok(Err(handshake::HandshakeError::Declined { .. })) => {
                tracing::debug!(%peer, "peer kept its existing connection")
            }
            Ok(Err(handshake::HandshakeError::CookieMismatch { .. })) => {
                tracing::warn!(%peer, "refused connection from {peer}: wrong cookie");
                self.fail_slot(&peer, id, "wrong cookie");
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "incoming handshake failed");
                self.fail_slot(&peer, id, "handshake failed");
            }
            Err(_) => {
                tracing::warn!(%peer, "incoming handshake timed out");
                self.fail_slot(&peer, id, "timeout");
            }
        }
    }

    /// Makes a fresh slot for `peer`, replacing what is there (a stale live
    /// connection gets its nodedown now, before the new one comes up).
    fn take_over(&self, peer: &str) -> u64 {
        let mut replaced = false;
        let id = {
            let mut st = self.inner.state();
            let (id, _, mut fresh) = st.new_conn(&self.inner.cancel);
            if let Some(old) = st.conns.remove(peer) {
                replaced = matches!(old.phase, ConnPhase::Up { .. });
                old.kill.cancel();
                old.attempt.cancel();
                // Whoever waits in `connect` keeps waiting on the new slot.
                fresh.ready = old.ready;
                fresh.ready.send_replace(None);
            }
            st.conns.insert(peer.to_owned(), fresh);
            id
        };
        if replaced {
            tracing::info!(%peer, "peer reconnected while we thought it connected: old connection dropped");
            crate::process::node_down(self, peer);
            self.emit(NodeEvent::Down {
                node: peer.to_owned(),
                reason: "replaced by a new connection".into(),
            });
        }
        id
    }

    /// A handshake completed: claim the slot and run the connection.
    async fn established(&self, id: u64, stream: TcpStream, peer: handshake::Peer) {
        let hidden = peer.flags & flags::PUBLISHED == 0;
        let claimed = {
            let mut st = self.inner.state();
            let claimed = match st.conns.get_mut(&peer.name) {
                Some(c) if c.id == id => {
                    c.phase = ConnPhase::Up { hidden };
                    // send_replace, not send: `send` stores nothing while no
                    // one is subscribed, and a `connect` that subscribes later
                    // would then wait for a connection that is already up.
                    c.ready.send_replace(Some(true));
                    // Under the table lock: whoever sees the node in nodes()
                    // subscribed before this event, or never gets it.
                    self.emit(NodeEvent::Up {
                        node: peer.name.clone(),
                        hidden,
                    });
                    c.rx.take().map(|rx| (rx, c.kill.clone()))
                }
                _ => None,
            };
            if claimed.is_some() {
                st.failures.remove(&peer.name);
            }
            claimed
        };
        let Some((rx, kill)) = claimed else {
            tracing::debug!(peer = %peer.name, "connection superseded by another attempt");
            return;
        };
        tracing::info!(peer = %peer.name, hidden, "connection up");
        if self.inner.cfg.mesh && !hidden {
            crate::erpc::spawn_mesh(self, &peer.name);
        }
        let reason = connection::run(self, &peer, stream, rx, kill).await;
        self.connection_down(&peer.name, id, &reason);
    }

    /// Cleanup after a connection ended: table, monitors, links, event.
    fn connection_down(&self, peer: &str, id: u64, reason: &str) {
        let ours = {
            let mut st = self.inner.state();
            let ours = matches!(st.conns.get(peer), Some(c) if c.id == id);
            if ours {
                st.conns.remove(peer);
                self.emit(NodeEvent::Down {
                    node: peer.to_owned(),
                    reason: reason.to_owned(),
                });
            }
            ours
        };
        tracing::info!(%peer, reason, "connection down");
        if ours {
            crate::process::node_down(self, peer);
        } // else superseded: whoever replaced it has cleaned up
    }

    /// Shuts the node down: closes every connection, unregisters from EPMD,
    /// ends every mailbox (`recv` returns `None`) and event stream.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let kills: Vec<CancellationToken> = {
            let st = self.inner.state();
            st.conns.values().map(|c| c.kill.clone()).collect()
        };
        for k in kills {
            k.cancel();
        }
        // Give connection tasks a moment to run their cleanup.
        for _ in 0..50 {
            if self.inner.state().conns.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Mailboxes and event streams end (recv returns None).
        {
            let mut st = self.inner.state();
            st.procs.clear();
            st.names.clear();
            st.aliases.clear();
            st.conns.clear();
        }
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        tracing::info!(node = %self.inner.name, "node stopped");
    }

    /// Is the node shut down?
    pub fn is_shutdown(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

/// Stream of [`NodeEvent`]s (see [`Node::events`]).
pub type NodeEvents = crate::events::Events<NodeEvent>;
