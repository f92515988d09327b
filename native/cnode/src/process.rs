//! Processes: the table entry behind every mailbox, and what signals from
//! peers do to it (messages, links, monitors, exits, spawn requests).
//!
//! Owns: `Proc` (a mailbox's queue, its links and monitors in both
//! directions), local delivery, the exit of a process (DOWN / EXIT to its
//! watchers and links), and connection-loss cleanup (`noconnection`).
//! A Rust mailbox behaves as a process with `trap_exit` set: exit signals
//! arrive as `{'EXIT', From, Reason}` messages and never kill it.

use crate::control::{Control, ProcRef};
use crate::node::Node;
use crate::term::*;
use eetf::{Pid, Reference, Term};
use std::collections::{HashMap, HashSet};
use tokio::sync::mpsc;

/// A local process as the node sees it.
pub(crate) struct Proc {
    pub(crate) pid: Pid,
    pub(crate) tx: mpsc::UnboundedSender<Term>,
    pub(crate) name: Option<String>,
    pub(crate) links: HashSet<Pid>,
    /// Monitors on us: ref -> (watcher, how it named us).
    pub(crate) watched_by: HashMap<Reference, (Pid, ProcRef)>,
    /// Our monitors: ref -> (target, target node).
    pub(crate) watching: HashMap<Reference, (ProcRef, String)>,
    /// Signals from the network count against this bound.
    remote_signals: usize,
}

impl Proc {
    pub(crate) fn new(pid: Pid, tx: mpsc::UnboundedSender<Term>) -> Self {
        Proc {
            pid,
            tx,
            name: None,
            links: HashSet::new(),
            watched_by: HashMap::new(),
            watching: HashMap::new(),
            remote_signals: 0,
        }
    }
}

fn down_msg(reference: &Reference, from: Term, reason: Term) -> Term {
    tuple(vec![
        atom("DOWN"),
        Term::Reference(Box::new(reference.clone())),
        atom("process"),
        from,
        reason,
    ])
}

fn exit_msg(from: &Pid, reason: Term) -> Term {
    tuple(vec![atom("EXIT"), Term::Pid(from.clone()), reason])
}

/// The term a DOWN message names the monitored process by.
fn monitored_term(target: &ProcRef, node: &str) -> Term {
    match target {
        ProcRef::Pid(p) => Term::Pid(p.clone()),
        ProcRef::Name(n) => tuple(vec![atom(n), atom(node)]),
    }
}

/// Delivers a message to a local process by pid id. False if no such process.
pub(crate) fn deliver(node: &Node, pid: &Pid, msg: Term) -> bool {
    if !node.is_local(pid) {
        return false;
    }
    let st = node.inner.state();
    match st.procs.get(&pid.id_key()) {
        Some(p) if p.pid == *pid => p.tx.send(msg).is_ok(),
        _ => false,
    }
}

/// Delivers to a locally registered name.
pub(crate) fn deliver_named(node: &Node, name: &str, msg: Term) -> bool {
    let st = node.inner.state();
    match st.names.get(name).and_then(|id| st.procs.get(id)) {
        Some(p) => p.tx.send(msg).is_ok(),
        None => false,
    }
}

/// Delivers to the process owning a local alias. False if none does.
pub(crate) fn deliver_alias(node: &Node, alias: &Reference, msg: Term) -> bool {
    let st = node.inner.state();
    match st.aliases.get(alias).and_then(|id| st.procs.get(id)) {
        Some(p) => p.tx.send(msg).is_ok(),
        None => false,
    }
}

/// Key of a pid in the process table.
pub(crate) trait PidKey {
    fn id_key(&self) -> u32;
}
impl PidKey for Pid {
    fn id_key(&self) -> u32 {
        (self.serial << 15) | (self.id & 0x7fff)
    }
}

fn resolve(node: &Node, st: &crate::node::State, target: &ProcRef) -> Option<u32> {
    match target {
        ProcRef::Pid(p) if node.is_local(p) => {
            let k = p.id_key();
            st.procs.get(&k).filter(|x| x.pid == *p).map(|_| k)
        }
        ProcRef::Pid(_) => None,
        ProcRef::Name(n) => st.names.get(n).copied(),
    }
}

/// The pid a control message claims to come from, when it has one.
fn sender(ctrl: &Control) -> Option<&Pid> {
    match ctrl {
        Control::Link { from, .. }
        | Control::Unlink { from, .. }
        | Control::UnlinkId { from, .. }
        | Control::Exit { from, .. }
        | Control::Exit2 { from, .. }
        | Control::MonitorP { from, .. }
        | Control::DemonitorP { from, .. }
        | Control::SpawnRequest(crate::control::SpawnRequest { from, .. }) => Some(from),
        _ => None,
    }
}

/// Handles one control message from `peer`.
pub(crate) fn dispatch(node: &Node, peer: &str, ctrl: Control, payload: Option<Term>) {
    // Signals that create state here must come from a process of the peer
    // itself, or a peer could make us dial (and track) arbitrary nodes.
    if let Some(from) = sender(&ctrl) {
        if from.node.name != peer {
            tracing::warn!(peer, claimed = %from.node.name, "signal with a foreign sender pid ignored");
            return;
        }
    }
    match ctrl {
        Control::Send { to } | Control::SendSender { to, .. } => {
            if let Some(msg) = payload {
                deliver(node, &to, msg);
            }
        }
        Control::RegSend { to_name, .. } => {
            if let Some(msg) = payload {
                if !deliver_named(node, &to_name, msg) {
                    tracing::debug!(peer, name = %to_name, "message to unregistered name dropped");
                }
            }
        }
        Control::AliasSend { alias, .. } => {
            if let Some(msg) = payload {
                deliver_alias(node, &alias, msg);
            }
        }
        Control::Link { from, to } => {
            let ok = {
                let mut st = node.inner.state();
                let max = node.inner.cfg.max_links_per_process;
                match resolve(node, &st, &ProcRef::Pid(to.clone()))
                    .and_then(|k| st.procs.get_mut(&k))
                {
                    Some(p) if p.remote_signals < max => {
                        if p.links.insert(from.clone()) {
                            p.remote_signals += 1;
                        }
                        true
                    }
                    Some(_) => {
                        tracing::warn!(peer, "link refused: per-process limit reached");
                        false
                    }
                    None => false,
                }
            };
            if !ok {
                node.send_ctrl(
                    peer,
                    Control::Exit {
                        from: to,
                        to: from,
                        reason: Some(atom("noproc")),
                    },
                    None,
                );
            }
        }
        Control::Unlink { from, to } => {
            remove_link(node, &to, &from);
        }
        Control::UnlinkId { id, from, to } => {
            remove_link(node, &to, &from);
            node.send_ctrl(
                peer,
                Control::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                },
                None,
            );
        }
        Control::UnlinkIdAck { .. } => {}
        Control::Exit { from, to, reason } => {
            // A link exit for a link that no longer exists is dropped, as in erts.
            let reason = reason.or(payload).unwrap_or_else(|| atom("normal"));
            if remove_link(node, &to, &from) {
                deliver(node, &to, exit_msg(&from, reason));
            }
        }
        Control::Exit2 { from, to, reason } => {
            let reason = reason.or(payload).unwrap_or_else(|| atom("normal"));
            deliver(node, &to, exit_msg(&from, reason));
        }
        Control::MonitorP {
            from,
            to,
            reference,
        } => {
            let ok = {
                let mut st = node.inner.state();
                let max = node.inner.cfg.max_links_per_process;
                match resolve(node, &st, &to).and_then(|k| st.procs.get_mut(&k)) {
                    Some(p) if p.remote_signals < max => {
                        if p.watched_by
                            .insert(reference.clone(), (from.clone(), to.clone()))
                            .is_none()
                        {
                            p.remote_signals += 1;
                        }
                        true
                    }
                    Some(_) => {
                        tracing::warn!(peer, "monitor refused: per-process limit reached");
                        false
                    }
                    None => false,
                }
            };
            if !ok {
                node.send_ctrl(
                    peer,
                    Control::MonitorPExit {
                        from: to,
                        to: from,
                        reference,
                        reason: Some(atom("noproc")),
                    },
                    None,
                );
            }
        }
        Control::DemonitorP { to, reference, .. } => {
            let mut st = node.inner.state();
            if let Some(p) = resolve(node, &st, &to).and_then(|k| st.procs.get_mut(&k)) {
                if p.watched_by.remove(&reference).is_some() {
                    p.remote_signals = p.remote_signals.saturating_sub(1);
                }
            }
        }
        Control::MonitorPExit {
            from,
            to,
            reference,
            reason,
        } => {
            let reason = reason.or(payload).unwrap_or_else(|| atom("normal"));
            let mut st = node.inner.state();
            if let Some(p) = st.procs.get_mut(&to.id_key()).filter(|p| p.pid == to) {
                if p.watching.remove(&reference).is_some() {
                    let _ =
                        p.tx.send(down_msg(&reference, monitored_term(&from, peer), reason));
                }
            }
        }
        Control::SpawnRequest(req) => crate::erpc::spawn_request(node, peer, req, payload),
        Control::SpawnReply {
            req_id,
            to,
            flags,
            result,
        } => {
            let msg = tuple(vec![
                atom("$cnode_spawn_reply"),
                Term::Reference(Box::new(req_id)),
                int(flags),
                result,
            ]);
            deliver(node, &to, msg);
        }
        Control::GroupLeader => tracing::debug!(peer, "GROUP_LEADER ignored"),
        Control::Unknown(op) => tracing::warn!(peer, op, "unknown control message ignored"),
    }
}

/// Removes the link between local `local` and `other`; true if it existed.
fn remove_link(node: &Node, local: &Pid, other: &Pid) -> bool {
    let mut st = node.inner.state();
    let Some(p) = st
        .procs
        .get_mut(&local.id_key())
        .filter(|p| p.pid == *local)
    else {
        return false;
    };
    let existed = p.links.remove(other);
    if existed && !node.is_local(other) {
        p.remote_signals = p.remote_signals.saturating_sub(1);
    }
    existed
}

/// Registers a new process entry; returns its receiver.
pub(crate) fn spawn_proc(node: &Node) -> (Pid, mpsc::UnboundedReceiver<Term>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = node.inner.state();
    // Pid numbers wrap after 2^28; never hand out one that is still alive.
    let mut pid = node.new_pid();
    while st.procs.contains_key(&pid.id_key()) {
        pid = node.new_pid();
    }
    st.procs.insert(pid.id_key(), Proc::new(pid.clone(), tx));
    (pid, rx)
}

/// Ends a process: unregisters it, tells watchers (DOWN) and links (EXIT).
pub(crate) fn exit_proc(node: &Node, pid: &Pid, reason: Term) {
    let proc_ = {
        let mut st = node.inner.state();
        let Some(p) = st.procs.remove(&pid.id_key()) else {
            return;
        };
        if let Some(n) = &p.name {
            st.names.remove(n);
        }
        st.aliases.retain(|_, id| *id != pid.id_key());
        // Local watchers and links learn now, under the same lock.
        for (r, (watcher, as_named)) in &p.watched_by {
            if node.is_local(watcher) {
                if let Some(w) = st.procs.get_mut(&watcher.id_key()) {
                    if w.watching.remove(r).is_some() {
                        let _ = w.tx.send(down_msg(
                            r,
                            monitored_term(as_named, &node.inner.name),
                            reason.clone(),
                        ));
                    }
                }
            }
        }
        for l in &p.links {
            if node.is_local(l) {
                if let Some(w) = st.procs.get_mut(&l.id_key()) {
                    if w.links.remove(pid) {
                        let _ = w.tx.send(exit_msg(pid, reason.clone()));
                    }
                }
            }
        }
        // Our own monitors on local targets go away.
        for (r, (target, tnode)) in &p.watching {
            if tnode == &node.inner.name {
                if let Some(k) = resolve(node, &st, target) {
                    if let Some(t) = st.procs.get_mut(&k) {
                        t.watched_by.remove(r);
                    }
                }
            }
        }
        p
    };
    for (r, (watcher, as_named)) in proc_.watched_by {
        if !node.is_local(&watcher) {
            let to_node = watcher.node.name.clone();
            node.send_ctrl(
                &to_node,
                Control::MonitorPExit {
                    from: as_named,
                    to: watcher,
                    reference: r,
                    reason: Some(reason.clone()),
                },
                None,
            );
        }
    }
    for l in proc_.links {
        if !node.is_local(&l) {
            let to_node = l.node.name.clone();
            node.send_ctrl(
                &to_node,
                Control::Exit {
                    from: pid.clone(),
                    to: l,
                    reason: Some(reason.clone()),
                },
                None,
            );
        }
    }
    for (r, (target, tnode)) in proc_.watching {
        if tnode != node.inner.name && node_connected(node, &tnode) {
            node.send_ctrl(
                &tnode,
                Control::DemonitorP {
                    from: pid.clone(),
                    to: target,
                    reference: r,
                },
                None,
            );
        }
    }
}

fn node_connected(node: &Node, n: &str) -> bool {
    node.inner.state().conns.contains_key(n)
}

/// Connection to `peer` lost: `noconnection` to everything that watched or
/// linked across it; forget what the peer watched or linked here.
pub(crate) fn node_down(node: &Node, peer: &str) {
    let mut st = node.inner.state();
    for p in st.procs.values_mut() {
        let gone: Vec<Reference> = p
            .watching
            .iter()
            .filter(|(_, (_, n))| n == peer)
            .map(|(r, _)| r.clone())
            .collect();
        for r in gone {
            if let Some((target, n)) = p.watching.remove(&r) {
                let _ = p.tx.send(down_msg(
                    &r,
                    monitored_term(&target, &n),
                    atom("noconnection"),
                ));
            }
        }
        let dead_links: Vec<Pid> = p
            .links
            .iter()
            .filter(|l| l.node.name == peer)
            .cloned()
            .collect();
        for l in dead_links {
            p.links.remove(&l);
            p.remote_signals = p.remote_signals.saturating_sub(1);
            let _ = p.tx.send(exit_msg(&l, atom("noconnection")));
        }
        let before = p.watched_by.len();
        p.watched_by.retain(|_, (w, _)| w.node.name != peer);
        p.remote_signals = p.remote_signals.saturating_sub(before - p.watched_by.len());
    }
}

/// Monitors `target` (pid or name on `tnode`) from local process `me`.
pub(crate) fn monitor(node: &Node, me: &Pid, target: ProcRef, tnode: &str) -> Reference {
    let r = node.make_ref();
    if tnode == node.inner.name {
        let mut st = node.inner.state();
        match resolve(node, &st, &target) {
            Some(k) => {
                if let Some(t) = st.procs.get_mut(&k) {
                    t.watched_by.insert(r.clone(), (me.clone(), target.clone()));
                }
                if let Some(m) = st.procs.get_mut(&me.id_key()) {
                    m.watching.insert(r.clone(), (target, tnode.to_owned()));
                }
            }
            None => {
                if let Some(m) = st.procs.get(&me.id_key()) {
                    let _ =
                        m.tx.send(down_msg(&r, monitored_term(&target, tnode), atom("noproc")));
                }
            }
        }
        return r;
    }
    {
        let mut st = node.inner.state();
        if let Some(m) = st.procs.get_mut(&me.id_key()) {
            m.watching
                .insert(r.clone(), (target.clone(), tnode.to_owned()));
        }
    }
    node.send_ctrl(
        tnode,
        Control::MonitorP {
            from: me.clone(),
            to: target,
            reference: r.clone(),
        },
        None,
    );
    r
}

/// Records a remote monitor with an existing reference (erpc's spawn monitor).
pub(crate) fn record_watching(node: &Node, me: &Pid, r: &Reference, target: ProcRef, tnode: &str) {
    let mut st = node.inner.state();
    if let Some(m) = st.procs.get_mut(&me.id_key()) {
        m.watching.insert(r.clone(), (target, tnode.to_owned()));
    }
}

/// Points an existing monitor of `me` at a new target (erpc learns the
/// spawned pid after the monitor exists). No-op if the monitor already fired.
pub(crate) fn retarget_watching(node: &Node, me: &Pid, r: &Reference, target: ProcRef) {
    let mut st = node.inner.state();
    if let Some((t, _)) = st
        .procs
        .get_mut(&me.id_key())
        .and_then(|m| m.watching.get_mut(r))
    {
        *t = target;
    }
}

/// Removes a monitor set by `me`.
pub(crate) fn demonitor(node: &Node, me: &Pid, r: &Reference) {
    let removed = {
        let mut st = node.inner.state();
        let w = st
            .procs
            .get_mut(&me.id_key())
            .and_then(|m| m.watching.remove(r));
        if let Some((target, tnode)) = &w {
            if *tnode == node.inner.name {
                if let Some(k) = resolve(node, &st, target) {
                    if let Some(t) = st.procs.get_mut(&k) {
                        t.watched_by.remove(r);
                    }
                }
            }
        }
        w
    };
    if let Some((target, tnode)) = removed {
        if tnode != node.inner.name {
            node.send_ctrl(
                &tnode,
                Control::DemonitorP {
                    from: me.clone(),
                    to: target,
                    reference: r.clone(),
                },
                None,
            );
        }
    }
}

/// Links local `me` with `other`.
pub(crate) fn link(node: &Node, me: &Pid, other: &Pid) {
    let mut st = node.inner.state();
    if node.is_local(other) {
        let exists = st
            .procs
            .get(&other.id_key())
            .map(|p| p.pid == *other)
            .unwrap_or(false);
        if !exists {
            if let Some(m) = st.procs.get(&me.id_key()) {
                let _ = m.tx.send(exit_msg(other, atom("noproc")));
            }
            return;
        }
        if let Some(o) = st.procs.get_mut(&other.id_key()) {
            o.links.insert(me.clone());
        }
        if let Some(m) = st.procs.get_mut(&me.id_key()) {
            m.links.insert(other.clone());
        }
        return;
    }
    if let Some(m) = st.procs.get_mut(&me.id_key()) {
        if m.links.insert(other.clone()) {
            m.remote_signals += 1;
        }
    }
    drop(st);
    node.send_ctrl(
        &other.node.name,
        Control::Link {
            from: me.clone(),
            to: other.clone(),
        },
        None,
    );
}

/// Unlinks local `me` from `other` (UNLINK_ID for remote pids).
pub(crate) fn unlink(node: &Node, me: &Pid, other: &Pid) {
    let _ = remove_link(node, me, other);
    let mut st = node.inner.state();
    if node.is_local(other) {
        if let Some(o) = st.procs.get_mut(&other.id_key()) {
            o.links.remove(me);
        }
        return;
    }
    drop(st);
    // Any integer id works; the peer echoes it in UNLINK_ID_ACK, which we ignore.
    let id = int(i64::from(me.id) + 1);
    node.send_ctrl(
        &other.node.name,
        Control::UnlinkId {
            id,
            from: me.clone(),
            to: other.clone(),
        },
        None,
    );
}

/// Sends an exit signal (exit/2) to `to`.
pub(crate) fn exit_signal(node: &Node, from: &Pid, to: &Pid, reason: Term) {
    if node.is_local(to) {
        deliver(node, to, exit_msg(from, reason));
    } else {
        node.send_ctrl(
            &to.node.name,
            Control::Exit2 {
                from: from.clone(),
                to: to.clone(),
                reason: Some(reason),
            },
            None,
        );
    }
}
