//! Mixed clusters driven from Rust: Elixir nodes running our library (or the
//! 0.5.1 stand-in) next to Rust nodes, all real processes on loopback.
//!
//! Pull intervals are set to a minute where a test checks that a change
//! travels by broadcast: seeing it within the (generous) deadline then
//! cannot be the periodic pull's doing.

use std::time::Duration;

use rust_tests::*;

const LONG_PULL: &str = "Application.put_env(:cluster_helper, :pull_interval, 60_000)";
const WAIT: Duration = Duration::from_secs(10);

fn cfg(roles: &str) -> String {
    format!("{LONG_PULL}\nApplication.put_env(:cluster_helper, :roles, {roles})")
}

async fn rust_member(name: &str, cookie: &str, roles: Vec<Role>, pull_ms: u64) -> ClusterHelper {
    let node = rust_node(name, cookie).await;
    let config = Config {
        roles,
        pull_interval: Duration::from_millis(pull_ms),
        ..Config::default()
    };
    ClusterHelper::start(node, config)
        .await
        .expect("rust member starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elixir_and_rust_members_share_one_view() {
    let cookie = unique_cookie();
    let (e1n, e2n) = (unique_name("ex1"), unique_name("ex2"));
    let _e1 = elixir_node(&e1n, &cookie, &cfg("[:web]"));
    let mut e2 = elixir_node(&e2n, &cookie, &cfg("[:db, {:shard, 7}]"));
    let ctl = Control::start(&cookie).await;
    // E2 joins E1; the Rust node then meshes with both through E1.
    ctl.call(&e2n, "net_kernel", "connect_node", vec![term::atom(&e1n)])
        .await;
    let r = rust_member(
        &unique_name("rs"),
        &cookie,
        vec![Role::atom("rusty")],
        60_000,
    )
    .await;
    let rn = r.local_node().to_string();
    r.node().connect(&e1n).await.expect("connect to ex1");
    eventually("the Rust node meshes with ex2", WAIT, || async {
        r.node().nodes().contains(&e2n)
    })
    .await;

    // Initial sync, both ways.
    for e in [&e1n, &e2n] {
        eventually("Elixir sees the Rust node's role", WAIT, || async {
            ctl.get_nodes(e, &Role::atom("rusty"), DEFAULT_SCOPE).await == vec![rn.clone()]
        })
        .await;
    }
    eventually("Rust sees both Elixir nodes", WAIT, || async {
        r.get_nodes(&Role::atom("web")) == vec![NodeName::new(&e1n)]
            && r.get_roles(&NodeName::new(&e2n)).len() == 2
    })
    .await;
    assert_eq!(r.all_nodes().len(), 3);

    // Live add and remove, Rust -> Elixir.
    r.add_role(Role::tuple(&[Role::atom("live"), Role::int(1)]))
        .await
        .unwrap();
    let live = Role::tuple(&[Role::atom("live"), Role::int(1)]);
    for e in [&e1n, &e2n] {
        eventually("Elixir sees a live Rust role", WAIT, || async {
            ctl.get_nodes(e, &live, DEFAULT_SCOPE).await == vec![rn.clone()]
        })
        .await;
    }
    r.remove_role(live.clone()).await.unwrap();
    eventually("Elixir sees a live Rust removal", WAIT, || async {
        ctl.get_nodes(&e1n, &live, DEFAULT_SCOPE).await.is_empty()
    })
    .await;

    // Live add and remove, Elixir -> Rust.
    ctl.ch(
        &e1n,
        "add_role",
        vec![Role::binary("from elixir").to_term()],
    )
    .await;
    eventually("Rust sees a live Elixir role", WAIT, || async {
        r.get_nodes(&Role::binary("from elixir")) == vec![NodeName::new(&e1n)]
    })
    .await;
    ctl.ch(
        &e1n,
        "remove_role",
        vec![Role::binary("from elixir").to_term()],
    )
    .await;
    eventually("Rust sees a live Elixir removal", WAIT, || async {
        r.get_nodes(&Role::binary("from elixir")).is_empty()
    })
    .await;

    // Overlapping scopes stay apart.
    let other = Scope::new("mixed_other_scope");
    r.add_roles_in(vec![Role::atom("only_other")], other.clone())
        .await
        .unwrap();
    ctl.ch(&e1n, "join_scope", vec![term::atom(other.as_str())])
        .await;
    eventually(
        "ex1 sees the Rust role in the other scope",
        WAIT,
        || async {
            ctl.get_nodes(&e1n, &Role::atom("only_other"), other.as_str())
                .await
                == vec![rn.clone()]
        },
    )
    .await;
    assert!(ctl
        .get_nodes(&e1n, &Role::atom("only_other"), DEFAULT_SCOPE)
        .await
        .is_empty());
    assert!(ctl
        .get_nodes(&e2n, &Role::atom("only_other"), other.as_str())
        .await
        .is_empty());
    ctl.ch(
        &e1n,
        "add_role",
        vec![Role::atom("e1_other").to_term(), term::atom(other.as_str())],
    )
    .await;
    eventually("Rust sees ex1 in the other scope only", WAIT, || async {
        r.get_nodes_in(&Role::atom("e1_other"), &other) == vec![NodeName::new(&e1n)]
            && r.get_nodes(&Role::atom("e1_other")).is_empty()
    })
    .await;

    // Leaving a scope tells the peers.
    r.leave_scope(other.clone()).await.unwrap();
    eventually(
        "ex1 drops the Rust node from the left scope",
        WAIT,
        || async { ctl.all_nodes(&e1n, other.as_str()).await == vec![e1n.clone()] },
    )
    .await;

    // kill -9 of an Elixir node: its roles vanish on the Rust node and on ex1.
    e2.kill9();
    eventually("Rust drops the killed node", WAIT, || async {
        r.get_roles(&NodeName::new(&e2n)).is_empty()
    })
    .await;
    eventually("ex1 drops the killed node", WAIT, || async {
        ctl.get_nodes(&e1n, &Role::atom("db"), DEFAULT_SCOPE)
            .await
            .is_empty()
    })
    .await;
    r.stop().await;
    r.node().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_rust_node_removes_its_roles_everywhere() {
    let cookie = unique_cookie();
    let e1n = unique_name("ex1");
    let _e1 = elixir_node(&e1n, &cookie, &cfg("[:web]"));
    let ctl = Control::start(&cookie).await;
    let rn = unique_name("rscli");
    let mut r = cli_node(
        env!("CARGO_BIN_EXE_ch-test-node"),
        &rn,
        &cookie,
        &[
            "--role",
            "rusty",
            "--role",
            "{shard,3}",
            "--role",
            "\"cache\"",
            "--connect",
            &e1n,
        ],
    );
    eventually("ex1 sees the CLI node's roles", WAIT, || async {
        ctl.get_roles(&e1n, &rn, DEFAULT_SCOPE).await.len() == 3
    })
    .await;
    let mut want = vec![
        Role::atom("rusty"),
        Role::tuple(&[Role::atom("shard"), Role::int(3)]),
        Role::binary("cache"),
    ];
    want.sort();
    assert_eq!(ctl.get_roles(&e1n, &rn, DEFAULT_SCOPE).await, want);
    r.wait_line("role added", WAIT); // the CLI logs what it learns
    r.kill9();
    eventually(
        "ex1 drops the killed Rust node",
        Duration::from_secs(30),
        || async {
            ctl.get_roles(&e1n, &rn, DEFAULT_SCOPE).await.is_empty()
                && ctl.all_nodes(&e1n, DEFAULT_SCOPE).await == vec![e1n.clone()]
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elixir_process_and_a_rust_mailbox_share_a_pg_group() {
    let cookie = unique_cookie();
    let e1n = unique_name("expg");
    let _e1 = elixir_node(&e1n, &cookie, LONG_PULL);
    let ctl = Control::start(&cookie).await;
    let node = rust_node(&unique_name("rspg"), &cookie).await;
    node.connect(&e1n).await.unwrap();
    // A :pg scope on the Elixir node (unlinked), and a process of it in group `shared`.
    ctl.call(&e1n, "pg", "start", vec![term::atom("mixed_pg")])
        .await;
    let epid = ctl
        .call(
            &e1n,
            "proc_lib",
            "spawn",
            vec![
                term::atom("timer"),
                term::atom("sleep"),
                term::list(vec![term::atom("infinity")]),
            ],
        )
        .await;
    ctl.call(
        &e1n,
        "pg",
        "join",
        vec![term::atom("mixed_pg"), term::atom("shared"), epid.clone()],
    )
    .await;
    let scope = node.pg_scope("mixed_pg").unwrap();
    let mbox = node.mailbox();
    scope
        .join(term::atom("shared"), std::slice::from_ref(mbox.pid()))
        .await
        .unwrap();
    let epid = term::as_pid(&epid).unwrap().clone();
    eventually("Rust sees the Elixir member", WAIT, || async {
        scope.get_members(&term::atom("shared")).contains(&epid)
    })
    .await;
    let rpid = Term::Pid(mbox.pid().clone());
    eventually("Elixir sees the Rust member", WAIT, || async {
        let m = ctl
            .call(
                &e1n,
                "pg",
                "get_members",
                vec![term::atom("mixed_pg"), term::atom("shared")],
            )
            .await;
        term::as_list(&m).unwrap_or_default().contains(&rpid)
    })
    .await;
    // A member that dies leaves the group everywhere.
    ctl.call(
        &e1n,
        "erlang",
        "exit",
        vec![Term::Pid(epid.clone()), term::atom("kill")],
    )
    .await;
    eventually("Rust sees the dead member leave", WAIT, || async {
        !scope.get_members(&term::atom("shared")).contains(&epid)
    })
    .await;
    drop(mbox);
    eventually("Elixir sees the closed mailbox leave", WAIT, || async {
        let m = ctl
            .call(
                &e1n,
                "pg",
                "get_members",
                vec![term::atom("mixed_pg"), term::atom("shared")],
            )
            .await;
        !term::as_list(&m).unwrap_or_default().contains(&rpid)
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_node_lives_with_a_0_5_1_node() {
    init_logs();
    let cookie = unique_cookie();
    let ln = unique_name("legacy");
    let _l = legacy_node(
        &ln,
        &cookie,
        "roles: [:legacy_role, {:zone, \"eu\"}], pull_interval: 60_000",
    );
    let ctl = Control::start(&cookie).await;
    let r = rust_member(
        &unique_name("rs"),
        &cookie,
        vec![Role::atom("rusty")],
        60_000,
    )
    .await;
    let rn = r.local_node().to_string();
    r.node().connect(&ln).await.unwrap();

    eventually("Rust pulls the 0.5.1 node's roles", WAIT, || async {
        r.get_roles(&NodeName::new(&ln)).len() == 2
    })
    .await;
    eventually(
        "the 0.5.1 node pulls the Rust node's roles",
        WAIT,
        || async {
            ctl.get_nodes(&ln, &Role::atom("rusty"), DEFAULT_SCOPE)
                .await
                == vec![rn.clone()]
        },
    )
    .await;
    // Live, both ways: 0.5.1's own broadcast shapes.
    r.add_role(Role::atom("rust_live")).await.unwrap();
    eventually("0.5.1 sees a live Rust role", WAIT, || async {
        ctl.get_nodes(&ln, &Role::atom("rust_live"), DEFAULT_SCOPE)
            .await
            == vec![rn.clone()]
    })
    .await;
    ctl.ch(&ln, "add_role", vec![Role::atom("legacy_live").to_term()])
        .await;
    eventually("Rust sees a live 0.5.1 role", WAIT, || async {
        r.get_nodes(&Role::atom("legacy_live")) == vec![NodeName::new(&ln)]
    })
    .await;
    r.remove_role(Role::atom("rust_live")).await.unwrap();
    eventually("0.5.1 sees a live Rust removal", WAIT, || async {
        ctl.get_nodes(&ln, &Role::atom("rust_live"), DEFAULT_SCOPE)
            .await
            .is_empty()
    })
    .await;
    // The 0.5.1 node answers our generation question as 0.5.1 does.
    let g = ctl
        .call(
            &ln,
            "Elixir.ClusterHelper.NodeConfig",
            "__get_generation__",
            vec![term::atom(DEFAULT_SCOPE)],
        )
        .await;
    assert!(term::as_int(&g).is_some_and(|g| g >= 1), "generation {g}");
    r.stop().await;
    r.node().shutdown().await;
}
