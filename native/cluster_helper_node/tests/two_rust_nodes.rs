//! Two Rust ClusterHelper members in one process, over real sockets and EPMD.

use std::time::{Duration, Instant};

use cluster_helper_node::cnode::Node;
use cluster_helper_node::{ClusterHelper, Config, Event, Role, Scope};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}@127.0.0.1",
        std::process::id(),
        rand_suffix()
    )
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1000
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            % 1000)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(name: &str, roles: Vec<Role>) -> ClusterHelper {
    let _ = std::process::Command::new("epmd").arg("-daemon").status();
    let node = Node::builder(name)
        .cookie("two_rust")
        .start()
        .await
        .expect("node starts");
    let config = Config {
        roles,
        pull_interval: Duration::from_millis(300),
        ..Config::default()
    };
    ClusterHelper::start(node, config)
        .await
        .expect("service starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_members_converge_and_follow_changes() {
    let a = start(&unique("ra"), vec![Role::atom("web")]).await;
    let b = start(
        &unique("rb"),
        vec![
            Role::atom("db"),
            Role::tuple(&[Role::atom("shard"), Role::int(1)]),
        ],
    )
    .await;
    let mut b_events = b.events();
    a.node().connect(b.node().name()).await.expect("connect");
    let an = a.local_node().clone();
    let bn = b.local_node().clone();

    // Initial sync both ways.
    wait_until("a sees b's roles", || a.get_roles(&bn).len() == 2).await;
    wait_until("b sees a's roles", || {
        b.get_nodes(&Role::atom("web")) == vec![an.clone()]
    })
    .await;
    assert_eq!(a.all_nodes().len(), 2);

    // Live add and remove.
    a.add_role(Role::binary("cache")).await.unwrap();
    wait_until("b sees the new role", || {
        b.get_nodes(&Role::binary("cache")) == vec![an.clone()]
    })
    .await;
    a.remove_role(Role::atom("web")).await.unwrap();
    wait_until("b sees the removal", || {
        b.get_nodes(&Role::atom("web")).is_empty()
    })
    .await;

    // Overlapping scopes stay apart.
    let s = Scope::new("other_scope");
    a.add_roles_in(vec![Role::atom("only_here")], s.clone())
        .await
        .unwrap();
    b.join_scope(s.clone()).await.unwrap();
    wait_until("b sees a in the other scope", || {
        b.get_nodes_in(&Role::atom("only_here"), &s) == vec![an.clone()]
    })
    .await;
    assert!(
        b.get_nodes(&Role::atom("only_here")).is_empty(),
        "the default scope does not see it"
    );
    assert_eq!(
        b.join_scope(s.clone()).await,
        Err(cluster_helper_node::Error::AlreadyJoined)
    );

    // Leaving a scope tells the peer.
    a.leave_scope(s.clone()).await.unwrap();
    wait_until("b drops a's roles in the left scope", || {
        b.all_nodes_in(&s).is_empty()
    })
    .await;
    assert_eq!(
        a.leave_scope(s.clone()).await,
        Err(cluster_helper_node::Error::NotJoined)
    );
    assert_eq!(a.generation(&s), 0, "generation of a scope not joined is 0");

    // The peer going away removes its roles.
    a.node().shutdown().await;
    wait_until("b drops a", || {
        b.get_roles(&an).is_empty() && b.all_nodes() == vec![bn.clone()]
    })
    .await;

    // b saw a's arrival and departure once.
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), b_events.recv()).await
    {
        seen.push(e);
    }
    let added = seen.iter().filter(|e| matches!(e, Event::NodeAdded { node, scope } if *node == an && scope.as_str() == "Elixir.ClusterHelper")).count();
    let removed = seen.iter().filter(|e| matches!(e, Event::NodeRemoved { node, scope } if *node == an && scope.as_str() == "Elixir.ClusterHelper")).count();
    assert_eq!((added, removed), (1, 1), "events: {seen:?}");
    b.node().shutdown().await;
}
