//! gen_server, both ways.
//!
//! Server: a Rust handler registered under a name answers
//! `GenServer.call({name, rust_node}, req)` and receives casts and plain
//! messages. Replies follow `gen:reply/2`: to an alias (`[alias | Ref]` tag,
//! ALIAS_SEND) or to the caller's pid.
//! Client: `Node::gen_call` / `Node::gen_cast` to a BEAM gen_server.

use crate::mailbox::{Dest, Mailbox, ProcessError};
use crate::node::Node;
use crate::term::*;
use eetf::{Pid, Term};
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// What reaches a Rust gen_server.
#[derive(Debug, Clone, PartialEq)]
pub enum GenRequest {
    /// `gen_server:call`: the handler's `Some(reply)` is sent back.
    Call(Term),
    /// `gen_server:cast`.
    Cast(Term),
    /// Any other message.
    Info(Term),
}

/// gen_server client errors.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CallError {
    #[error("call timed out")]
    Timeout,
    #[error("server exited: {0}")]
    Exit(Term),
    #[error("noconnection")]
    NoConnection,
}

/// The `From` of a call: `{Pid, Tag}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenFrom {
    pub pid: Pid,
    pub tag: Term,
}

impl GenFrom {
    fn parse(t: &Term) -> Option<GenFrom> {
        let e = as_tuple(t)?;
        if e.len() != 2 {
            return None;
        }
        Some(GenFrom {
            pid: as_pid(&e[0])?.clone(),
            tag: e[1].clone(),
        })
    }
}

/// Replies to a `'$gen_call'` as `gen:reply/2` does.
pub fn gen_reply(mbox: &Mailbox, from: &GenFrom, reply: Term) {
    let msg = tuple(vec![from.tag.clone(), reply]);
    if let Term::ImproperList(l) = &from.tag {
        if l.elements.len() == 1 && is_atom(&l.elements[0], "alias") {
            if let Term::Reference(r) = &*l.last {
                mbox.node().send_alias(mbox.pid(), r, msg);
                return;
            }
        }
    }
    mbox.send(&from.pid, msg);
}

/// Splits a message into a gen_server request (and the caller for calls).
pub fn parse_gen_msg(msg: Term) -> (GenRequest, Option<GenFrom>) {
    if let Some(e) = tagged(&msg, "$gen_call") {
        if e.len() == 3 {
            if let Some(from) = GenFrom::parse(&e[1]) {
                return (GenRequest::Call(e[2].clone()), Some(from));
            }
        }
    }
    if let Some(e) = tagged(&msg, "$gen_cast") {
        if e.len() == 2 {
            return (GenRequest::Cast(e[1].clone()), None);
        }
    }
    (GenRequest::Info(msg), None)
}

impl Node {
    /// Runs a gen_server registered as `name` on this node. Requests are
    /// handled one at a time, in order; for `Call`, return `Some(reply)`.
    /// The server stops when the node shuts down.
    pub fn serve_gen_server<F, Fut>(&self, name: &str, handler: F) -> Result<Pid, ProcessError>
    where
        F: Fn(GenRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Term>> + Send + 'static,
    {
        let mut mbox = self.mailbox();
        mbox.register(name)?;
        let pid = mbox.pid().clone();
        let cancel = self.inner.cancel.clone();
        let span = tracing::info_span!("gen_server", node = %self.name(), name);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    let msg = tokio::select! {
                        _ = cancel.cancelled() => return,
                        m = mbox.recv() => match m { Some(m) => m, None => return },
                    };
                    let (req, from) = parse_gen_msg(msg);
                    let reply = handler(req).await;
                    if let (Some(from), Some(reply)) = (from, reply) {
                        gen_reply(&mbox, &from, reply);
                    }
                }
            },
            span,
        ));
        Ok(pid)
    }

    /// `gen_server:call(Dest, Request, Timeout)` to any gen_server.
    pub async fn gen_call(
        &self,
        to: impl Into<Dest>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, CallError> {
        let to = to.into();
        let remote = match &to {
            Dest::Pid(p) if p.node.name != self.name() => Some(p.node.name.clone()),
            Dest::Remote { node, .. } if node != self.name() => Some(node.clone()),
            _ => None,
        };
        if let Some(n) = remote {
            if tokio::time::timeout(timeout, self.connect(&n))
                .await
                .map(|r| r.is_err())
                .unwrap_or(true)
            {
                return Err(CallError::NoConnection);
            }
        }
        let mut mbox = self.mailbox();
        let r = mbox.monitor(to.clone());
        let rt = Term::Reference(Box::new(r.clone()));
        mbox.send(
            to,
            tuple(vec![
                atom("$gen_call"),
                tuple(vec![Term::Pid(mbox.pid().clone()), rt.clone()]),
                request,
            ]),
        );
        let m = mbox
            .recv_match(
                |m| {
                    as_tuple(m)
                        .map(|e| {
                            (e.len() == 2 && e[0] == rt)
                                || (e.len() == 5 && is_atom(&e[0], "DOWN") && e[1] == rt)
                        })
                        .unwrap_or(false)
                },
                Some(timeout),
            )
            .await;
        let Some(m) = m else {
            mbox.demonitor(&r);
            return Err(CallError::Timeout);
        };
        let e = as_tuple(&m).unwrap_or(&[]);
        if e.len() == 2 {
            mbox.demonitor(&r);
            return Ok(e[1].clone());
        }
        match e.get(4) {
            Some(reason) if is_atom(reason, "noconnection") => Err(CallError::NoConnection),
            Some(reason) => Err(CallError::Exit(reason.clone())),
            None => Err(CallError::Exit(atom("unknown"))),
        }
    }

    /// `gen_server:cast(Dest, Request)`.
    pub fn gen_cast(&self, to: impl Into<Dest>, request: Term) {
        let mbox = self.mailbox();
        mbox.send(to, tuple(vec![atom("$gen_cast"), request]));
    }
}
