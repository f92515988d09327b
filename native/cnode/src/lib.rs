//! `cnode`: a Rust program as a full member of a BEAM cluster.
//!
//! The node registers with EPMD, handshakes both ways (distribution version
//! 6, cookie checked both ways), keeps connections alive with ticks, meshes
//! like a BEAM node, and hosts lightweight processes ("mailboxes") with real
//! pids, registered names, selective receive, monitors and links. On top:
//! an erpc server and client, gen_server call/cast both ways, `:pg` scopes,
//! and the parts of `net_kernel`, `rex` and `global` a published node must
//! answer. Several nodes can run in one process; there is no global state.
//!
//! ```no_run
//! use cnode::{Node, RpcResult, term::*};
//! use std::time::Duration;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder("rust1@127.0.0.1").cookie("secret").start().await?;
//! node.register_rpc_sync("my_mod", "hello", 1, |args| RpcResult::Ok(tuple(vec![atom("hi"), args[0].clone()])));
//! node.connect("beam1@127.0.0.1").await?;
//! let mut mbox = node.mailbox();
//! mbox.register("rusty")?;
//! mbox.send(("shell_proc", "beam1@127.0.0.1"), atom("ping"));
//! let reply = mbox.recv_timeout(Duration::from_secs(5)).await;
//! let v = node.erpc_call("beam1@127.0.0.1", "erlang", "node", vec![], Duration::from_secs(5)).await?;
//! let scope = node.pg_scope("myscope")?;
//! scope.join(atom("workers"), &[mbox.pid().clone()]).await?;
//! # let _ = (reply, v); node.shutdown().await; Ok(()) }
//! ```
//!
//! Layers, one module each: [`epmd`], [`handshake`], [`frame`] (bounded
//! decoding of peer bytes), [`control`], `connection`, `process`
//! (links/monitors), [`mailbox`], [`erpc`], [`gen_server`], `net_kernel`
//! (also `rex`), `global`, [`pg`].
//!
//! ## What the node answers of `:global`
//! The passive side of global's connect protocol (version 8): `init_connect`,
//! `lock_set`, `exchange`, `resolved`, `new_nodes`, `in_sync`,
//! `cancel_connect`, `remove_connection` (disconnect, reconnect after 1 s),
//! and the calls `set_lock`/`del_lock` (a real lock table), `register`,
//! `register_ext`, `unregister`. So `global:sync/0`, `register_name/2`,
//! `whereis_name/1` and `trans/2` work on BEAM nodes with this node
//! connected. Not supported: registering a Rust process globally, looking up
//! global names from Rust, taking global locks from Rust.
//!
//! ## Hostile input
//! Every frame is length-checked against a configurable limit and walked by
//! [`frame::validate_term`] before decoding; atom cache references,
//! compressed terms and absurd lengths close only that connection.
//! Links/monitors a peer can set on one process are bounded.

pub mod control;
pub mod epmd;
pub mod erpc;
pub mod frame;
pub mod gen_server;
pub mod handshake;
pub mod mailbox;
pub mod pg;
pub mod term;

mod connection;
mod global;
mod net_kernel;
mod node;
mod process;

pub use eetf;
pub use eetf::{Pid, Reference, Term};
pub use erpc::{ErpcError, RpcResult};
pub use gen_server::{CallError, GenFrom, GenRequest};
pub use mailbox::{Dest, Mailbox, ProcessError};
pub use node::{ConnectError, Node, NodeBuilder, NodeError, NodeEvent, NodeEvents};
pub use pg::{PgError, PgEvent, PgEvents, PgScope};
