//! A small Rust node for a BEAM cluster.
//!
//! ```text
//! cargo run -p cnode --example echo_node -- rust1@127.0.0.1 COOKIE [seed@127.0.0.1]
//! ```
//! Then, from `iex --name a@127.0.0.1 --cookie COOKIE`:
//! ```text
//! Node.connect(:"rust1@127.0.0.1")
//! :erpc.call(:"rust1@127.0.0.1", :echo, :hello, ["world"])   # {:hello, "world"}
//! GenServer.call({:counter, :"rust1@127.0.0.1"}, :next)        # 1, 2, ...
//! send({:echo, :"rust1@127.0.0.1"}, {self(), :hi}); flush()    # {:echo, :hi}
//! :pg.start(:demo); :pg.get_members(:demo, :rust)              # [#PID<...>]
//! ```

use cnode::term::*;
use cnode::{GenRequest, Node, NodeEvent, RpcResult, Term};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "rust1@127.0.0.1".into());
    let cookie = args.next();
    let seed = args.next();

    let mut builder = Node::builder(&name);
    if let Some(c) = cookie {
        builder = builder.cookie(c);
    }
    let node = builder.start().await?;

    // erpc: echo:hello/1
    node.register_rpc_sync("echo", "hello", 1, |args| {
        RpcResult::Ok(tuple(vec![atom("hello"), args[0].clone()]))
    });
    // gen_server: a counter
    let n = Arc::new(AtomicI64::new(0));
    node.serve_gen_server("counter", move |req| {
        let n = n.clone();
        async move {
            match req {
                GenRequest::Call(t) if is_atom(&t, "next") => {
                    Some(int(n.fetch_add(1, Ordering::SeqCst) + 1))
                }
                GenRequest::Call(_) => Some(tuple(vec![atom("error"), atom("unknown_call")])),
                _ => None,
            }
        }
    })?;
    // A registered echo mailbox, also a member of pg group `rust` in scope `demo`.
    let mut echo = node.mailbox();
    echo.register("echo")?;
    let scope = node.pg_scope("demo")?;
    scope.join(atom("rust"), &[echo.pid().clone()]).await?;

    if let Some(seed) = seed {
        node.connect(&seed).await?;
    }
    let mut events = node.events();
    let mut pg_events = scope.events();
    println!("{} up; Ctrl-C to stop", node.name());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            m = echo.recv() => {
                let Some(m) = m else { break };
                if let Some([Term::Pid(from), msg]) = as_tuple(&m).and_then(|e| <&[Term; 2]>::try_from(e).ok()) {
                    echo.send(from, tuple(vec![atom("echo"), msg.clone()]));
                }
            }
            ev = events.recv() => match ev {
                Some(NodeEvent::Up { node: peer, .. }) => println!("nodeup {peer}; nodes = {:?}", node.nodes()),
                Some(NodeEvent::Down { node: peer, reason }) => println!("nodedown {peer} ({reason})"),
                None => break,
            },
            ev = pg_events.recv() => if let Some(ev) = ev { println!("pg: {ev:?}") },
        }
    }
    scope.stop().await;
    node.shutdown().await;
    Ok(())
}
