//! Harness for mixed-language tests: real Elixir nodes (our library, or the
//! 0.5.1 stand-in), Rust nodes in-process or as child processes, and a
//! hidden control node that drives the Elixir nodes through erpc.
//!
//! Every OS process started here is killed (SIGKILL) and reaped when its
//! guard drops, so a failing test leaves nothing behind. Node names are
//! unique per run.
//!
//! Needs the Elixir library compiled (`MIX_ENV=test mix compile`, which
//! `scripts/test.sh` runs first). `RUST_TESTS_ELIXIR` overrides the command
//! that runs `elixir` (e.g. `scripts/otp27.sh run elixir` for OTP 27 nodes);
//! `*_with` variants take the command per node, so one test can mix the
//! host's OTP 25 nodes with OTP 27 ones ([`elixir27_spec`]).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use cluster_helper_node::cnode::{self, term, Node, Term};
pub use cluster_helper_node::{ClusterHelper, Config, NodeName, Role, Scope};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The compiled Elixir library (`ebin`).
pub fn ebin() -> PathBuf {
    let p = std::env::var("CLUSTER_HELPER_EBIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("_build/test/lib/cluster_helper/ebin"));
    assert!(
        p.join("Elixir.ClusterHelper.beam").exists(),
        "{} has no compiled ClusterHelper: run `MIX_ENV=test mix compile` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A unique node name on 127.0.0.1.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 % 1_000_000);
    format!(
        "{prefix}_{}_{t}_{}@127.0.0.1",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique cookie.
pub fn unique_cookie() -> String {
    unique_name("cookie").replace(['@', '.'], "_")
}

/// Starts epmd if none runs.
pub fn ensure_epmd() {
    let _ = Command::new("epmd").arg("-daemon").status();
}

/// An OS process we started; killed and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns `cmd` and waits until a line of its stdout contains `ready`.
    pub fn spawn(name: &str, mut cmd: Command, ready: &str) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            name: name.to_string(),
            child,
            lines: rx,
        };
        p.wait_line(ready, Duration::from_secs(60));
        p
    }

    /// Waits for a stdout line containing `needle`; panics after `timeout`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("{}: no line with `{needle}` within {timeout:?}", self.name),
            }
        }
    }

    /// The OS pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The default `elixir` command: `$RUST_TESTS_ELIXIR` (split on
/// whitespace), else `elixir` (the host's).
pub fn elixir_spec() -> String {
    std::env::var("RUST_TESTS_ELIXIR").unwrap_or_else(|_| "elixir".into())
}

/// The `elixir` command of the OTP 27 / Elixir 1.18 chroot:
/// `$RUST_TESTS_ELIXIR27`, else `<repo>/scripts/otp27.sh run elixir`. It
/// needs the chroot set up and mounted with the repository bound at its own
/// path (`scripts/test_otp27.sh` does both). That `run` execs down to the
/// beam, so the child's pid is the node's and `Proc` kills the node itself.
pub fn elixir27_spec() -> String {
    std::env::var("RUST_TESTS_ELIXIR27").unwrap_or_else(|_| {
        format!(
            "{} run elixir",
            repo_root().join("scripts/otp27.sh").display()
        )
    })
}

fn elixir_cmd(spec: &str) -> Command {
    let mut parts = spec.split_whitespace();
    let mut c = Command::new(parts.next().expect("an elixir command"));
    c.args(parts);
    c
}

/// Starts an Elixir node running our library, configured by `config`
/// (Elixir code run before the application starts, e.g.
/// `Application.put_env(:cluster_helper, :roles, [:web])`).
pub fn elixir_node(name: &str, cookie: &str, config: &str) -> Proc {
    elixir_node_with(&elixir_spec(), name, cookie, config)
}

/// [`elixir_node`] with the `elixir` command `elixir` (e.g. [`elixir27_spec`]).
/// Only our `ebin` goes on the code path (never Mix's consolidated
/// protocols), so an Elixir of another version runs our host-built beams
/// with its own standard library.
pub fn elixir_node_with(elixir: &str, name: &str, cookie: &str, config: &str) -> Proc {
    ensure_epmd();
    let script = format!(
        "{config}\n{{:ok, _}} = Application.ensure_all_started(:cluster_helper)\nIO.puts(\"ready #{{node()}}\")\nProcess.sleep(:infinity)"
    );
    let mut c = elixir_cmd(elixir);
    c.args(["--name", name, "--cookie", cookie, "-pa"])
        .arg(ebin())
        .args(["-e", &script]);
    Proc::spawn(name, c, "ready")
}

/// Starts an Elixir node running the 0.5.1 stand-in (`test/legacy`), with
/// `opts` a keyword list for `start_standalone/1` (e.g. `roles: [:web]`).
pub fn legacy_node(name: &str, cookie: &str, opts: &str) -> Proc {
    legacy_node_with(&elixir_spec(), name, cookie, opts)
}

/// [`legacy_node`] with the `elixir` command `elixir`.
pub fn legacy_node_with(elixir: &str, name: &str, cookie: &str, opts: &str) -> Proc {
    ensure_epmd();
    let file = repo_root().join("test/legacy/cluster_helper_051.ex");
    let script = format!(
        "ClusterHelper.NodeConfig.start_standalone({opts})\nIO.puts(\"ready #{{node()}}\")\nProcess.sleep(:infinity)"
    );
    let mut c = elixir_cmd(elixir);
    c.args(["--name", name, "--cookie", cookie, "-r"])
        .arg(file)
        .args(["-e", &script]);
    Proc::spawn(name, c, "ready")
}

/// Starts the `cluster-helper node` command line (`bin`) as a child process.
pub fn cli_node(bin: &str, name: &str, cookie: &str, args: &[&str]) -> Proc {
    ensure_epmd();
    let mut c = Command::new(bin);
    c.args(["node", "--name", name, "--cookie", cookie])
        .args(args);
    Proc::spawn(name, c, "up (scopes")
}

/// Starts a Rust node in this process.
pub async fn rust_node(name: &str, cookie: &str) -> Node {
    ensure_epmd();
    Node::builder(name)
        .cookie(cookie)
        .start()
        .await
        .expect("rust node starts")
}

/// A hidden node that drives other nodes through erpc.
pub struct Control {
    pub node: Node,
}

impl Control {
    /// Starts a hidden control node with `cookie`.
    pub async fn start(cookie: &str) -> Control {
        ensure_epmd();
        let node = Node::builder(unique_name("control"))
            .cookie(cookie)
            .hidden(true)
            .mesh(false)
            .start()
            .await
            .expect("control node starts");
        Control { node }
    }

    /// `M:F(A)` on `target`; panics on failure.
    pub async fn call(&self, target: &str, m: &str, f: &str, args: Vec<Term>) -> Term {
        self.node
            .erpc_call(target, m, f, args, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{m}:{f} on {target}: {e}"))
    }

    /// `ClusterHelper.F(A)` on `target`.
    pub async fn ch(&self, target: &str, f: &str, args: Vec<Term>) -> Term {
        self.call(target, "Elixir.ClusterHelper", f, args).await
    }

    /// `ClusterHelper.get_nodes(role, scope)` on `target`, as sorted names.
    pub async fn get_nodes(&self, target: &str, role: &Role, scope: &str) -> Vec<String> {
        let t = self
            .ch(target, "get_nodes", vec![role.to_term(), term::atom(scope)])
            .await;
        names(&t)
    }

    /// `ClusterHelper.get_roles(node, scope)` on `target`, as sorted roles.
    pub async fn get_roles(&self, target: &str, node: &str, scope: &str) -> Vec<Role> {
        let t = self
            .ch(
                target,
                "get_roles",
                vec![term::atom(node), term::atom(scope)],
            )
            .await;
        let mut v: Vec<Role> = term::as_list(&t)
            .unwrap_or_default()
            .iter()
            .map(|r| Role::from_term(r).expect("a role"))
            .collect();
        v.sort();
        v
    }

    /// `ClusterHelper.all_nodes(scope)` on `target`, sorted.
    pub async fn all_nodes(&self, target: &str, scope: &str) -> Vec<String> {
        let t = self.ch(target, "all_nodes", vec![term::atom(scope)]).await;
        names(&t)
    }
}

/// A charlist term (`~c"27"`) as a string; `None` for anything else.
pub fn charlist(t: &Term) -> Option<String> {
    term::as_list(t)?
        .iter()
        .map(|c| term::as_int(c).and_then(|i| char::from_u32(u32::try_from(i).ok()?)))
        .collect()
}

/// Sorted atom names of a list term.
pub fn names(t: &Term) -> Vec<String> {
    let mut v: Vec<String> = term::as_list(t)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| term::as_atom(n).map(String::from))
        .collect();
    v.sort();
    v
}

/// The default scope's atom.
pub const DEFAULT_SCOPE: &str = "Elixir.ClusterHelper";

/// Polls `f` until it is true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sorted node names.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Logs to stderr for debugging a test (`RUST_LOG=debug`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
