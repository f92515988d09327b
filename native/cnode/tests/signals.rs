//! Monitors and links both ways (including kill -9 of the BEAM node), wrong
//! cookies both ways, ticks keeping a connection alive.

mod support;
use cnode::term::*;
use cnode::{Node, NodeEvent, Term};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(15);

fn is_down(m: &Term) -> bool {
    tagged(m, "DOWN").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beam_monitors_and_links_rust_mailbox() {
    let node = rust_node("mon_in").await;
    let beam = Beam::start("mon_in_beam");
    beam.connect(&node).await;
    let n = node.name();
    let mut test = node.mailbox();

    // A BEAM process monitors a registered Rust mailbox, by name.
    let target = node.mailbox();
    target.register("mon_target").unwrap();
    let expr = format!("spawn(fun() -> monitor(process, {{mon_target, '{n}'}}), From ! monitoring, receive D -> From ! {{got, D}} end end), ok.");
    beam.eval_from(&mut test, &expr, T).await.unwrap();
    assert!(test
        .recv_match(|m| is_atom(m, "monitoring"), Some(T))
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    target.close(atom("done"));
    let got = test
        .recv_match(|m| tagged(m, "got").is_some(), Some(T))
        .await
        .expect("DOWN reached BEAM");
    let down = &as_tuple(&got).unwrap()[1];
    assert!(is_down(down), "{down}");
    assert_eq!(as_tuple(down).unwrap()[4], atom("done"));

    // A BEAM process monitors a Rust pid; dropping the mailbox -> DOWN normal.
    let target = node.mailbox();
    let expr = "spawn(fun() -> receive {watch, P} -> monitor(process, P), From ! monitoring, receive D -> From ! {got, D} end end end).";
    let watcher = beam.eval_from(&mut test, expr, T).await.unwrap();
    test.send(
        as_pid(&watcher).unwrap(),
        tuple(vec![atom("watch"), Term::Pid(target.pid().clone())]),
    );
    assert!(test
        .recv_match(|m| is_atom(m, "monitoring"), Some(T))
        .await
        .is_some());
    drop(target);
    let got = test
        .recv_match(|m| tagged(m, "got").is_some(), Some(T))
        .await
        .expect("DOWN");
    assert_eq!(
        as_tuple(&as_tuple(&got).unwrap()[1]).unwrap()[4],
        atom("normal")
    );

    // A trapping BEAM process links to a Rust mailbox; the mailbox closes.
    let target = node.mailbox();
    let expr = "spawn(fun() -> process_flag(trap_exit, true), receive {link, P} -> link(P), From ! linked, receive E -> From ! {got, E} end end end).";
    let linker = beam.eval_from(&mut test, expr, T).await.unwrap();
    test.send(
        as_pid(&linker).unwrap(),
        tuple(vec![atom("link"), Term::Pid(target.pid().clone())]),
    );
    assert!(test
        .recv_match(|m| is_atom(m, "linked"), Some(T))
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tpid = target.pid().clone();
    target.close(atom("boom"));
    let got = test
        .recv_match(|m| tagged(m, "got").is_some(), Some(T))
        .await
        .expect("EXIT");
    assert_eq!(
        as_tuple(&got).unwrap()[1],
        tuple(vec![atom("EXIT"), Term::Pid(tpid), atom("boom")])
    );

    // link then unlink (UNLINK_ID must be acked), then close: no EXIT arrives.
    let target = node.mailbox();
    let expr = "spawn(fun() -> process_flag(trap_exit, true), receive {link, P} -> link(P), unlink(P), From ! unlinked, receive E -> From ! {got, E} after 1500 -> From ! nothing end end end).";
    let linker = beam.eval_from(&mut test, expr, T).await.unwrap();
    test.send(
        as_pid(&linker).unwrap(),
        tuple(vec![atom("link"), Term::Pid(target.pid().clone())]),
    );
    assert!(test
        .recv_match(|m| is_atom(m, "unlinked"), Some(T))
        .await
        .is_some());
    target.close(atom("boom"));
    let got = test
        .recv_match(
            |m| is_atom(m, "nothing") || tagged(m, "got").is_some(),
            Some(T),
        )
        .await;
    assert_eq!(got, Some(atom("nothing")));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_monitors_and_links_beam_processes() {
    let node = rust_node("mon_out").await;
    let beam = Beam::start("mon_out_beam");
    beam.connect(&node).await;
    let mut mbox = node.mailbox();

    // Monitor: the BEAM process exits with a reason.
    let p = beam
        .eval(&node, "spawn(fun() -> receive stop -> exit(bye) end end).")
        .await;
    let p = as_pid(&p).unwrap().clone();
    let r = mbox.monitor(&p);
    mbox.send(&p, atom("stop"));
    let d = mbox.recv_match(is_down, Some(T)).await.expect("DOWN");
    let e = as_tuple(&d).unwrap();
    assert_eq!(e[1], Term::Reference(Box::new(r)));
    assert_eq!(e[3], Term::Pid(p));
    assert_eq!(e[4], atom("bye"));

    // Monitor of a dead pid: noproc. Monitor by name.
    let r2 = mbox.monitor(("no_such_name", beam.name.as_str()));
    let d = mbox
        .recv_match(is_down, Some(T))
        .await
        .expect("DOWN noproc");
    assert_eq!(as_tuple(&d).unwrap()[1], Term::Reference(Box::new(r2)));
    assert_eq!(as_tuple(&d).unwrap()[4], atom("noproc"));

    // Link: the BEAM process exits; we get an EXIT message.
    let p = beam
        .eval(
            &node,
            "spawn(fun() -> receive stop -> exit(crashed) end end).",
        )
        .await;
    let p = as_pid(&p).unwrap().clone();
    mbox.link(&p);
    tokio::time::sleep(Duration::from_millis(200)).await;
    mbox.send(&p, atom("stop"));
    let x = mbox
        .recv_match(|m| tagged(m, "EXIT").is_some(), Some(T))
        .await
        .expect("EXIT");
    assert_eq!(x, tuple(vec![atom("EXIT"), Term::Pid(p), atom("crashed")]));

    // Link from Rust, then close the Rust side: the BEAM process dies too.
    let p = beam
        .eval(&node, "spawn(fun() -> receive never -> ok end end).")
        .await;
    let p = as_pid(&p).unwrap().clone();
    let linker = node.mailbox();
    linker.link(&p);
    let watch = mbox.monitor(&p);
    tokio::time::sleep(Duration::from_millis(200)).await;
    linker.close(atom("kill_it"));
    let d = mbox
        .recv_match(is_down, Some(T))
        .await
        .expect("linked BEAM process died");
    assert_eq!(as_tuple(&d).unwrap()[1], Term::Reference(Box::new(watch)));
    assert_eq!(as_tuple(&d).unwrap()[4], atom("kill_it"));

    // exit/2 from BEAM to a Rust mailbox arrives as an EXIT message.
    let expr = "exit(From, please), ok.";
    beam.eval_from(&mut mbox, expr, T).await.unwrap();
    let x = mbox
        .recv_match(|m| tagged(m, "EXIT").is_some(), Some(T))
        .await
        .expect("EXIT2");
    assert_eq!(as_tuple(&x).unwrap()[2], atom("please"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_beam_gives_noconnection() {
    let node = rust_node("kill9").await;
    let mut beam = Beam::start("kill9_beam");
    beam.connect(&node).await;
    let mut events = node.events();
    let mut mbox = node.mailbox();
    let p = beam
        .eval(&node, "spawn(fun() -> receive never -> ok end end).")
        .await;
    let p = as_pid(&p).unwrap().clone();
    let linked = beam
        .eval(&node, "spawn(fun() -> receive never -> ok end end).")
        .await;
    let linked = as_pid(&linked).unwrap().clone();
    let r = mbox.monitor(&p);
    mbox.link(&linked);
    tokio::time::sleep(Duration::from_millis(300)).await;
    beam.kill();
    let d = mbox
        .recv_match(is_down, Some(Duration::from_secs(90)))
        .await
        .expect("DOWN after kill -9");
    assert_eq!(as_tuple(&d).unwrap()[1], Term::Reference(Box::new(r)));
    assert_eq!(as_tuple(&d).unwrap()[4], atom("noconnection"));
    let x = mbox
        .recv_match(|m| tagged(m, "EXIT").is_some(), Some(T))
        .await
        .expect("EXIT");
    assert_eq!(
        x,
        tuple(vec![atom("EXIT"), Term::Pid(linked), atom("noconnection")])
    );
    let down = tokio::time::timeout(T, async {
        loop {
            if let Some(NodeEvent::Down { node: n, .. }) = events.recv().await {
                return n;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(down, beam.name);
    assert!(node.nodes().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_refused_both_ways() {
    init_log();
    ensure_epmd();
    let node = Node::builder(unique("cookie"))
        .cookie("right_cookie")
        .start()
        .await
        .unwrap();
    // Rust -> BEAM with the wrong cookie.
    let beam = Beam::start_with(
        "cookie_beam",
        BeamOpts {
            cookie: "other_cookie".into(),
            ..Default::default()
        },
    );
    let mut saw_refusal = false;
    for _ in 0..50 {
        // Until the BEAM node is registered, connect fails for another reason.
        if cnode::epmd::lookup(beam.name.split('@').next().unwrap(), "127.0.0.1")
            .await
            .is_ok()
        {
            saw_refusal = node.connect(&beam.name).await.is_err();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saw_refusal, "connection with a wrong cookie must fail");
    assert!(node.nodes().is_empty());
    // BEAM -> Rust with the wrong cookie.
    let mut beam2 = Beam::start_with(
        "cookie_beam2",
        BeamOpts {
            cookie: "other_cookie".into(),
            evals: vec![format!(
                "io:format(\"result=~p~n\", [net_kernel:connect_node('{}')]), halt().",
                node.name()
            )],
            capture_stdout: true,
            ..Default::default()
        },
    );
    let out = beam2.wait_output(Duration::from_secs(60));
    assert!(out.contains("result=false"), "BEAM output: {out}");
    assert!(node.nodes().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_keep_connection_alive() {
    init_log();
    ensure_epmd();
    let node = Node::builder(unique("tick"))
        .cookie(COOKIE)
        .tick_time(Duration::from_secs(4))
        .start()
        .await
        .unwrap();
    let beam = Beam::start_with(
        "tick_beam",
        BeamOpts {
            extra_args: vec!["-kernel".into(), "net_ticktime".into(), "4".into()],
            ..Default::default()
        },
    );
    beam.connect(&node).await;
    let mut events = node.events();
    // Silence (no application traffic) for more than 3 tick periods.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(node.nodes().contains(&beam.name));
    let nodes = beam.eval(&node, "nodes().").await;
    assert!(atoms(&nodes).contains(&node.name().to_owned()));
    let ev = tokio::time::timeout(Duration::from_millis(10), events.recv()).await;
    assert!(ev.is_err(), "no node event expected, got {ev:?}");
    node.shutdown().await;
}
