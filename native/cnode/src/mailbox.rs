//! Mailboxes: the Rust face of a process. A mailbox has a real pid, may be
//! registered, sends to pids / names / `{name, node}`, receives selectively
//! with a timeout, monitors and links. Dropping it ends the process.
//!
//! Owns: the receive side (queue plus the save queue for selective
//! receive) and the public process API. Signal bookkeeping is process.rs.

use crate::control::{Control, ProcRef};
use crate::node::Node;
use crate::process::{self, PidKey};
use crate::term::*;
use eetf::{Pid, Reference, Term};
use std::collections::VecDeque;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// Process-layer errors.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProcessError {
    #[error("name {0} is already registered")]
    NameTaken(String),
    #[error("this process already has a name")]
    AlreadyNamed,
    #[error("invalid name")]
    BadName,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A pid, local or remote.
    Pid(Pid),
    /// A name registered on this node.
    Local(String),
    /// `{Name, Node}`.
    Remote { name: String, node: String },
}

impl From<Pid> for Dest {
    fn from(p: Pid) -> Self {
        Dest::Pid(p)
    }
}
impl From<&Pid> for Dest {
    fn from(p: &Pid) -> Self {
        Dest::Pid(p.clone())
    }
}
impl From<&str> for Dest {
    fn from(n: &str) -> Self {
        Dest::Local(n.to_owned())
    }
}
impl From<(&str, &str)> for Dest {
    fn from((name, node): (&str, &str)) -> Self {
        Dest::Remote {
            name: name.to_owned(),
            node: node.to_owned(),
        }
    }
}

impl Node {
    /// A new mailbox (a process with a fresh pid).
    pub fn mailbox(&self) -> Mailbox {
        let (pid, rx) = process::spawn_proc(self);
        Mailbox {
            node: self.clone(),
            pid,
            rx,
            saved: VecDeque::new(),
            closed: false,
        }
    }

    /// Sends `msg` from `from` to `to` (what [`Mailbox::send`] does).
    pub fn send_from(&self, from: &Pid, to: &Dest, msg: Term) {
        match to {
            Dest::Pid(p) if self.is_local(p) => {
                process::deliver(self, p, msg);
            }
            Dest::Pid(p) if p.node.name == self.inner.name => {} // old incarnation
            Dest::Pid(p) => self.send_ctrl(
                &p.node.name.clone(),
                Control::Send { to: p.clone() },
                Some(&msg),
            ),
            Dest::Local(n) => {
                process::deliver_named(self, n, msg);
            }
            Dest::Remote { name, node } if *node == self.inner.name => {
                process::deliver_named(self, name, msg);
            }
            Dest::Remote { name, node } => self.send_ctrl(
                node,
                Control::RegSend {
                    from: from.clone(),
                    to_name: name.clone(),
                },
                Some(&msg),
            ),
        }
    }

    /// Sends to an alias reference (ALIAS_SEND), e.g. a `gen:call` reply tag.
    pub(crate) fn send_alias(&self, from: &Pid, alias: &Reference, msg: Term) {
        if alias.node.name == self.inner.name {
            process::deliver_alias(self, alias, msg);
            return;
        }
        self.send_ctrl(
            &alias.node.name.clone(),
            Control::AliasSend {
                from: from.clone(),
                alias: alias.clone(),
            },
            Some(&msg),
        );
    }

    /// Pid registered under `name` on this node.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let st = self.inner.state();
        st.names
            .get(name)
            .and_then(|id| st.procs.get(id))
            .map(|p| p.pid.clone())
    }
}

/// A process of this node with a queue of incoming messages.
///
/// Exit signals and monitor notifications arrive as messages, as for an
/// Erlang process that traps exits: `{'EXIT', From, Reason}` and
/// `{'DOWN', Ref, process, PidOrNameNode, Reason}`.
pub struct Mailbox {
    node: Node,
    pid: Pid,
    rx: mpsc::UnboundedReceiver<Term>,
    saved: VecDeque<Term>,
    closed: bool,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("pid", &self.pid).finish()
    }
}

impl Mailbox {
    /// This process's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The node this mailbox lives on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Registers this process under `name` (like `register/2`).
    pub fn register(&self, name: &str) -> Result<(), ProcessError> {
        if name.is_empty() || name.len() > 255 || name == "undefined" {
            return Err(ProcessError::BadName);
        }
        let mut st = self.node.inner.state();
        if st.names.contains_key(name) {
            return Err(ProcessError::NameTaken(name.into()));
        }
        let key = self.pid.id_key();
        match st.procs.get_mut(&key) {
            Some(p) if p.name.is_some() => return Err(ProcessError::AlreadyNamed),
            Some(p) => p.name = Some(name.to_owned()),
            None => return Err(ProcessError::BadName),
        }
        st.names.insert(name.to_owned(), key);
        Ok(())
    }

    /// Sends `msg` to `to` (pid, local name or `(name, node)`).
    pub fn send(&self, to: impl Into<Dest>, msg: Term) {
        self.node.send_from(&self.pid, &to.into(), msg);
    }

    /// Next message, waiting as long as it takes. `None` only if the node is gone.
    pub async fn recv(&mut self) -> Option<Term> {
        if let Some(m) = self.saved.pop_front() {
            return Some(m);
        }
        self.rx.recv().await
    }

    /// Next message or `None` after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Term> {
        if let Some(m) = self.saved.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Selective receive: the first message (oldest first) for which `pred`
    /// holds, leaving the others queued in order. `None` after `timeout`.
    pub async fn recv_match<F>(&mut self, mut pred: F, timeout: Option<Duration>) -> Option<Term>
    where
        F: FnMut(&Term) -> bool,
    {
        if let Some(i) = self.saved.iter().position(&mut pred) {
            return self.saved.remove(i);
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let next = match deadline {
                Some(d) => tokio::time::timeout_at(d, self.rx.recv())
                    .await
                    .ok()
                    .flatten(),
                None => self.rx.recv().await,
            };
            let m = next?;
            if pred(&m) {
                return Some(m);
            }
            self.saved.push_back(m);
        }
    }

    /// Monitors `target`; a `{'DOWN', Ref, process, Obj, Reason}` message
    /// arrives when it ends, is not there (`noproc`) or its node goes away
    /// (`noconnection`).
    pub fn monitor(&self, target: impl Into<Dest>) -> Reference {
        let (t, n) = match target.into() {
            Dest::Pid(p) => {
                let n = p.node.name.clone();
                (ProcRef::Pid(p), n)
            }
            Dest::Local(name) => (ProcRef::Name(name), self.node.inner.name.clone()),
            Dest::Remote { name, node } => (ProcRef::Name(name), node),
        };
        process::monitor(&self.node, &self.pid, t, &n)
    }

    /// Removes a monitor.
    pub fn demonitor(&self, r: &Reference) {
        process::demonitor(&self.node, &self.pid, r)
    }

    /// Links to `pid`: when it exits, `{'EXIT', Pid, Reason}` arrives here;
    /// when this mailbox closes, `pid` gets an exit signal.
    pub fn link(&self, pid: &Pid) {
        process::link(&self.node, &self.pid, pid)
    }

    /// Removes a link (UNLINK_ID to remote peers).
    pub fn unlink(&self, pid: &Pid) {
        process::unlink(&self.node, &self.pid, pid)
    }

    /// Sends an exit signal to `pid` (like `exit(Pid, Reason)`).
    pub fn exit(&self, pid: &Pid, reason: Term) {
        process::exit_signal(&self.node, &self.pid, pid, reason)
    }

    /// Makes a reference that, sent to peers, routes back here (an alias).
    pub fn alias(&self) -> Reference {
        let r = self.node.make_ref();
        let mut st = self.node.inner.state();
        st.aliases.insert(r.clone(), self.pid.id_key());
        r
    }

    /// Ends this process with `reason` (monitors get DOWN, links EXIT).
    pub fn close(mut self, reason: Term) {
        self.closed = true;
        process::exit_proc(&self.node, &self.pid, reason);
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if !self.closed {
            process::exit_proc(&self.node, &self.pid, atom("normal"));
        }
    }
}
