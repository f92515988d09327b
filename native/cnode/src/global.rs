//! The passive part of OTP's `global` protocol (version 8), so `:global`
//! keeps working on BEAM nodes while this node is connected.
//!
//! Owns: the registered `global_name_server` mailbox and its state. The
//! protocol, as R (us) sees it (PROTOCOL.md has the full story):
//!
//! 1. A casts `init_connect {8, TagA}`; we cast back `init_connect {8, TagR}`
//!    naming our one fixed locker pid, holding no names and no locks.
//! 2. A's locker calls `set_lock` (our lock table answers) and casts
//!    `lock_set ... TagR`; we cast back `lock_set LockerR true [] TagA`.
//! 3. A casts `exchange ... TagR`; we cast `exchange R [] [] TagA` and
//!    `resolved R [] [] unused [] TagA`. A now counts us synced.
//! 4. A casts `resolved ... KnownA ... TagR`: for each node there we connect
//!    and cast `in_sync R true`. `new_nodes` later: the same.
//! 5. Calls: `set_lock`/`del_lock` (a real lock table), `register` -> yes,
//!    `unregister` -> ok, `register_ext` -> yes.
//!
//! `remove_connection Y` (prevent_overlapping_partitions): disconnect from Y
//! and reconnect later. `lost_connection` is ignored.
//!
//! What we do NOT support: global names are not stored here (a Rust process
//! cannot be registered globally, `whereis_name` is answered by the BEAM
//! nodes' own tables), we never take locks ourselves and never start a sync.

use crate::gen_server::{gen_reply, parse_gen_msg, GenFrom, GenRequest};
use crate::mailbox::Mailbox;
use crate::node::{Node, NodeEvent};
use crate::term::*;
use eetf::{Pid, Term};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tracing::Instrument;

const VSN: i64 = 8;
/// Bound on lock table entries created by peers.
const MAX_LOCKS: usize = 100_000;

struct Session {
    his_tag: Term,
    my_tag: Term,
}

struct Lock {
    req_id: Term,
    pids: Vec<Pid>,
}

struct Global {
    node: Node,
    locker: Mailbox,
    sessions: HashMap<String, Session>,
    known: HashSet<String>,
    locks: HashMap<Term, Lock>,
    /// Lock holders we monitor (their DOWN releases their locks).
    holders: HashMap<Pid, eetf::Reference>,
}

pub(crate) fn start(node: &Node) {
    let mut mbox = node.mailbox();
    let _ = mbox.register("global_name_server");
    let mut events = node.events();
    let cancel = node.inner.cancel.clone();
    let mut g = Global {
        node: node.clone(),
        locker: node.mailbox(),
        sessions: HashMap::new(),
        known: HashSet::new(),
        locks: HashMap::new(),
        holders: HashMap::new(),
    };
    let span = tracing::info_span!("global", node = %node.name());
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = mbox.recv() => match m {
                        Some(m) => g.handle(&mbox, m),
                        None => return,
                    },
                    ev = events.recv() => match ev {
                        Some(NodeEvent::Down { node, .. }) => g.nodedown(&node),
                        Some(_) => {}
                        None => return,
                    },
                    // The locker never acts; drain whatever reaches it.
                    _ = g.locker.recv() => {}
                }
            }
        }
        .instrument(span),
    );
}

fn cast(from: &Mailbox, node: &str, msg: Term) {
    from.send(
        ("global_name_server", node),
        tuple(vec![atom("$gen_cast"), msg]),
    );
}

impl Global {
    fn me(&self) -> Term {
        atom(self.node.name())
    }

    fn handle(&mut self, mbox: &Mailbox, msg: Term) {
        match parse_gen_msg(msg) {
            (GenRequest::Call(req), Some(from)) => self.call(mbox, req, from),
            (GenRequest::Cast(c), _) => self.cast_in(mbox, c),
            (GenRequest::Info(i), _) => self.info(i),
            (GenRequest::Call(_), None) => {}
        }
    }

    fn call(&mut self, mbox: &Mailbox, req: Term, from: GenFrom) {
        let e = as_tuple(&req).unwrap_or(&[]);
        let tag = e.first().and_then(as_atom).unwrap_or("");
        let reply = match (tag, e.len()) {
            ("set_lock", 2) => {
                let granted = self.set_lock(&e[1], &from.pid);
                if granted && !self.holders.contains_key(&from.pid) {
                    let r = mbox.monitor(&from.pid);
                    self.holders.insert(from.pid.clone(), r);
                }
                boolean(granted)
            }
            ("del_lock", 2) => {
                self.del_lock(&e[1], &from.pid);
                if !self.locks.values().any(|l| l.pids.contains(&from.pid)) {
                    if let Some(r) = self.holders.remove(&from.pid) {
                        mbox.demonitor(&r);
                    }
                }
                atom("true")
            }
            ("register", 4) | ("register_ext", 5) => atom("yes"),
            ("unregister", 2) => atom("ok"),
            _ => {
                tracing::debug!(%req, "global: unsupported call not answered");
                return;
            }
        };
        gen_reply(mbox, &from, reply);
    }

    fn set_lock(&mut self, lock: &Term, pid: &Pid) -> bool {
        let Some([res_id, req_id]) = as_tuple(lock).and_then(|e| <&[Term; 2]>::try_from(e).ok())
        else {
            return false;
        };
        let full = self.locks.len() >= MAX_LOCKS;
        match self.locks.get_mut(res_id) {
            Some(l) if l.req_id == *req_id => {
                if !l.pids.contains(pid) {
                    l.pids.push(pid.clone());
                }
                true
            }
            Some(_) => false,
            None if full => false,
            None => {
                self.locks.insert(
                    res_id.clone(),
                    Lock {
                        req_id: req_id.clone(),
                        pids: vec![pid.clone()],
                    },
                );
                true
            }
        }
    }

    fn del_lock(&mut self, lock: &Term, pid: &Pid) {
        let Some([res_id, req_id]) = as_tuple(lock).and_then(|e| <&[Term; 2]>::try_from(e).ok())
        else {
            return;
        };
        if let Some(l) = self.locks.get_mut(res_id) {
            if l.req_id == *req_id {
                l.pids.retain(|p| p != pid);
                if l.pids.is_empty() {
                    self.locks.remove(res_id);
                }
            }
        }
    }

    /// A lock holder died: its locks go.
    fn holder_down(&mut self, pid: &Pid) {
        self.holders.remove(pid);
        self.locks.retain(|_, l| {
            l.pids.retain(|p| p != pid);
            !l.pids.is_empty()
        });
    }

    fn nodedown(&mut self, node: &str) {
        self.sessions.remove(node);
        self.known.remove(node);
        self.holders.retain(|p, _| p.node.name != node);
        self.locks.retain(|_, l| {
            l.pids.retain(|p| p.node.name != node);
            !l.pids.is_empty()
        });
    }

    fn tag_ok(&self, node: &str, tag: &Term) -> bool {
        self.sessions
            .get(node)
            .map(|s| s.my_tag == *tag)
            .unwrap_or(false)
    }

    fn his_tag(&self, node: &str) -> Option<Term> {
        self.sessions.get(node).map(|s| s.his_tag.clone())
    }

    fn cast_in(&mut self, mbox: &Mailbox, c: Term) {
        let e = as_tuple(&c).unwrap_or(&[]);
        let tag = e.first().and_then(as_atom).unwrap_or("");
        match (tag, e.len()) {
            ("init_connect", 4) => {
                let (Some(vsn), Some(peer)) = (as_tuple(&e[1]), as_atom(&e[2])) else {
                    return;
                };
                let Some(his_tag) = vsn.get(1).cloned() else {
                    return;
                };
                let my_tag = Term::Reference(Box::new(self.node.make_ref()));
                let peer = peer.to_owned();
                let locker = tuple(vec![
                    atom("locker"),
                    atom("no_longer_a_pid"),
                    Term::Map(eetf::Map::from(HashMap::<Term, Term>::new())),
                    Term::Pid(self.locker.pid().clone()),
                ]);
                cast(
                    mbox,
                    &peer,
                    tuple(vec![
                        atom("init_connect"),
                        tuple(vec![int(VSN), my_tag.clone()]),
                        self.me(),
                        locker,
                    ]),
                );
                self.sessions.insert(peer, Session { his_tag, my_tag });
            }
            ("lock_set", 5) => {
                let Some(pid) = as_pid(&e[1]) else { return };
                let peer = pid.node.name.clone();
                if self.tag_ok(&peer, &e[4]) {
                    if let Some(his) = self.his_tag(&peer) {
                        cast(
                            mbox,
                            &peer,
                            tuple(vec![
                                atom("lock_set"),
                                Term::Pid(self.locker.pid().clone()),
                                atom("true"),
                                nil(),
                                his,
                            ]),
                        );
                    }
                }
            }
            ("exchange", 5) => {
                let Some(peer) = as_atom(&e[1]).map(str::to_owned) else {
                    return;
                };
                if self.tag_ok(&peer, &e[4]) {
                    if let Some(his) = self.his_tag(&peer) {
                        cast(
                            mbox,
                            &peer,
                            tuple(vec![atom("exchange"), self.me(), nil(), nil(), his.clone()]),
                        );
                        cast(
                            mbox,
                            &peer,
                            tuple(vec![
                                atom("resolved"),
                                self.me(),
                                nil(),
                                nil(),
                                atom("unused"),
                                nil(),
                                his,
                            ]),
                        );
                    }
                }
            }
            ("resolved", 7) => {
                let Some(peer) = as_atom(&e[1]).map(str::to_owned) else {
                    return;
                };
                if self.tag_ok(&peer, &e[6]) {
                    let known = node_list(&e[3]);
                    self.known.insert(peer.clone());
                    self.sessions.remove(&peer);
                    self.announce(known);
                }
            }
            ("new_nodes", 6) => {
                let nodes = node_list(&e[4]);
                self.announce(nodes);
            }
            ("in_sync", 3) => {
                if let Some(n) = as_atom(&e[1]) {
                    self.known.insert(n.to_owned());
                }
            }
            _ => tracing::debug!(%c, "global: cast ignored"),
        }
    }

    /// Tells each node (connecting if needed) that we are in sync with it.
    fn announce(&mut self, nodes: Vec<String>) {
        for n in nodes {
            if n == self.node.name() || self.known.len() > 100_000 {
                continue;
            }
            self.known.insert(n.clone());
            let node = self.node.clone();
            let me = self.me();
            tokio::spawn(async move {
                if node.connect(&n).await.is_ok() {
                    let mb = node.mailbox();
                    cast(&mb, &n, tuple(vec![atom("in_sync"), me, atom("true")]));
                }
            });
        }
    }

    fn info(&mut self, i: Term) {
        let e = as_tuple(&i).unwrap_or(&[]);
        let tag = e.first().and_then(as_atom).unwrap_or("");
        match (tag, e.len()) {
            ("DOWN", 5) => {
                if let Some(pid) = as_pid(&e[3]).cloned() {
                    self.holder_down(&pid);
                }
            }
            ("cancel_connect", 3) => {
                if let Some(peer) = as_atom(&e[1]) {
                    if self.tag_ok(peer, &e[2]) {
                        self.sessions.remove(peer);
                    }
                }
            }
            ("remove_connection", 2) => {
                let Some(y) = as_atom(&e[1]).map(str::to_owned) else {
                    return;
                };
                tracing::info!(peer = %y, "global: remove_connection (prevent_overlapping_partitions): disconnecting");
                self.node.disconnect(&y);
                self.nodedown(&y);
                let node = self.node.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = node.connect(&y).await;
                });
            }
            _ => tracing::debug!(%i, "global: info ignored"),
        }
    }
}

/// Node names from a list of atoms or `{Node, Vsn}` tuples.
fn node_list(t: &Term) -> Vec<String> {
    as_list(t)
        .unwrap_or_default()
        .iter()
        .filter_map(|x| match x {
            Term::Atom(a) => Some(a.name.clone()),
            Term::Tuple(tu) => tu.elements.first().and_then(as_atom).map(str::to_owned),
            _ => None,
        })
        .collect()
}
