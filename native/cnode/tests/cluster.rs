//! Cluster behaviour with several BEAM nodes: mesh formation from one seed,
//! `:global` with the Rust node connected (including kill -9 of one BEAM
//! node with prevent_overlapping_partitions on), and `:pg` both ways.

mod support;
use cnode::term::*;
use cnode::{Node, PgEvent, Term};
use std::time::Duration;
use support::*;

/// Three BEAM nodes connected to each other (b and c connect to a).
async fn three_beams(node: &Node, prefix: &str) -> (Beam, Beam, Beam) {
    let a = Beam::start(&format!("{prefix}_a"));
    a.connect(node).await;
    let b = Beam::start(&format!("{prefix}_b"));
    let c = Beam::start(&format!("{prefix}_c"));
    // Boot b and c through a temporary Rust connection, then let them join a.
    b.connect(node).await;
    c.connect(node).await;
    for x in [&b, &c] {
        let r = x
            .eval(node, &format!("net_kernel:connect_node('{}').", a.name))
            .await;
        assert!(is_atom(&r, "true"));
    }
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_from_one_seed() {
    let node = rust_node("mesh").await;
    let a = Beam::start("mesh_a");
    let b = Beam::start_with(
        "mesh_b",
        BeamOpts {
            evals: vec![],
            ..Default::default()
        },
    );
    let c = Beam::start("mesh_c");
    // Wait until b and c are registered, then have them join a using a
    // second, throwaway Rust node (so our node only ever dials the seed).
    let helper = Node::builder(unique("mesh_helper"))
        .cookie(COOKIE)
        .mesh(false)
        .start()
        .await
        .unwrap();
    a.connect(&helper).await;
    b.connect(&helper).await;
    c.connect(&helper).await;
    for x in [&b, &c] {
        assert!(is_atom(
            &x.eval(&helper, &format!("net_kernel:connect_node('{}').", a.name))
                .await,
            "true"
        ));
    }
    helper.shutdown().await;
    // Our node dials only a.
    node.connect(&a.name).await.unwrap();
    let want: Vec<String> = {
        let mut v = vec![a.name.clone(), b.name.clone(), c.name.clone()];
        v.sort();
        v
    };
    let ok = eventually(60, || {
        let n = node.clone();
        let want = want.clone();
        async move { n.nodes() == want }
    })
    .await;
    assert!(ok, "our nodes(): {:?}", node.nodes());
    for x in [&a, &b, &c] {
        let ok = eventually(30, || async {
            atoms(&x.eval(&node, "nodes().").await).contains(&node.name().to_owned())
        })
        .await;
        assert!(ok, "{} does not list us", x.name);
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_works_with_rust_node_connected() {
    let node = rust_node("glob").await;
    let (a, b, mut c) = three_beams(&node, "glob").await;
    let ok = eventually(60, || {
        let n = node.clone();
        async move { n.nodes().len() == 3 }
    })
    .await;
    assert!(ok, "nodes {:?}", node.nodes());
    for x in [&a, &b, &c] {
        let r = x.eval(&node, "global:sync().").await;
        assert!(is_atom(&r, "ok"), "{}: {r}", x.name);
    }
    // global on each BEAM node counts us as a known (synced) node.
    for x in [&a, &b, &c] {
        let known = eventually(30, || async {
            atoms(
                &x.eval(&node, "gen_server:call(global_name_server, get_known).")
                    .await,
            )
            .contains(&node.name().to_owned())
        })
        .await;
        assert!(known, "{} does not know us in global", x.name);
    }
    let r = a.eval(&node, "Self = self(), P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(cnode_test_name, P), P = global:whereis_name(cnode_test_name), ok.").await;
    assert!(is_atom(&r, "ok"), "{r}");
    let r = b
        .eval(
            &node,
            "global:sync(), is_pid(global:whereis_name(cnode_test_name)).",
        )
        .await;
    assert!(is_atom(&r, "true"), "{r}");
    let r = b
        .eval(
            &node,
            "global:trans({cnode_lock, self()}, fun() -> in_trans end).",
        )
        .await;
    assert!(is_atom(&r, "in_trans"), "{r}");
    // A lock holder that dies releases its lock on the Rust node too.
    let n = node.name();
    let expr = format!("P = spawn(fun() -> true = global:set_lock({{cnode_res, self()}}, [node(), '{n}']), receive stop -> ok end end), timer:sleep(300), exit(P, kill), ok.");
    assert!(is_atom(&a.eval(&node, &expr).await, "ok"));
    let expr = format!("global:set_lock({{cnode_res, self()}}, ['{n}'], 0).");
    let freed = eventually(20, || async {
        is_atom(&b.eval(&node, &expr).await, "true")
    })
    .await;
    assert!(freed, "lock of a dead holder not released");
    // kill -9 one of the three: the others and the Rust node stay connected.
    c.kill();
    let ok = eventually(60, || {
        let n = node.clone();
        let c = c.name.clone();
        async move { !n.nodes().contains(&c) }
    })
    .await;
    assert!(ok);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for x in [&a, &b] {
        let r = x.eval(&node, "global:sync(), nodes().").await;
        let ns = atoms(&r);
        assert!(
            ns.contains(&node.name().to_owned()),
            "{} lost us: {ns:?}",
            x.name
        );
        let other = if x.name == a.name { &b.name } else { &a.name };
        assert!(ns.contains(other), "{} lost {other}: {ns:?}", x.name);
    }
    assert!(
        node.nodes().contains(&a.name) && node.nodes().contains(&b.name),
        "{:?}",
        node.nodes()
    );
    let r = a
        .eval(
            &node,
            "global:trans({cnode_lock2, self()}, fun() -> again end).",
        )
        .await;
    assert!(is_atom(&r, "again"), "{r}");
    node.shutdown().await;
}

fn has(pids: &[cnode::Pid], p: &cnode::Pid) -> bool {
    pids.contains(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_membership_both_ways_and_cleanup() {
    let node = rust_node("pg").await;
    let beam = Beam::start("pg_beam");
    beam.connect(&node).await;
    let n = node.name().to_owned();
    let r = beam.eval(&node, "{ok, _} = pg:start(myscope), P = spawn(fun() -> receive stop -> ok end end), ok = pg:join(myscope, g1, P), P.").await;
    let beam_member = as_pid(&r).unwrap().clone();
    let scope = node.pg_scope("myscope").unwrap();
    let mut events = scope.events();
    let g1 = atom("g1");
    // BEAM member visible to Rust.
    let ok = eventually(30, || {
        let s = scope.clone();
        let g = g1.clone();
        let p = beam_member.clone();
        async move { has(&s.get_members(&g), &p) }
    })
    .await;
    assert!(ok, "BEAM member not seen: {:?}", scope.get_members(&g1));
    // Rust member visible to BEAM.
    let mbox = node.mailbox();
    scope.join(g1.clone(), &[mbox.pid().clone()]).await.unwrap();
    let me = Term::Pid(mbox.pid().clone());
    let ok = eventually(30, || async {
        as_list(&beam.eval(&node, "pg:get_members(myscope, g1).").await)
            .unwrap_or_default()
            .contains(&me)
    })
    .await;
    assert!(ok);
    assert!(scope.which_groups().contains(&g1));
    assert_eq!(scope.get_local_members(&g1), vec![mbox.pid().clone()]);
    let by_node = scope.get_members_by_node(&g1);
    assert_eq!(by_node.get(&beam.name), Some(&vec![beam_member.clone()]));
    // BEAM member dies: it leaves for Rust, and we see the event.
    node.mailbox().send(&beam_member, atom("stop"));
    let left = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Some(PgEvent::Leave { group, pids })
                    if group == g1 && pids.contains(&beam_member) =>
                {
                    return true
                }
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(left);
    assert!(!has(&scope.get_members(&g1), &beam_member));
    // Rust member dies (mailbox dropped): it leaves on BEAM.
    drop(mbox);
    let ok = eventually(30, || async {
        !as_list(&beam.eval(&node, "pg:get_members(myscope, g1).").await)
            .unwrap_or_default()
            .contains(&me)
    })
    .await;
    assert!(ok, "dead Rust member still on BEAM");
    // Explicit leave, then stop: the BEAM scope drops our members at once.
    let m2 = node.mailbox();
    scope.join(atom("g2"), &[m2.pid().clone()]).await.unwrap();
    let me2 = Term::Pid(m2.pid().clone());
    let ok = eventually(30, || async {
        as_list(&beam.eval(&node, "pg:get_members(myscope, g2).").await)
            .unwrap_or_default()
            .contains(&me2)
    })
    .await;
    assert!(ok);
    assert!(scope.leave(atom("g2"), &[m2.pid().clone()]).await.unwrap());
    let ok = eventually(30, || async {
        as_list(&beam.eval(&node, "pg:get_members(myscope, g2).").await)
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    assert!(ok);
    scope.join(atom("g3"), &[m2.pid().clone()]).await.unwrap();
    let ok = eventually(30, || async {
        !as_list(&beam.eval(&node, "pg:get_members(myscope, g3).").await)
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    assert!(ok);
    scope.stop().await;
    let ok = eventually(30, || async {
        as_list(&beam.eval(&node, "pg:get_members(myscope, g3).").await)
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    assert!(ok, "stopped scope's members still on BEAM");
    // The BEAM scope is alive and well (it crashes on unexpected messages).
    let r = beam.eval(&node, "is_pid(whereis(myscope)).").await;
    assert!(is_atom(&r, "true"));
    let _ = n;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_member_node_goes_away() {
    let node = rust_node("pgdown").await;
    let mut beam = Beam::start("pgdown_beam");
    beam.connect(&node).await;
    let scope = node.pg_scope("s2").unwrap();
    let r = beam.eval(&node, "{ok, _} = pg:start(s2), P = spawn(fun() -> receive stop -> ok end end), ok = pg:join(s2, g, P), P.").await;
    let p = as_pid(&r).unwrap().clone();
    let g = atom("g");
    let ok = eventually(30, || {
        let s = scope.clone();
        let g = g.clone();
        let p = p.clone();
        async move { s.get_members(&g).contains(&p) }
    })
    .await;
    assert!(ok);
    beam.kill();
    let ok = eventually(60, || {
        let s = scope.clone();
        let g = g.clone();
        async move { s.get_members(&g).is_empty() }
    })
    .await;
    assert!(ok, "members of a dead node must go");
    node.shutdown().await;
}
