//! Handshake, visibility, ping, messages, gen_server and erpc against real
//! OTP nodes.

mod support;
use cnode::term::*;
use cnode::{ErpcError, GenRequest, NodeEvent, RpcResult, Term};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rust_to_beam_and_node_list() {
    let node = rust_node("hs_out").await;
    let beam = Beam::start("hs_out_beam");
    beam.connect(&node).await;
    assert!(node.nodes().contains(&beam.name));
    let nodes = beam.eval(&node, "nodes().").await;
    assert!(
        atoms(&nodes).contains(&node.name().to_owned()),
        "Node.list() = {nodes}"
    );
    let hidden = beam.eval(&node, "nodes(hidden).").await;
    assert!(!atoms(&hidden).contains(&node.name().to_owned()));
    // With CNODE_TEST_OTP=27 (and CNODE_TEST_ERL pointing at an OTP 27 erl),
    // prove which OTP we talked to.
    if let Ok(want) = std::env::var("CNODE_TEST_OTP") {
        let rel = beam.eval(&node, "erlang:system_info(otp_release).").await;
        assert_eq!(
            as_list(&rel).unwrap(),
            want.bytes().map(|b| int(i64::from(b))).collect::<Vec<_>>()
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_beam_to_rust() {
    let node = rust_node("hs_in").await;
    let mut events = node.events();
    let beam = Beam::start_with(
        "hs_in_beam",
        BeamOpts {
            evals: vec![format!(
                "true = net_kernel:connect_node('{}').",
                node.name()
            )],
            ..Default::default()
        },
    );
    let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("nodeup")
        .expect("event");
    assert_eq!(
        ev,
        NodeEvent::Up {
            node: beam.name.clone(),
            hidden: false
        }
    );
    let nodes = beam.eval(&node, "nodes().").await;
    assert!(atoms(&nodes).contains(&node.name().to_owned()));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_adm_ping_pong() {
    let node = rust_node("ping").await;
    let beam = Beam::start("ping_beam");
    beam.connect(&node).await;
    let r = beam
        .eval(&node, &format!("net_adm:ping('{}').", node.name()))
        .await;
    assert!(is_atom(&r, "pong"), "{r}");
    // rex features: erpc is supported.
    let r = beam
        .eval(
            &node,
            &format!("rpc:call('{}', erlang, node, []).", node.name()),
        )
        .await;
    assert!(
        tagged(&r, "badrpc").is_some(),
        "no erlang:node handler registered: {r}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_both_ways_pids_and_names() {
    let node = rust_node("msg").await;
    let beam = Beam::start("msg_beam");
    beam.connect(&node).await;
    let mut mbox = node.mailbox();
    mbox.register("rmb").unwrap();
    // BEAM -> Rust: to a pid and to {name, node}.
    let mut caller = node.mailbox();
    let expr = format!(
        "From ! {{direct, 1}}, {{rmb, '{}'}} ! {{named, 2}}, ok.",
        node.name()
    );
    beam.eval_from(&mut caller, &expr, Duration::from_secs(30))
        .await
        .unwrap();
    let direct = caller
        .recv_match(
            |m| tagged(m, "direct").is_some(),
            Some(Duration::from_secs(10)),
        )
        .await;
    assert_eq!(direct, Some(tuple(vec![atom("direct"), int(1)])));
    let named = mbox.recv_timeout(Duration::from_secs(10)).await;
    assert_eq!(named, Some(tuple(vec![atom("named"), int(2)])));
    // Rust -> BEAM: to a registered name, which answers to our pid.
    beam.eval(
        &node,
        "register(echo, spawn(fun() -> receive {P, M} -> P ! {echo, M} end end)), ok.",
    )
    .await;
    mbox.send(
        ("echo", beam.name.as_str()),
        tuple(vec![Term::Pid(mbox.pid().clone()), bin(b"hi")]),
    );
    let got = mbox.recv_timeout(Duration::from_secs(10)).await;
    assert_eq!(got, Some(tuple(vec![atom("echo"), bin(b"hi")])));
    // Rust -> BEAM pid.
    let pid = beam
        .eval(
            &node,
            "spawn(fun() -> receive {P, M} -> P ! {pid_echo, M} end end).",
        )
        .await;
    let pid = as_pid(&pid).unwrap().clone();
    mbox.send(&pid, tuple(vec![Term::Pid(mbox.pid().clone()), int(7)]));
    let got = mbox.recv_timeout(Duration::from_secs(10)).await;
    assert_eq!(got, Some(tuple(vec![atom("pid_echo"), int(7)])));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_call_into_rust_and_out() {
    let node = rust_node("gs").await;
    node.serve_gen_server("rgs", |req| async move {
        match req {
            GenRequest::Call(t) => Some(tuple(vec![atom("reply"), t])),
            _ => None,
        }
    })
    .unwrap();
    let beam = Beam::start("gs_beam");
    beam.connect(&node).await;
    let r = beam
        .eval(
            &node,
            &format!("gen_server:call({{rgs, '{}'}}, hello).", node.name()),
        )
        .await;
    assert_eq!(r, tuple(vec![atom("reply"), atom("hello")]));
    // Rust -> BEAM: a process speaking gen_server's protocol.
    beam.eval(
        &node,
        "register(bgs, spawn(fun() -> L = fun L(N) -> receive {'$gen_call', {P, T}, get} -> P ! {T, N}, L(N); {'$gen_cast', {add, K}} -> L(N + K) end end, L(0) end)), ok.",
    )
    .await;
    node.gen_cast(
        ("bgs", beam.name.as_str()),
        tuple(vec![atom("add"), int(5)]),
    );
    let v = node
        .gen_call(
            ("bgs", beam.name.as_str()),
            atom("get"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(v, int(5));
    // A real OTP gen_server.
    let v = node
        .gen_call(
            ("application_controller", beam.name.as_str()),
            atom("which_applications"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(as_list(&v).map(|l| !l.is_empty()).unwrap_or(false), "{v}");
    // A name nobody registered: the monitor says noproc.
    let v = node
        .gen_call(
            ("nobody_here", beam.name.as_str()),
            atom("x"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(v, Err(cnode::CallError::Exit(atom("noproc"))));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erpc_from_beam_into_rust() {
    let node = rust_node("erpc_in").await;
    node.register_rpc_sync("rmod", "ret", 1, |a| {
        RpcResult::Ok(tuple(vec![atom("ok"), a[0].clone()]))
    });
    node.register_rpc_sync("rmod", "thr", 0, |_| RpcResult::Throw(atom("thrown")));
    node.register_rpc_sync("rmod", "err", 0, |_| RpcResult::Error(atom("badarg")));
    node.register_rpc_sync("rmod", "ex", 0, |_| RpcResult::Exit(atom("bye")));
    node.register_rpc("rmod", "slow", 0, |_| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        RpcResult::Ok(atom("slow_done"))
    });
    let beam = Beam::start("erpc_in_beam");
    beam.connect(&node).await;
    let n = node.name();
    let r = beam
        .eval(&node, &format!("erpc:call('{n}', rmod, ret, [42], 5000)."))
        .await;
    assert_eq!(r, tuple(vec![atom("ok"), int(42)]));
    let r = beam
        .eval(&node, &format!("erpc:call('{n}', rmod, slow, [], 5000)."))
        .await;
    assert_eq!(r, atom("slow_done"));
    let r = beam
        .eval(
            &node,
            &format!("try erpc:call('{n}', rmod, thr, [], 5000) catch C:R -> {{C, R}} end."),
        )
        .await;
    assert_eq!(r, tuple(vec![atom("throw"), atom("thrown")]));
    let r = beam.eval(&node, &format!("try erpc:call('{n}', rmod, err, [], 5000) catch C:{{exception, R, _}} -> {{C, R}} end.")).await;
    assert_eq!(r, tuple(vec![atom("error"), atom("badarg")]));
    let r = beam
        .eval(
            &node,
            &format!("try erpc:call('{n}', rmod, ex, [], 5000) catch C:R -> {{C, R}} end."),
        )
        .await;
    assert_eq!(
        r,
        tuple(vec![
            atom("exit"),
            tuple(vec![atom("exception"), atom("bye")])
        ])
    );
    let r = beam.eval(&node, &format!("try erpc:call('{n}', os, cmd, [\"touch /tmp/pwned\"], 5000) catch C:{{exception, R, _}} -> {{C, R}} end.")).await;
    assert_eq!(r, tuple(vec![atom("error"), atom("undef")]));
    let r = beam
        .eval(&node, &format!("rpc:call('{n}', rmod, ret, [1])."))
        .await;
    assert_eq!(r, tuple(vec![atom("ok"), int(1)]));
    let r = beam
        .eval(&node, &format!("rpc:call('{n}', nomod, nofun, [])."))
        .await;
    assert!(tagged(&r, "badrpc").is_some(), "{r}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erpc_from_rust_into_beam() {
    let node = rust_node("erpc_out").await;
    let beam = Beam::start("erpc_out_beam");
    beam.connect(&node).await;
    let t = Duration::from_secs(10);
    let v = node
        .erpc_call(&beam.name, "erlang", "node", vec![], t)
        .await
        .unwrap();
    assert_eq!(v, atom(&beam.name));
    let v = node
        .erpc_call(
            &beam.name,
            "lists",
            "reverse",
            vec![list(vec![int(1), int(2)])],
            t,
        )
        .await
        .unwrap();
    assert_eq!(as_list(&v).unwrap(), vec![int(2), int(1)]);
    match node
        .erpc_call(&beam.name, "erlang", "binary_to_atom", vec![int(1)], t)
        .await
    {
        Err(ErpcError::Error { reason, .. }) => assert_eq!(reason, atom("badarg")),
        other => panic!("{other:?}"),
    }
    match node
        .erpc_call(&beam.name, "erlang", "throw", vec![atom("x")], t)
        .await
    {
        Err(ErpcError::Throw(v)) => assert_eq!(v, atom("x")),
        other => panic!("{other:?}"),
    }
    match node
        .erpc_call(&beam.name, "erlang", "exit", vec![atom("y")], t)
        .await
    {
        Err(ErpcError::Exit(v)) => assert_eq!(v, atom("y")),
        other => panic!("{other:?}"),
    }
    match node.erpc_call(&beam.name, "nomod", "f", vec![], t).await {
        Err(ErpcError::Error { reason, .. }) => assert_eq!(reason, atom("undef")),
        other => panic!("{other:?}"),
    }
    let r = node
        .erpc_call(
            &beam.name,
            "timer",
            "sleep",
            vec![int(5000)],
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(r, Err(ErpcError::Timeout));
    // The node still answers after a timeout.
    let v = node
        .erpc_call(&beam.name, "erlang", "node", vec![], t)
        .await
        .unwrap();
    assert_eq!(v, atom(&beam.name));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_node_is_hidden() {
    init_log();
    ensure_epmd();
    let node = cnode::Node::builder(unique("hidden"))
        .cookie(COOKIE)
        .hidden(true)
        .start()
        .await
        .unwrap();
    let beam = Beam::start("hidden_beam");
    beam.connect(&node).await;
    let visible = beam.eval(&node, "nodes().").await;
    assert!(!atoms(&visible).contains(&node.name().to_owned()));
    let hidden = beam.eval(&node, "nodes(hidden).").await;
    assert!(atoms(&hidden).contains(&node.name().to_owned()));
    node.shutdown().await;
    // After shutdown the name is gone from EPMD.
    let alive = node.name().split('@').next().unwrap().to_owned();
    let gone = eventually(10, || {
        let a = alive.clone();
        async move { cnode::epmd::lookup(&a, "127.0.0.1").await.is_err() }
    })
    .await;
    assert!(gone, "still registered in epmd after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names() {
    init_log();
    ensure_epmd();
    let alive = unique("short").split('@').next().unwrap().to_owned();
    let node = cnode::Node::builder(format!("{alive}@{}", short_host()))
        .cookie(COOKIE)
        .start()
        .await
        .unwrap();
    let beam = Beam::start_with(
        "short_beam",
        BeamOpts {
            short: true,
            ..Default::default()
        },
    );
    beam.connect(&node).await;
    let r = beam
        .eval(&node, &format!("net_adm:ping('{}').", node.name()))
        .await;
    assert!(is_atom(&r, "pong"), "{r}");
    assert!(atoms(&beam.eval(&node, "nodes().").await).contains(&node.name().to_owned()));
    node.shutdown().await;
}
