//! A `:pg` scope process speaking OTP 23-25's pg protocol.
//!
//! Owns: one registered scope mailbox per scope and its state (local
//! members, members per remote scope pid). Protocol, as pg.erl states it:
//! - on start and on every nodeup, `{discover, Self}` to `{Scope, Node}`;
//! - on `{discover, Peer}`: cast `{sync, Self, [{Group, [Pid]}]}` to Peer and,
//!   if Peer is new, monitor it and send `{discover, Self}` back;
//! - `{'$gen_cast', {sync, Peer, Groups}}` replaces Peer's membership;
//! - `{join, Peer, Group, PidOrPids}` / `{leave, Peer, PidOrPids, Groups}`
//!   update it (ignored from unknown peers, as pg does);
//! - a DOWN of a remote scope drops all its members; a DOWN of a local
//!   member makes it leave everywhere.
//!
//! A BEAM scope crashes on any message it does not expect: we send it only
//! `discover`, `join`, `leave` and the `sync` cast. Stopping our scope sends
//! MONITOR_P_EXIT to the BEAM scopes that monitor it (mailbox close).

use crate::mailbox::Mailbox;
use crate::node::{Node, NodeEvent};
use crate::term::*;
use eetf::{Pid, Reference, Term};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// pg layer errors.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PgError {
    #[error("only local pids can join or leave")]
    NotLocal,
    #[error("scope name already registered")]
    NameTaken,
    #[error("scope stopped")]
    Stopped,
}

/// Membership change seen by this scope (local or remote).
#[derive(Debug, Clone, PartialEq)]
pub enum PgEvent {
    Join { group: Term, pids: Vec<Pid> },
    Leave { group: Term, pids: Vec<Pid> },
}

/// Bounds on what one remote scope can make us keep (peer input).
const MAX_REMOTE_MEMBERS: usize = 1_000_000;
const MAX_REMOTE_GROUPS: usize = 1_000_000;

#[derive(Default)]
struct Members {
    /// Local joins (a pid may join a group more than once, as in pg).
    local: HashMap<Term, Vec<Pid>>,
    /// Remote scope pid -> (monitor ref, group -> pids).
    remote: HashMap<Pid, (Reference, HashMap<Term, Vec<Pid>>)>,
    /// Local member pid -> monitor ref (to leave when it dies).
    local_mon: HashMap<Pid, Reference>,
    subscribers: crate::events::Subscribers<PgEvent>,
}

impl Members {
    fn emit(&mut self, ev: PgEvent) {
        self.subscribers.emit(ev);
    }
}

enum Cmd {
    Join(Term, Vec<Pid>, oneshot::Sender<()>),
    Leave(Term, Vec<Pid>, oneshot::Sender<bool>),
    Stop(oneshot::Sender<()>),
}

/// Handle to a running pg scope. Cheap to clone.
#[derive(Clone)]
pub struct PgScope {
    node: Node,
    name: String,
    pid: Pid,
    members: Arc<Mutex<Members>>,
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for PgScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgScope")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Event stream of a scope (see [`PgScope::events`]).
pub type PgEvents = crate::events::Events<PgEvent>;

fn pid_list(t: &Term) -> Vec<Pid> {
    match t {
        Term::Pid(p) => vec![p.clone()],
        other => as_list(other)
            .unwrap_or_default()
            .iter()
            .filter_map(|x| as_pid(x).cloned())
            .collect(),
    }
}

fn pids_term(pids: &[Pid]) -> Term {
    list(pids.iter().cloned().map(Term::Pid).collect())
}

impl Node {
    /// Starts a `:pg` scope named `scope` on this node (registered under
    /// that name) and discovers the scopes of the same name on peers.
    pub fn pg_scope(&self, scope: &str) -> Result<PgScope, PgError> {
        let mbox = self.mailbox();
        mbox.register(scope).map_err(|_| PgError::NameTaken)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let h = PgScope {
            node: self.clone(),
            name: scope.to_owned(),
            pid: mbox.pid().clone(),
            members: Arc::default(),
            cmd: tx,
        };
        for n in self.nodes() {
            mbox.send(
                (scope, n.as_str()),
                tuple(vec![atom("discover"), Term::Pid(h.pid.clone())]),
            );
        }
        let events = self.events();
        let span = tracing::info_span!("pg", node = %self.name(), scope);
        tokio::spawn(run(h.clone(), mbox, rx, events).instrument(span));
        Ok(h)
    }
}

impl PgScope {
    /// The scope's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scope process's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// Joins local `pids` to `group` (like `pg:join/3`).
    pub async fn join(&self, group: Term, pids: &[Pid]) -> Result<(), PgError> {
        if pids.iter().any(|p| !self.node.is_local(p)) {
            return Err(PgError::NotLocal);
        }
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Join(group, pids.to_vec(), tx))
            .map_err(|_| PgError::Stopped)?;
        rx.await.map_err(|_| PgError::Stopped)
    }

    /// Makes local `pids` leave `group`; false if none was a member.
    pub async fn leave(&self, group: Term, pids: &[Pid]) -> Result<bool, PgError> {
        if pids.iter().any(|p| !self.node.is_local(p)) {
            return Err(PgError::NotLocal);
        }
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Leave(group, pids.to_vec(), tx))
            .map_err(|_| PgError::Stopped)?;
        rx.await.map_err(|_| PgError::Stopped)
    }

    /// All members of `group`, local and remote.
    pub fn get_members(&self, group: &Term) -> Vec<Pid> {
        let m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Pid> = m.local.get(group).cloned().unwrap_or_default();
        for (_, groups) in m.remote.values() {
            if let Some(p) = groups.get(group) {
                v.extend(p.iter().cloned());
            }
        }
        v
    }

    /// Local members of `group`.
    pub fn get_local_members(&self, group: &Term) -> Vec<Pid> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .local
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Members of `group` grouped by node.
    pub fn get_members_by_node(&self, group: &Term) -> BTreeMap<String, Vec<Pid>> {
        let mut out: BTreeMap<String, Vec<Pid>> = BTreeMap::new();
        for p in self.get_members(group) {
            out.entry(p.node.name.clone()).or_default().push(p);
        }
        out
    }

    /// Groups with at least one member.
    pub fn which_groups(&self) -> Vec<Term> {
        let m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Term> = m.local.keys().cloned().collect();
        for (_, groups) in m.remote.values() {
            for g in groups.keys() {
                if !v.contains(g) {
                    v.push(g.clone());
                }
            }
        }
        v
    }

    /// Stream of join/leave events from now on.
    pub fn events(&self) -> PgEvents {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subscribers
            .subscribe()
    }

    /// Stops the scope: BEAM scopes monitoring it get MONITOR_P_EXIT and
    /// drop our members.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    h: PgScope,
    mut mbox: Mailbox,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut events: crate::node::NodeEvents,
) {
    let cancel = h.node.inner.cancel.clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = cmds.recv() => match c {
                Some(Cmd::Join(g, pids, done)) => { join_local(&h, &mbox, g, pids); let _ = done.send(()); }
                Some(Cmd::Leave(g, pids, done)) => { let r = leave_local(&h, &mbox, &g, &pids); let _ = done.send(r); }
                Some(Cmd::Stop(done)) => { mbox.close(atom("shutdown")); let _ = done.send(()); clear(&h); return; }
                None => break,
            },
            m = mbox.recv() => match m {
                Some(m) => handle(&h, &mbox, m),
                None => break,
            },
            ev = events.recv() => match ev {
                Some(NodeEvent::Up { node, hidden: false }) => {
                    mbox.send((h.name.as_str(), node.as_str()), tuple(vec![atom("discover"), Term::Pid(h.pid.clone())]));
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    mbox.close(atom("shutdown"));
    clear(&h);
}

fn clear(h: &PgScope) {
    let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
    m.subscribers.clear();
}

fn remote_scopes(m: &Members) -> Vec<Pid> {
    m.remote.keys().cloned().collect()
}

fn join_local(h: &PgScope, mbox: &Mailbox, group: Term, pids: Vec<Pid>) {
    let peers = {
        let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
        for p in &pids {
            if !m.local_mon.contains_key(p) {
                let r = mbox.monitor(p);
                m.local_mon.insert(p.clone(), r);
            }
        }
        m.local
            .entry(group.clone())
            .or_default()
            .extend(pids.iter().cloned());
        m.emit(PgEvent::Join {
            group: group.clone(),
            pids: pids.clone(),
        });
        remote_scopes(&m)
    };
    let msg = tuple(vec![
        atom("join"),
        Term::Pid(h.pid.clone()),
        group,
        pids_term(&pids),
    ]);
    for peer in peers {
        mbox.send(&peer, msg.clone());
    }
}

fn leave_local(h: &PgScope, mbox: &Mailbox, group: &Term, pids: &[Pid]) -> bool {
    let (left, peers) = {
        let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
        let mut left = Vec::new();
        if let Some(members) = m.local.get_mut(group) {
            for p in pids {
                if let Some(i) = members.iter().position(|x| x == p) {
                    members.remove(i);
                    left.push(p.clone());
                }
            }
            if members.is_empty() {
                m.local.remove(group);
            }
        }
        // Stop watching pids that are no longer in any group.
        for p in &left {
            if !m.local.values().any(|v| v.contains(p)) {
                if let Some(r) = m.local_mon.remove(p) {
                    mbox.demonitor(&r);
                }
            }
        }
        if !left.is_empty() {
            m.emit(PgEvent::Leave {
                group: group.clone(),
                pids: left.clone(),
            });
        }
        (left, remote_scopes(&m))
    };
    if left.is_empty() {
        return false;
    }
    let msg = tuple(vec![
        atom("leave"),
        Term::Pid(h.pid.clone()),
        pids_term(&left),
        list(vec![group.clone()]),
    ]);
    for peer in peers {
        mbox.send(&peer, msg.clone());
    }
    true
}

fn local_groups_term(m: &Members) -> Term {
    list(
        m.local
            .iter()
            .map(|(g, pids)| tuple(vec![g.clone(), pids_term(pids)]))
            .collect(),
    )
}

fn handle(h: &PgScope, mbox: &Mailbox, msg: Term) {
    let e = as_tuple(&msg).unwrap_or(&[]);
    let tag = e.first().and_then(as_atom).unwrap_or("");
    match (tag, e.len()) {
        ("discover", 2) => {
            let Some(peer) = as_pid(&e[1]).cloned() else {
                return;
            };
            if h.node.is_local(&peer) {
                return;
            }
            let (groups, is_new) = {
                let m = h.members.lock().unwrap_or_else(|p| p.into_inner());
                (local_groups_term(&m), !m.remote.contains_key(&peer))
            };
            mbox.send(
                &peer,
                tuple(vec![
                    atom("$gen_cast"),
                    tuple(vec![atom("sync"), Term::Pid(h.pid.clone()), groups]),
                ]),
            );
            if is_new {
                let r = mbox.monitor(&peer);
                h.members
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remote
                    .insert(peer.clone(), (r, HashMap::new()));
                mbox.send(
                    &peer,
                    tuple(vec![atom("discover"), Term::Pid(h.pid.clone())]),
                );
            }
        }
        ("$gen_cast", 2) => {
            let Some(s) = tagged(&e[1], "sync").filter(|s| s.len() == 3) else {
                return tracing::debug!(%msg, "pg: cast ignored");
            };
            let Some(peer) = as_pid(&s[1]).cloned() else {
                return;
            };
            if h.node.is_local(&peer) {
                return;
            }
            let mut new_groups: HashMap<Term, Vec<Pid>> = HashMap::new();
            for gp in as_list(&s[2]).unwrap_or_default() {
                if let Some([g, pids]) = as_tuple(&gp).and_then(|x| <&[Term; 2]>::try_from(x).ok())
                {
                    new_groups
                        .entry(g.clone())
                        .or_default()
                        .extend(pid_list(pids));
                }
            }
            let need_monitor = !h
                .members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remote
                .contains_key(&peer);
            let r = if need_monitor {
                Some(mbox.monitor(&peer))
            } else {
                None
            };
            let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
            let old = match m.remote.remove(&peer) {
                Some((r0, old)) => {
                    m.remote.insert(peer.clone(), (r0, new_groups.clone()));
                    old
                }
                None => {
                    let r0 = r.unwrap_or_else(|| h.node.make_ref());
                    m.remote.insert(peer.clone(), (r0, new_groups.clone()));
                    HashMap::new()
                }
            };
            diff_events(&mut m, &old, &new_groups);
        }
        ("join", 4) => {
            let Some(peer) = as_pid(&e[1]) else { return };
            let pids = pid_list(&e[3]);
            let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, groups)) = m.remote.get_mut(peer) {
                let n_groups = groups.len();
                let members = groups.entry(e[2].clone()).or_default();
                if members.len() + pids.len() > MAX_REMOTE_MEMBERS || n_groups > MAX_REMOTE_GROUPS {
                    return tracing::warn!(%peer, "pg: remote membership limit reached; join ignored");
                }
                members.extend(pids.iter().cloned());
                m.emit(PgEvent::Join {
                    group: e[2].clone(),
                    pids,
                });
            }
        }
        ("leave", 4) => {
            let Some(peer) = as_pid(&e[1]) else { return };
            let pids = pid_list(&e[2]);
            let groups = as_list(&e[3]).unwrap_or_default();
            let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
            let mut evs = Vec::new();
            if let Some((_, rg)) = m.remote.get_mut(peer) {
                for g in groups {
                    if let Some(members) = rg.get_mut(&g) {
                        let mut left = Vec::new();
                        for p in &pids {
                            if let Some(i) = members.iter().position(|x| x == p) {
                                members.remove(i);
                                left.push(p.clone());
                            }
                        }
                        if members.is_empty() {
                            rg.remove(&g);
                        }
                        if !left.is_empty() {
                            evs.push(PgEvent::Leave {
                                group: g,
                                pids: left,
                            });
                        }
                    }
                }
            }
            for ev in evs {
                m.emit(ev);
            }
        }
        ("DOWN", 5) => {
            let Some(pid) = as_pid(&e[3]).cloned() else {
                return;
            };
            let remote = h
                .members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remote
                .remove(&pid);
            if let Some((_, groups)) = remote {
                let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
                diff_events(&mut m, &groups, &HashMap::new());
                return;
            }
            // A local member died: it leaves every group.
            let groups: Vec<Term> = {
                let mut m = h.members.lock().unwrap_or_else(|p| p.into_inner());
                m.local_mon.remove(&pid);
                m.local
                    .iter()
                    .filter(|(_, v)| v.contains(&pid))
                    .map(|(g, _)| g.clone())
                    .collect()
            };
            for g in groups {
                // Leave all of its joins to that group.
                while leave_local(h, mbox, &g, std::slice::from_ref(&pid)) {}
            }
        }
        _ => tracing::debug!(%msg, "pg: message ignored"),
    }
}

fn diff_events(m: &mut Members, old: &HashMap<Term, Vec<Pid>>, new: &HashMap<Term, Vec<Pid>>) {
    let mut evs = Vec::new();
    for (g, pids) in new {
        let before = old.get(g).cloned().unwrap_or_default();
        let joined: Vec<Pid> = pids
            .iter()
            .filter(|p| !before.contains(p))
            .cloned()
            .collect();
        if !joined.is_empty() {
            evs.push(PgEvent::Join {
                group: g.clone(),
                pids: joined,
            });
        }
    }
    for (g, pids) in old {
        let after = new.get(g).cloned().unwrap_or_default();
        let left: Vec<Pid> = pids
            .iter()
            .filter(|p| !after.contains(p))
            .cloned()
            .collect();
        if !left.is_empty() {
            evs.push(PgEvent::Leave {
                group: g.clone(),
                pids: left,
            });
        }
    }
    for ev in evs {
        m.emit(ev);
    }
}
