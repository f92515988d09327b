//! Test support: start real BEAM nodes next to the Rust node, talk to them
//! through a tiny control process (`ctl`) that evaluates Erlang expressions
//! sent as binaries, and kill every OS process started (Drop guard).
//!
//! The `erl` command is `$CNODE_TEST_ERL` (split on whitespace, so a chroot
//! prefix works), default `erl`.
#![allow(dead_code)]

use cnode::term::*;
use cnode::{Node, Term};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

pub const COOKIE: &str = "cnode_test_cookie";

static SEQ: AtomicU32 = AtomicU32::new(0);
static LOG: Once = Once::new();

pub fn init_log() {
    LOG.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("CNODE_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A unique node name `prefix_<pid>_<n>@127.0.0.1`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}@127.0.0.1",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// This machine's short host name (what `-sname` nodes use).
pub fn short_host() -> String {
    let h = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
    h.trim().split('.').next().unwrap_or("localhost").to_owned()
}

pub fn ensure_epmd() {
    let _ = Command::new("epmd").arg("-daemon").status();
}

pub fn erl_command() -> Vec<String> {
    std::env::var("CNODE_TEST_ERL")
        .unwrap_or_else(|_| "erl".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The control loop: `{From, Ref, ExprBinary}` -> `From ! {Ref, Result}`,
/// with `From` bound in the expression.
const CTL: &str = "register(ctl, spawn(fun() -> L = fun L() -> receive {F, R, E} -> spawn(fun() -> Res = try {ok, T, _} = erl_scan:string(binary_to_list(E)), {ok, X} = erl_parse:parse_exprs(T), {value, V, _} = erl_eval:exprs(X, [{'From', F}]), V catch C:Rs -> {ctl_error, C, Rs} end, F ! {R, Res} end), L(); _ -> L() end end, L() end)).";

/// A BEAM node we started; killed (SIGKILL) on drop.
pub struct Beam {
    pub name: String,
    child: Option<Child>,
}

pub struct BeamOpts {
    pub cookie: String,
    pub extra_args: Vec<String>,
    pub evals: Vec<String>,
    pub capture_stdout: bool,
    /// `-sname name` (host = this machine's short hostname) instead of `-name name@127.0.0.1`.
    pub short: bool,
}

impl Default for BeamOpts {
    fn default() -> Self {
        BeamOpts {
            cookie: COOKIE.into(),
            extra_args: vec![],
            evals: vec![],
            capture_stdout: false,
            short: false,
        }
    }
}

impl Beam {
    pub fn start(prefix: &str) -> Beam {
        Self::start_with(prefix, BeamOpts::default())
    }

    pub fn start_with(prefix: &str, opts: BeamOpts) -> Beam {
        ensure_epmd();
        let name = unique(prefix);
        let cmd = erl_command();
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        c.args([
            "-name",
            &name,
            "-setcookie",
            &opts.cookie,
            "-noinput",
            "-eval",
            CTL,
        ]);
        for e in &opts.evals {
            c.args(["-eval", e]);
        }
        c.args(&opts.extra_args);
        c.stdin(Stdio::null()).stderr(Stdio::null());
        c.stdout(if opts.capture_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let child = c.spawn().expect("start erl");
        Beam {
            name,
            child: Some(child),
        }
    }

    pub fn os_pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// kill -9 the node now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit and returns its stdout.
    pub fn wait_output(&mut self, timeout: Duration) -> String {
        use std::io::Read;
        let mut c = self.child.take().expect("child");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        let mut s = String::new();
        if let Some(mut out) = c.stdout.take() {
            let _ = out.read_to_string(&mut s);
        }
        s
    }

    /// Connects `node` to this BEAM node, retrying until it has booted.
    pub async fn connect(&self, node: &Node) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if node.connect(&self.name).await.is_ok() {
                // ctl is registered by the first -eval; make sure it is there.
                if self
                    .try_eval(node, "ok.", Duration::from_secs(2))
                    .await
                    .is_some()
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "BEAM node {} did not come up",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Evaluates an Erlang expression sequence (ending with '.') on the node.
    pub async fn eval(&self, node: &Node, expr: &str) -> Term {
        self.try_eval(node, expr, Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("no answer from {} to {expr}", self.name))
    }

    pub async fn try_eval(&self, node: &Node, expr: &str, timeout: Duration) -> Option<Term> {
        let mut mbox = node.mailbox();
        self.eval_from(&mut mbox, expr, timeout).await
    }

    /// Like `eval` but from the given mailbox (`From` in the expression).
    pub async fn eval_from(
        &self,
        mbox: &mut cnode::Mailbox,
        expr: &str,
        timeout: Duration,
    ) -> Option<Term> {
        let r = Term::Reference(Box::new(mbox.node().make_ref()));
        mbox.send(
            ("ctl", self.name.as_str()),
            tuple(vec![
                Term::Pid(mbox.pid().clone()),
                r.clone(),
                bin(expr.as_bytes()),
            ]),
        );
        let m = mbox
            .recv_match(
                |m| {
                    as_tuple(m)
                        .map(|e| e.len() == 2 && e[0] == r)
                        .unwrap_or(false)
                },
                Some(timeout),
            )
            .await?;
        let v = as_tuple(&m)?[1].clone();
        if tagged(&v, "ctl_error").is_some() {
            panic!("eval of {expr} on {} failed: {v}", self.name);
        }
        Some(v)
    }
}

impl Drop for Beam {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn rust_node(prefix: &str) -> Node {
    init_log();
    ensure_epmd();
    Node::builder(unique(prefix))
        .cookie(COOKIE)
        .start()
        .await
        .expect("start rust node")
}

/// Polls `f` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Atom names from a list term.
pub fn atoms(t: &Term) -> Vec<String> {
    as_list(t)
        .unwrap_or_default()
        .iter()
        .filter_map(|x| as_atom(x).map(str::to_owned))
        .collect()
}
