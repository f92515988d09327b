//! The sans-IO core of ClusterHelper.
//!
//! Everything that decides, nothing that waits: no sockets, no threads, no
//! clock. Two drivers move bytes and timers for it: the Rustler NIF behind the
//! Elixir `ClusterHelper` API, and the tokio-based Rust node.
//!
//! - [`canon`]: canonical external term format (any encoding in, one out).
//! - [`role`]: [`Role`], any Erlang term compared with `=:=`.
//! - [`index`]: per scope role -> nodes and node -> roles; readers never wait.
//! - [`protocol`]: every message between nodes, 0.5.1's and ours, written once.
//! - [`engine`]: [`SyncEngine`], `handle(Input) -> Vec<Action>`.

pub mod atom;
pub mod canon;
pub mod engine;
pub mod index;
pub mod protocol;
pub mod role;

pub use atom::{Atom, NodeName, Scope};
pub use engine::{Action, EngineError, Event, Group, Input, SyncEngine, Via};
pub use index::{IndexState, ScopeView, SharedIndex};
pub use protocol::{Msg, ProtocolError};
pub use role::{Role, RoleError};

pub use eetf;
