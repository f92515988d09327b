//! ClusterHelper for Rust services.
//!
//! A Rust program joins a BEAM cluster as a visible Erlang node (through
//! [`cnode`]) and takes part in ClusterHelper exactly like an Elixir node:
//! it holds roles in scopes, sees everyone else's, serves the erpc
//! functions 0.5.1 peers call, and speaks the generation-tagged protocol
//! with our other nodes. The decisions are `cluster_helper_core`'s
//! [`SyncEngine`](cluster_helper_core::SyncEngine); this crate only drives it.
//!
//! ```no_run
//! use cluster_helper_node::{ClusterHelper, Config, Role};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = cnode::Node::builder("rust1@127.0.0.1").cookie("secret").start().await?;
//! node.connect("app1@127.0.0.1").await?;
//! let ch = ClusterHelper::start(node, Config { roles: vec![Role::atom("worker")], ..Config::default() }).await?;
//! ch.add_role(Role::tuple(&[Role::atom("shard"), Role::int(1)])).await?;
//! println!("web nodes: {:?}", ch.get_nodes(&Role::atom("web")));
//! let mut events = ch.events();
//! while let Some(e) = events.recv().await {
//!     println!("{e:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! The `cluster-helper` binary (`src/bin/cluster-helper.rs`) runs a member
//! from the command line and prints a cluster's role table.

pub mod cli;
mod config;
mod service;
mod term_syntax;

pub use cluster_helper_core::{Event, NodeName, Role, Scope};
pub use config::{scope_from_user, Config};
pub use service::{ClusterHelper, Error, Events};
pub use term_syntax::{parse_role, parse_term, ParseError};
pub use {cluster_helper_core, cnode};
