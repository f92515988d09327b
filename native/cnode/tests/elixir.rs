//! From Elixir: `:erpc.call`, `:rpc.call`, `GenServer.call`, `Node.list/0`
//! and `:net_adm.ping/1` against the Rust node. The command is
//! `$CNODE_TEST_ELIXIR` (split on whitespace; default `elixir`).

mod support;
use cnode::term::*;
use cnode::{GenRequest, RpcResult};
use std::process::{Command, Stdio};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elixir_calls_into_rust() {
    let node = rust_node("ex").await;
    node.register_rpc_sync("Elixir.Rust.Api", "add", 2, |a| {
        match (as_int(&a[0]), as_int(&a[1])) {
            (Some(x), Some(y)) => RpcResult::Ok(int(x + y)),
            _ => RpcResult::Error(atom("badarith")),
        }
    });
    node.register_rpc_sync("Elixir.Rust.Api", "thr", 0, |_| {
        RpcResult::Throw(atom("oops"))
    });
    node.register_rpc_sync("Elixir.Rust.Api", "err", 0, |_| {
        RpcResult::Error(atom("badarg"))
    });
    node.register_rpc_sync("Elixir.Rust.Api", "ex", 0, |_| {
        RpcResult::Exit(atom("gone"))
    });
    node.serve_gen_server("rust_gs", |req| async move {
        match req {
            GenRequest::Call(t) => Some(tuple(vec![atom("ok"), t])),
            _ => None,
        }
    })
    .unwrap();
    let n = node.name();
    let script = format!(
        r#"
n = :"{n}"
IO.puts("ping=#{{inspect(:net_adm.ping(n))}}")
IO.puts("listed=#{{n in Node.list()}}")
IO.puts("add=#{{inspect(:erpc.call(n, Rust.Api, :add, [2, 3], 5000))}}")
IO.puts("rpc=#{{inspect(:rpc.call(n, Rust.Api, :add, [1, 1]))}}")
IO.puts("throw=#{{inspect(try do :erpc.call(n, Rust.Api, :thr, [], 5000) catch k, r -> {{k, r}} end)}}")
IO.puts("error=#{{inspect(try do :erpc.call(n, Rust.Api, :err, [], 5000) catch :error, {{:exception, r, _}} -> {{:error, r}} end)}}")
IO.puts("exit=#{{inspect(try do :erpc.call(n, Rust.Api, :ex, [], 5000) catch :exit, r -> {{:exit, r}} end)}}")
IO.puts("undef=#{{inspect(try do :erpc.call(n, File, :rm_rf!, ["/tmp/x"], 5000) catch :error, {{:exception, r, _}} -> {{:error, r}} end)}}")
IO.puts("genserver=#{{inspect(GenServer.call({{:rust_gs, n}}, :hello))}}")
"#
    );
    let elixir: Vec<String> = std::env::var("CNODE_TEST_ELIXIR")
        .unwrap_or_else(|_| "elixir".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let name = unique("ex_beam");
    let child = Command::new(&elixir[0])
        .args(&elixir[1..])
        .args(["--name", &name, "--cookie", COOKIE, "-e", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start elixir");
    let pid = child.id();
    // Kill guard: the node is killed by pid however this test ends.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _guard = Kill(pid);
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let out = match waited {
        Ok(Ok(Ok(o))) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        other => panic!("elixir did not finish: {other:?}"),
    };
    for want in [
        "ping=:pong",
        "listed=true",
        "add=5",
        "rpc=2",
        "throw={:throw, :oops}",
        "error={:error, :badarg}",
        "exit={:exit, {:exception, :gone}}",
        "undef={:error, :undef}",
        "genserver={:ok, :hello}",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    node.shutdown().await;
}
