//! Configuration of a Rust ClusterHelper member, with 0.5.1's keys and defaults.

use std::time::Duration;

use cluster_helper_core::protocol::{
    DEFAULT_PULL_INTERVAL_MS, DEFAULT_PULL_TIMEOUT_MS, DEFAULT_SCOPE,
};
use cluster_helper_core::{Role, Scope};

/// What to start with. `Config::default()` is 0.5.1's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Roles the node takes at start, in `scope`.
    pub roles: Vec<Role>,
    /// Scopes to join at start (besides `scope` when `roles` is not empty).
    pub scopes: Vec<Scope>,
    /// The default scope: `ClusterHelper` (the atom `Elixir.ClusterHelper`).
    pub scope: Scope,
    /// Interval of the periodic sync (7 s).
    pub pull_interval: Duration,
    /// Timeout of a roles pull (5 s).
    pub pull_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            roles: Vec::new(),
            scopes: Vec::new(),
            scope: Scope::new(DEFAULT_SCOPE),
            pull_interval: Duration::from_millis(DEFAULT_PULL_INTERVAL_MS),
            pull_timeout: Duration::from_millis(DEFAULT_PULL_TIMEOUT_MS),
        }
    }
}

/// A scope name as users write it: `ClusterHelper` (an Elixir alias) is the
/// atom `Elixir.ClusterHelper`; anything else (`my_scope`) is taken as is.
///
/// ```
/// use cluster_helper_node::scope_from_user;
/// assert_eq!(scope_from_user("ClusterHelper").as_str(), "Elixir.ClusterHelper");
/// assert_eq!(scope_from_user("Elixir.MyApp.Scope").as_str(), "Elixir.MyApp.Scope");
/// assert_eq!(scope_from_user("workers").as_str(), "workers");
/// ```
pub fn scope_from_user(name: &str) -> Scope {
    let name = name.strip_prefix(':').unwrap_or(name);
    if name.starts_with(|c: char| c.is_ascii_uppercase()) && !name.starts_with("Elixir.") {
        Scope::new(&format!("Elixir.{name}"))
    } else {
        Scope::new(name)
    }
}
