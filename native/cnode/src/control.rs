//! Distribution control messages: the tuple that starts every frame.
//!
//! Owns: the mapping between control tuples (`{2, '', To}`, `{19, From, To,
//! Ref}`, ...) and [`Control`], in both directions. Shapes that do not match
//! become `Control::Unknown`, logged and ignored by the connection. Does not
//! know what the messages mean to processes.

use crate::term::*;
use eetf::{Pid, Reference, Term};

/// Target of a monitor or a send: a pid or a registered name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcRef {
    /// A process identifier.
    Pid(Pid),
    /// A registered name on the node the message goes to.
    Name(String),
}

impl ProcRef {
    fn to_term(&self) -> Term {
        match self {
            ProcRef::Pid(p) => Term::Pid(p.clone()),
            ProcRef::Name(n) => atom(n),
        }
    }
    fn from_term(t: &Term) -> Option<Self> {
        match t {
            Term::Pid(p) => Some(ProcRef::Pid(p.clone())),
            Term::Atom(a) => Some(ProcRef::Name(a.name.clone())),
            _ => None,
        }
    }
}

/// `SPAWN_REQUEST`: spawn `module:function/arity` for `from` (arguments
/// travel in the payload).
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnRequest {
    pub req_id: Reference,
    pub from: Pid,
    pub module: String,
    pub function: String,
    pub arity: i64,
    pub options: Term,
}

/// One decoded control message (`_TT` variants drop their trace token).
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Link {
        from: Pid,
        to: Pid,
    },
    Send {
        to: Pid,
    },
    /// A linked process exited (EXIT / PAYLOAD_EXIT); `reason` from payload when absent.
    Exit {
        from: Pid,
        to: Pid,
        reason: Option<Term>,
    },
    /// exit/2 sent to us (EXIT2 / PAYLOAD_EXIT2).
    Exit2 {
        from: Pid,
        to: Pid,
        reason: Option<Term>,
    },
    Unlink {
        from: Pid,
        to: Pid,
    },
    RegSend {
        from: Pid,
        to_name: String,
    },
    GroupLeader,
    MonitorP {
        from: Pid,
        to: ProcRef,
        reference: Reference,
    },
    DemonitorP {
        from: Pid,
        to: ProcRef,
        reference: Reference,
    },
    MonitorPExit {
        from: ProcRef,
        to: Pid,
        reference: Reference,
        reason: Option<Term>,
    },
    SendSender {
        from: Pid,
        to: Pid,
    },
    SpawnRequest(SpawnRequest),
    SpawnReply {
        req_id: Reference,
        to: Pid,
        flags: i64,
        result: Term,
    },
    AliasSend {
        from: Pid,
        alias: Reference,
    },
    UnlinkId {
        id: Term,
        from: Pid,
        to: Pid,
    },
    UnlinkIdAck {
        id: Term,
        from: Pid,
        to: Pid,
    },
    /// Well-formed tuple, unknown or unsupported operation.
    Unknown(i64),
}

fn pid(t: Option<&Term>) -> Option<Pid> {
    as_pid(t?).cloned()
}
fn reference(t: Option<&Term>) -> Option<Reference> {
    as_ref(t?).cloned()
}

impl Control {
    /// Parses a control tuple; `None` when the shape is invalid.
    pub fn from_term(t: &Term) -> Option<Control> {
        let e = as_tuple(t)?;
        let op = as_int(e.first()?)?;
        let g = |i: usize| e.get(i);
        Some(match op {
            1 => Control::Link {
                from: pid(g(1))?,
                to: pid(g(2))?,
            },
            2 | 12 => Control::Send { to: pid(g(2))? },
            3 | 13 => Control::Exit {
                from: pid(g(1))?,
                to: pid(g(2))?,
                reason: Some(g(if op == 3 { 3 } else { 4 })?.clone()),
            },
            24 | 25 => Control::Exit {
                from: pid(g(1))?,
                to: pid(g(2))?,
                reason: None,
            },
            8 | 18 => Control::Exit2 {
                from: pid(g(1))?,
                to: pid(g(2))?,
                reason: Some(g(if op == 8 { 3 } else { 4 })?.clone()),
            },
            26 | 27 => Control::Exit2 {
                from: pid(g(1))?,
                to: pid(g(2))?,
                reason: None,
            },
            4 => Control::Unlink {
                from: pid(g(1))?,
                to: pid(g(2))?,
            },
            6 | 16 => Control::RegSend {
                from: pid(g(1))?,
                to_name: as_atom(g(3)?)?.to_owned(),
            },
            7 => Control::GroupLeader,
            19 => Control::MonitorP {
                from: pid(g(1))?,
                to: ProcRef::from_term(g(2)?)?,
                reference: reference(g(3))?,
            },
            20 => Control::DemonitorP {
                from: pid(g(1))?,
                to: ProcRef::from_term(g(2)?)?,
                reference: reference(g(3))?,
            },
            21 => Control::MonitorPExit {
                from: ProcRef::from_term(g(1)?)?,
                to: pid(g(2))?,
                reference: reference(g(3))?,
                reason: Some(g(4)?.clone()),
            },
            28 => Control::MonitorPExit {
                from: ProcRef::from_term(g(1)?)?,
                to: pid(g(2))?,
                reference: reference(g(3))?,
                reason: None,
            },
            22 | 23 => Control::SendSender {
                from: pid(g(1))?,
                to: pid(g(2))?,
            },
            29 | 30 => {
                let mfa = as_tuple(g(4)?)?;
                Control::SpawnRequest(SpawnRequest {
                    req_id: reference(g(1))?,
                    from: pid(g(2))?,
                    module: as_atom(mfa.first()?)?.to_owned(),
                    function: as_atom(mfa.get(1)?)?.to_owned(),
                    arity: as_int(mfa.get(2)?)?,
                    options: g(5)?.clone(),
                })
            }
            31 | 32 => Control::SpawnReply {
                req_id: reference(g(1))?,
                to: pid(g(2))?,
                flags: as_int(g(3)?)?,
                result: g(4)?.clone(),
            },
            33 | 34 => Control::AliasSend {
                from: pid(g(1))?,
                alias: reference(g(2))?,
            },
            35 => Control::UnlinkId {
                id: g(1)?.clone(),
                from: pid(g(2))?,
                to: pid(g(3))?,
            },
            36 => Control::UnlinkIdAck {
                id: g(1)?.clone(),
                from: pid(g(2))?,
                to: pid(g(3))?,
            },
            other => Control::Unknown(other),
        })
    }

    /// Builds the control tuple to send. `Unknown`/`GroupLeader` are never sent.
    pub fn to_term(&self) -> Term {
        let p = |x: &Pid| Term::Pid(x.clone());
        let r = |x: &Reference| Term::Reference(Box::new(x.clone()));
        match self {
            Control::Link { from, to } => tuple(vec![int(1), p(from), p(to)]),
            Control::Send { to } => tuple(vec![int(2), atom(""), p(to)]),
            Control::Exit { from, to, reason } => tuple(vec![
                int(3),
                p(from),
                p(to),
                reason.clone().unwrap_or_else(|| atom("normal")),
            ]),
            Control::Exit2 { from, to, reason } => tuple(vec![
                int(8),
                p(from),
                p(to),
                reason.clone().unwrap_or_else(|| atom("normal")),
            ]),
            Control::Unlink { from, to } => tuple(vec![int(4), p(from), p(to)]),
            Control::RegSend { from, to_name } => {
                tuple(vec![int(6), p(from), atom(""), atom(to_name)])
            }
            Control::MonitorP {
                from,
                to,
                reference,
            } => tuple(vec![int(19), p(from), to.to_term(), r(reference)]),
            Control::DemonitorP {
                from,
                to,
                reference,
            } => tuple(vec![int(20), p(from), to.to_term(), r(reference)]),
            Control::MonitorPExit {
                from,
                to,
                reference,
                reason,
            } => tuple(vec![
                int(21),
                from.to_term(),
                p(to),
                r(reference),
                reason.clone().unwrap_or_else(|| atom("normal")),
            ]),
            Control::SendSender { from, to } => tuple(vec![int(22), p(from), p(to)]),
            Control::SpawnRequest(s) => tuple(vec![
                int(29),
                r(&s.req_id),
                p(&s.from),
                p(&s.from),
                tuple(vec![atom(&s.module), atom(&s.function), int(s.arity)]),
                s.options.clone(),
            ]),
            Control::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => tuple(vec![int(31), r(req_id), p(to), int(*flags), result.clone()]),
            Control::AliasSend { from, alias } => tuple(vec![int(33), p(from), r(alias)]),
            Control::UnlinkId { id, from, to } => tuple(vec![int(35), id.clone(), p(from), p(to)]),
            Control::UnlinkIdAck { id, from, to } => {
                tuple(vec![int(36), id.clone(), p(from), p(to)])
            }
            Control::GroupLeader | Control::Unknown(_) => tuple(vec![]),
        }
    }
}
