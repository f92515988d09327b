//! The small system services a published node must answer: `net_kernel`
//! (`is_auth` from `net_adm:ping/1`) and `rex` (`features_request`, and
//! old-style `{call, M, F, A, GL}` calls, served by registered erpc
//! handlers only).
//!
//! Owns: the two registered mailboxes and their loops. Anything they do not
//! know is logged at debug level and dropped (never answered with garbage).

use crate::erpc::RpcResult;
use crate::gen_server::{gen_reply, parse_gen_msg, GenRequest};
use crate::node::Node;
use crate::term::*;
use eetf::Term;
use tracing::Instrument;

pub(crate) fn start(node: &Node) {
    let mut nk = node.mailbox();
    let _ = nk.register("net_kernel");
    let cancel = node.inner.cancel.clone();
    let span = tracing::info_span!("net_kernel", node = %node.name());
    tokio::spawn(
        async move {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = nk.recv() => match m { Some(m) => m, None => return },
                };
                match parse_gen_msg(msg) {
                    (GenRequest::Call(req), Some(from)) if tagged(&req, "is_auth").is_some() => {
                        gen_reply(&nk, &from, atom("yes"))
                    }
                    (other, _) => tracing::debug!(?other, "net_kernel: ignored"),
                }
            }
        }
        .instrument(span),
    );

    let mut rex = node.mailbox();
    let _ = rex.register("rex");
    let cancel = node.inner.cancel.clone();
    let n = node.clone();
    let span = tracing::info_span!("rex", node = %node.name());
    tokio::spawn(
        async move {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = rex.recv() => match m { Some(m) => m, None => return },
                };
                // {From, features_request}
                if let Some(e) = as_tuple(&msg) {
                    if e.len() == 2 && is_atom(&e[1], "features_request") {
                        if let Some(from) = as_pid(&e[0]) {
                            rex.send(
                                from,
                                tuple(vec![
                                    atom("features_reply"),
                                    atom(n.name()),
                                    list(vec![atom("erpc")]),
                                ]),
                            );
                        }
                        continue;
                    }
                }
                match parse_gen_msg(msg) {
                    (GenRequest::Call(req), Some(from)) => {
                        let e = as_tuple(&req).unwrap_or(&[]);
                        let is_call = e.len() == 5
                            && (is_atom(&e[0], "call") || is_atom(&e[0], "block_call"));
                        if !is_call {
                            tracing::debug!(%req, "rex: unknown call ignored");
                            continue;
                        }
                        let (m, f, a) = (
                            as_atom(&e[1]).unwrap_or("").to_owned(),
                            as_atom(&e[2]).unwrap_or("").to_owned(),
                            as_list(&e[3]).unwrap_or_default(),
                        );
                        let n2 = n.clone();
                        let handler = n2
                            .inner
                            .rpc
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&(m.clone(), f.clone(), a.len()))
                            .cloned();
                        let reply = match handler {
                            None => badrpc(tuple(vec![
                                atom("undef"),
                                list(vec![tuple(vec![atom(&m), atom(&f), list(a), nil()])]),
                            ])),
                            Some(h) => match h(a).await {
                                RpcResult::Ok(v) => v,
                                RpcResult::Throw(t) => t,
                                RpcResult::Exit(r) => badrpc(r),
                                RpcResult::Error(e) => badrpc(tuple(vec![e, nil()])),
                            },
                        };
                        gen_reply(&rex, &from, reply);
                    }
                    (other, _) => tracing::debug!(?other, "rex: ignored"),
                }
            }
        }
        .instrument(span),
    );
}

fn badrpc(reason: Term) -> Term {
    tuple(vec![atom("badrpc"), tuple(vec![atom("EXIT"), reason])])
}
