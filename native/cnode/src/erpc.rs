//! erpc, both ways.
//!
//! Server: `SPAWN_REQUEST`s for `{erpc, execute_call, 4}` (`:erpc.call`,
//! `:rpc.call`) and `{erpc, execute_cast, 3}` run a handler registered for
//! `{Module, Function, Arity}`, and the spawned "process" exits with erpc's
//! result shapes (`{Res, return, V}`, `{Res, throw, T}`, `{Res, exit, R}`,
//! `{Res, error, E, Stack}`). Nothing but registered handlers ever runs: an
//! unknown MFA fails as `undef`, as on a BEAM node. The node registers one
//! handler itself, `erlang:nodes/0`, so Rust nodes can mesh through each other.
//!
//! Client: `Node::erpc_call` spawns `erpc:execute_call/4` on a BEAM node and
//! turns the outcome into a `Result`.

use crate::control::{Control, ProcRef, SpawnRequest};
use crate::node::Node;
use crate::process;
use crate::term::*;
use eetf::{Pid, Reference, Term};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// What a handler returns: how the "call" ended, in Erlang's classes.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcResult {
    /// Normal return.
    Ok(Term),
    /// `throw(T)`.
    Throw(Term),
    /// `error(E)`.
    Error(Term),
    /// `exit(R)`.
    Exit(Term),
}

pub(crate) type RpcHandler = Arc<dyn Fn(Vec<Term>) -> BoxFuture<'static, RpcResult> + Send + Sync>;

/// erpc client errors, one per erpc failure class.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ErpcError {
    #[error("remote threw {0}")]
    Throw(Term),
    #[error("remote error {reason}")]
    Error { reason: Term, stack: Term },
    #[error("remote exited {0}")]
    Exit(Term),
    #[error("timeout")]
    Timeout,
    #[error("noconnection")]
    NoConnection,
    #[error("spawn failed: {0}")]
    Spawn(Term),
}

impl Node {
    /// Serves `Module:Function/Arity` to erpc/rpc callers with an async handler.
    pub fn register_rpc<F, Fut>(&self, module: &str, function: &str, arity: usize, handler: F)
    where
        F: Fn(Vec<Term>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RpcResult> + Send + 'static,
    {
        let h: RpcHandler = Arc::new(move |args| handler(args).boxed());
        self.inner
            .rpc
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((module.into(), function.into(), arity), h);
    }

    /// Like [`Node::register_rpc`] with a plain (non-async, non-blocking) closure.
    pub fn register_rpc_sync<F>(&self, module: &str, function: &str, arity: usize, handler: F)
    where
        F: Fn(Vec<Term>) -> RpcResult + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        self.register_rpc(module, function, arity, move |args| {
            let h = handler.clone();
            async move { h(args) }
        });
    }

    /// Removes a handler.
    pub fn unregister_rpc(&self, module: &str, function: &str, arity: usize) {
        self.inner
            .rpc
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(module.to_owned(), function.to_owned(), arity));
    }

    fn rpc_handler(&self, m: &str, f: &str, a: usize) -> Option<RpcHandler> {
        self.inner
            .rpc
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(m.to_owned(), f.to_owned(), a))
            .cloned()
    }

    /// Calls `module:function(args)` on `node` through erpc, waiting at most `timeout`.
    pub async fn erpc_call(
        &self,
        node: &str,
        module: &str,
        function: &str,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, ErpcError> {
        if node == self.name() {
            let Some(h) = self.rpc_handler(module, function, args.len()) else {
                return Err(ErpcError::Error {
                    reason: atom("undef"),
                    stack: nil(),
                });
            };
            return match tokio::time::timeout(timeout, h(args)).await {
                Ok(RpcResult::Ok(v)) => Ok(v),
                Ok(RpcResult::Throw(t)) => Err(ErpcError::Throw(t)),
                Ok(RpcResult::Error(e)) => Err(ErpcError::Error {
                    reason: e,
                    stack: nil(),
                }),
                Ok(RpcResult::Exit(r)) => Err(ErpcError::Exit(r)),
                Err(_) => Err(ErpcError::Timeout),
            };
        }
        let deadline = tokio::time::Instant::now() + timeout;
        if tokio::time::timeout_at(deadline, self.connect(node))
            .await
            .map(|r| r.is_err())
            .unwrap_or(true)
        {
            return Err(ErpcError::NoConnection);
        }
        let mut mbox = self.mailbox();
        let req_id = self.make_ref();
        let res = self.make_ref();
        process::record_watching(
            self,
            mbox.pid(),
            &req_id,
            ProcRef::Name("erpc".into()),
            node,
        );
        let payload = list(vec![
            Term::Reference(Box::new(res.clone())),
            atom(module),
            atom(function),
            list(args),
        ]);
        let ctrl = Control::SpawnRequest(SpawnRequest {
            req_id: req_id.clone(),
            from: mbox.pid().clone(),
            module: "erpc".into(),
            function: "execute_call".into(),
            arity: 4,
            options: list(vec![atom("monitor")]),
        });
        self.send_ctrl(node, ctrl, Some(&payload));
        let mut spawned: Option<Pid> = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let rid = req_id.clone();
            let msg = mbox
                .recv_match(
                    |m| {
                        let is_reply = tagged(m, "$cnode_spawn_reply")
                            .and_then(|e| as_ref(e.get(1)?))
                            .map(|r| *r == rid)
                            .unwrap_or(false);
                        let is_down = tagged(m, "DOWN")
                            .and_then(|e| as_ref(e.get(1)?))
                            .map(|r| *r == rid)
                            .unwrap_or(false);
                        is_reply || is_down
                    },
                    Some(left),
                )
                .await;
            let Some(msg) = msg else {
                if let Some(p) = &spawned {
                    mbox.demonitor(&req_id);
                    mbox.exit(p, atom("kill"));
                }
                return Err(ErpcError::Timeout);
            };
            let e = as_tuple(&msg).unwrap_or(&[]);
            if is_atom(&e[0], "$cnode_spawn_reply") {
                match e.get(3) {
                    Some(Term::Pid(p)) => {
                        // The monitor (ref = req_id) is on the spawned pid.
                        process::retarget_watching(
                            self,
                            mbox.pid(),
                            &req_id,
                            ProcRef::Pid(p.clone()),
                        );
                        spawned = Some(p.clone());
                    }
                    Some(other) => return Err(ErpcError::Spawn(other.clone())),
                    None => return Err(ErpcError::Spawn(atom("badreply"))),
                }
                continue;
            }
            // DOWN
            let reason = e.get(4).cloned().unwrap_or_else(|| atom("normal"));
            return decode_exit(&res, reason);
        }
    }
}

/// Interprets the exit reason of an erpc worker.
fn decode_exit(res: &Reference, reason: Term) -> Result<Term, ErpcError> {
    if is_atom(&reason, "noconnection") {
        return Err(ErpcError::NoConnection);
    }
    if let Some(e) = as_tuple(&reason) {
        let ours = e
            .first()
            .and_then(as_ref)
            .map(|r| r == res)
            .unwrap_or(false);
        if ours {
            let class = e.get(1).and_then(as_atom).unwrap_or("");
            let val = e.get(2).cloned().unwrap_or_else(|| atom("undefined"));
            return match (class, e.len()) {
                ("return", 3) => Ok(val),
                ("throw", 3) => Err(ErpcError::Throw(val)),
                ("exit", 3) => Err(ErpcError::Exit(val)),
                ("error", 4) => Err(ErpcError::Error {
                    reason: val,
                    stack: e[3].clone(),
                }),
                ("error", 3) => Err(ErpcError::Error {
                    reason: val,
                    stack: nil(),
                }),
                _ => Err(ErpcError::Exit(reason.clone())),
            };
        }
    }
    Err(ErpcError::Exit(reason))
}

/// Most erpc workers (spawned handler runs) alive at once per node.
const MAX_WORKERS: usize = 10_000;

struct WorkerGuard(Node);

impl WorkerGuard {
    fn new(node: &Node) -> Self {
        node.inner
            .rpc_workers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WorkerGuard(node.clone())
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0
            .inner
            .rpc_workers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Parsed spawn options we act on.
fn spawn_opts(options: &Term) -> (bool, bool) {
    let mut link = false;
    let mut monitor = false;
    for o in as_list(options).unwrap_or_default() {
        if is_atom(&o, "link") {
            link = true;
        }
        if is_atom(&o, "monitor") || tagged(&o, "monitor").is_some() {
            monitor = true;
        }
    }
    (link, monitor)
}

/// A peer asks us to spawn `module:function/arity`.
pub(crate) fn spawn_request(node: &Node, peer: &str, req: SpawnRequest, payload: Option<Term>) {
    let SpawnRequest {
        req_id,
        from,
        module,
        function,
        arity,
        options,
    } = req;
    let args = payload.as_ref().and_then(as_list).unwrap_or_default();
    let (link, monitor) = spawn_opts(&options);
    // Bounded concurrency: a peer cannot make us run unlimited handlers.
    let running = node
        .inner
        .rpc_workers
        .load(std::sync::atomic::Ordering::Relaxed);
    if running >= MAX_WORKERS {
        tracing::warn!(
            peer,
            running,
            "spawn request refused: too many erpc workers"
        );
        node.send_ctrl(
            peer,
            Control::SpawnReply {
                req_id,
                to: from,
                flags: 0,
                result: atom("system_limit"),
            },
            None,
        );
        return;
    }
    let mut mbox = node.mailbox();
    let pid = mbox.pid().clone();
    {
        let mut st = node.inner.state();
        if let Some(p) = st.procs.get_mut(&process::PidKey::id_key(&pid)) {
            if monitor {
                p.watched_by
                    .insert(req_id.clone(), (from.clone(), ProcRef::Pid(pid.clone())));
            }
            if link {
                p.links.insert(from.clone());
            }
        }
    }
    let flags = i64::from(link) | (i64::from(monitor) << 1);
    node.send_ctrl(
        peer,
        Control::SpawnReply {
            req_id,
            to: from,
            flags,
            result: Term::Pid(pid),
        },
        None,
    );

    // What to run; `res` (erpc's result tag) for execute_call only.
    let mfa = |m: &Term, f: &Term, a: &Term| {
        Some((as_atom(m)?.to_owned(), as_atom(f)?.to_owned(), as_list(a)?))
    };
    let parsed = match (module.as_str(), function.as_str(), arity, args.as_slice()) {
        ("erpc", "execute_call", 4, [res, m, f, a]) => mfa(m, f, a).map(|x| (Some(res.clone()), x)),
        ("erpc", "execute_cast", 3, [m, f, a]) => mfa(m, f, a).map(|x| (None, x)),
        _ => None,
    };
    let (res, (m, f, a)) = parsed.unwrap_or((None, (module, function, args)));
    let n = node.clone();
    let guard = WorkerGuard::new(node);
    tokio::spawn(async move {
        let _guard = guard;
        let undef_stack = list(vec![tuple(vec![
            atom(&m),
            atom(&f),
            list(a.clone()),
            nil(),
        ])]);
        let outcome = match n.rpc_handler(&m, &f, a.len()) {
            None => {
                tracing::debug!(module = %m, function = %f, arity = a.len(), "erpc: no handler (undef)");
                RpcResult::Error(atom("undef"))
            }
            Some(h) => {
                // An exit signal (e.g. erpc's timeout kill) aborts the handler.
                let killed = mbox.recv_match(|t| tagged(t, "EXIT").is_some(), None);
                let r = tokio::select! {
                    r = std::panic::AssertUnwindSafe(h(a.clone())).catch_unwind() => Ok(match r {
                        Ok(r) => r,
                        Err(_) => RpcResult::Error(atom("handler_panicked")),
                    }),
                    k = killed => Err(k.and_then(|t| as_tuple(&t).and_then(|e| e.get(2).cloned())).unwrap_or_else(|| atom("killed"))),
                };
                match r {
                    Ok(r) => r,
                    Err(reason) => {
                        mbox.close(reason);
                        return;
                    }
                }
            }
        };
        // erpc's shapes for execute_call; a plain process's exit otherwise.
        let reason = match (res, outcome) {
            (Some(res), RpcResult::Ok(v)) => tuple(vec![res, atom("return"), v]),
            (Some(res), RpcResult::Throw(t)) => tuple(vec![res, atom("throw"), t]),
            (Some(res), RpcResult::Exit(r)) => tuple(vec![res, atom("exit"), r]),
            (Some(res), RpcResult::Error(e)) => {
                let stack = if is_atom(&e, "undef") {
                    undef_stack
                } else {
                    list(vec![tuple(vec![
                        atom(&m),
                        atom(&f),
                        int(a.len() as i64),
                        nil(),
                    ])])
                };
                tuple(vec![res, atom("error"), e, stack])
            }
            (_, RpcResult::Ok(_)) => atom("normal"),
            (_, RpcResult::Throw(t)) => tuple(vec![tuple(vec![atom("nocatch"), t]), undef_stack]),
            (_, RpcResult::Exit(r)) => r,
            (_, RpcResult::Error(e)) => tuple(vec![e, undef_stack]),
        };
        mbox.close(reason);
    });
}

/// Mesh: once a published peer is up, connect to the nodes it is connected to.
pub(crate) fn spawn_mesh(node: &Node, peer: &str) {
    let n = node.clone();
    let peer = peer.to_owned();
    tokio::spawn(async move {
        match n
            .erpc_call(&peer, "erlang", "nodes", vec![], Duration::from_secs(10))
            .await
        {
            Ok(list_term) => {
                for t in as_list(&list_term).unwrap_or_default() {
                    if let Some(other) = as_atom(&t) {
                        if other != n.name()
                            && n.nodes().iter().all(|x| x != other)
                            && !n.is_shutdown()
                        {
                            let n2 = n.clone();
                            let other = other.to_owned();
                            tokio::spawn(async move {
                                let _ = n2.connect(&other).await;
                            });
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "mesh: could not list the peer's nodes"),
        }
    });
}
