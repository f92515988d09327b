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
//! # The API in one page
//!
//! | what | how |
//! |---|---|
//! | start / stop | [`Node::builder`]`(name)` -> [`NodeBuilder`] (`cookie`, `listen_ip`, `port`, `tick_time`, `hidden`, `max_frame`, `mesh`, `handshake_timeout`, `max_links_per_process`) -> `.start().await`; [`Node::shutdown`] |
//! | peers | [`Node::connect`], [`Node::disconnect`], [`Node::nodes`], [`Node::hidden_nodes`], [`Node::events`] ([`NodeEvent::Up`] / [`NodeEvent::Down`]) |
//! | processes | [`Node::mailbox`] -> [`Mailbox`]: `pid`, `register`, `send` (to a [`Dest`]: pid, local name, `(name, node)`), `recv`, `recv_timeout`, `recv_match` (selective receive), `monitor`/`demonitor`, `link`/`unlink`, `exit`, `alias`, `close`; [`Node::make_ref`], [`Node::whereis`] |
//! | erpc server | [`Node::register_rpc`] (async handler) / [`Node::register_rpc_sync`]: `Fn(Vec<Term>) -> RpcResult` ([`RpcResult::Ok`], `Throw`, `Error`, `Exit`). Elixir modules are atoms with the `Elixir.` prefix (`"Elixir.ClusterHelper"`). One handler is built in: `erlang:nodes/0` (mesh between Rust nodes needs it); anything else unregistered is `undef` |
//! | erpc client | [`Node::erpc_call`]`(node, m, f, args, timeout) -> Result<Term, `[`ErpcError`]`>` |
//! | gen_server | [`Node::serve_gen_server`]`(name, handler)`, the handler an async `Fn(`[`GenRequest`]`) -> Option<Term>` (`Some(reply)` for calls; requests are handled one at a time, in order); [`Node::gen_call`], [`Node::gen_cast`]; [`gen_server::gen_reply`] / [`gen_server::parse_gen_msg`] for a hand-written loop |
//! | `:pg` | [`Node::pg_scope`] -> [`PgScope`]: `join`, `leave`, `get_members`, `get_local_members`, `get_members_by_node`, `which_groups`, `events` ([`PgEvent`]), `stop` |
//! | terms | [`term`] helpers (`atom`, `tuple`, `list`, `int`, `bin`, `as_*`, `tagged`); `eetf` is re-exported |
//!
//! A Rust mailbox behaves like an Erlang process that traps exits: exit
//! signals arrive as `{'EXIT', From, Reason}` messages, monitors as
//! `{'DOWN', Ref, process, PidOrNameNode, Reason}` (`noconnection` when the
//! peer's connection drops, `noproc` when the target does not exist).
//! Dropping a mailbox ends its process with reason `normal`.
//!
//! Layers, one module each: [`epmd`], [`handshake`], [`frame`] (bounded
//! decoding of peer bytes), [`control`], `connection`, `process`
//! (links/monitors), [`mailbox`], [`erpc`], [`gen_server`], `net_kernel`
//! (also `rex`), `global`, [`pg`].
//!
//! ## Distribution flags
//! We offer OTP 26's mandatory set (which includes OTP 25's) plus
//! `MANDATORY_25_DIGEST` on its real bit 26 (`0x04000000`; erl_dist 0.8
//! has it on bit 36, which OTP 27 rejects), `DIST_MONITOR`,
//! `DIST_MONITOR_NAME`, `SPAWN`, `ALIAS` and, unless hidden, `PUBLISHED`.
//! Never the atom cache or fragments. Tested against OTP 25 and OTP 27.
//!
//! ## Connections
//! One connection per peer. Simultaneous connects resolve as in OTP's
//! net_kernel: the node with the greater name keeps its own attempt (`nok`
//! to the other), the smaller accepts with `ok_simultaneous` and cancels its
//! own; a node that believes it is already connected answers `alive` and the
//! initiator says whether its attempt is still wanted (it is when it
//! restarted). The handshake is implemented in [`handshake`] (erl_dist 0.8
//! gets `alive` wrong both ways); erl_dist is used for EPMD. Ticks go out
//! every quarter of the tick time when nothing else was sent; a peer silent
//! for the tick time is dropped. Published peers trigger mesh: we ask them
//! `erlang:nodes()` and connect to the rest (global's `resolved`/`new_nodes`
//! lead there too).
//!
//! ## What the node answers of `:global`
//! The passive side of global's connect protocol (version 8): `init_connect`,
//! `lock_set`, `exchange`, `resolved`, `new_nodes`, `in_sync`,
//! `cancel_connect`, `remove_connection` (disconnect, reconnect after 1 s),
//! and the calls `set_lock`/`del_lock` (a real lock table), `register`,
//! `register_ext`, `unregister`. So `global:sync/0`, `register_name/2`,
//! `whereis_name/1` and `trans/2` work on BEAM nodes with this node
//! connected, and global counts this node as known. Not supported: global
//! names are not stored here (registering a Rust process globally, looking up
//! global names from Rust), taking global locks from Rust, `lost_connection`
//! (ignored), global groups.
//!
//! ## Hostile input
//! Every frame is length-checked against a configurable limit
//! ([`NodeBuilder::max_frame`], default 64 MiB) and walked by
//! [`frame::validate_term`] before decoding; atom cache references,
//! compressed terms, distribution headers, bad tags and lengths that exceed
//! the frame close only that connection, with a log line. Signals that
//! create state (links, monitors, spawn requests) must come from a pid of
//! the sending node; links plus monitors a peer can set on one process, erpc
//! workers running at once, `:global` locks and known nodes, and `:pg`
//! remote memberships are bounded. Mailbox queues are not bounded (as on a
//! BEAM node): read your mailboxes.
//!
//! ## Lifecycle notes
//! EPMD: registration is kept on an open socket; if EPMD goes away the node
//! registers again every second until it is back; `epmd -daemon` is started
//! when none answers. Call [`Node::shutdown`] to stop: it closes every
//! connection and unregisters (background tasks hold the node otherwise).
//!
//! ## Tests
//! `CARGO_TARGET_DIR=/work/target-cnode cargo test -p cnode` starts real
//! `erl`/`elixir` nodes (OTP 25 by default). `CNODE_TEST_ERL` and
//! `CNODE_TEST_ELIXIR` replace the commands (split on whitespace), e.g.
//! `CNODE_TEST_ERL="scripts/otp27.sh run erl"` for OTP 27 in the chroot;
//! `CNODE_TEST_OTP=27` then asserts the release. `CNODE_LOG=cnode=debug`
//! shows the node's logs.

pub mod control;
pub mod epmd;
pub mod erpc;
pub mod events;
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
pub use events::Events;
pub use gen_server::{CallError, GenFrom, GenRequest};
pub use mailbox::{Dest, Mailbox, ProcessError};
pub use node::{ConnectError, Node, NodeBuilder, NodeError, NodeEvent, NodeEvents};
pub use pg::{PgError, PgEvent, PgEvents, PgScope};
