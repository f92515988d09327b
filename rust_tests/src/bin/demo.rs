//! The demo: two Elixir nodes running our library and one Rust node, on
//! loopback, telling what happens in plain words. `scripts/demo.sh` builds
//! everything and runs it; every process it starts is killed at the end.

use std::process::Command;
use std::time::{Duration, Instant};

use rust_tests::*;

const WAIT: Duration = Duration::from_secs(15);

fn say(s: &str) {
    println!("{s}");
}

fn show_table(cli: &str, node: &str, cookie: &str) {
    let out = Command::new(cli)
        .args(["roles", "--connect", node, "--cookie", cookie])
        .output()
        .expect("cluster-helper roles runs");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    assert!(
        out.status.success(),
        "cluster-helper roles failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn short(n: &str) -> &str {
    n.split('@').next().unwrap_or(n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = std::env::args()
        .nth(1)
        .expect("usage: demo PATH_TO_cluster-helper");
    let started = Instant::now();
    let cookie = unique_cookie();
    let pid = std::process::id();
    let (an, bn) = (
        format!("elixir_a_{pid}@127.0.0.1"),
        format!("elixir_b_{pid}@127.0.0.1"),
    );
    let conf = |roles: &str| {
        format!("Application.put_env(:cluster_helper, :roles, {roles})\nApplication.put_env(:cluster_helper, :pull_interval, 2_000)")
    };

    say("1. Two Elixir nodes start with our library (a NIF holds the index):");
    let _a = elixir_node(&an, &cookie, &conf("[:web]"));
    say(&format!("   {} with role web", short(&an)));
    let mut b = elixir_node(&bn, &cookie, &conf("[:db, {:shard, 1}]"));
    say(&format!("   {} with roles db and {{shard, 1}}", short(&bn)));
    let ctl = Control::start(&cookie).await;
    ctl.call(&bn, "net_kernel", "connect_node", vec![term::atom(&an)])
        .await;

    say("2. A Rust node joins the cluster as a visible Erlang node, with role {worker, \"eu\"}:");
    let node = rust_node(&format!("rust_{pid}@127.0.0.1"), &cookie).await;
    let rn = node.name().to_string();
    let worker = Role::tuple(&[Role::atom("worker"), Role::binary("eu")]);
    let config = Config {
        roles: vec![worker.clone()],
        pull_interval: Duration::from_secs(2),
        ..Config::default()
    };
    let r = ClusterHelper::start(node.clone(), config)
        .await
        .expect("the Rust member starts");
    node.connect(&an).await.expect("the Rust node connects");
    eventually("roles converge", WAIT, || async {
        r.all_nodes().len() == 3
            && ctl.all_nodes(&an, DEFAULT_SCOPE).await.len() == 3
            && ctl.all_nodes(&bn, DEFAULT_SCOPE).await.len() == 3
    })
    .await;
    say(&format!(
        "   roles converged: every node sees all three. The Rust node's view of db: {:?}",
        r.get_nodes(&Role::atom("db"))
    ));

    say("3. The Rust node adds role cache; the Elixir nodes see it:");
    r.add_role(Role::atom("cache")).await.unwrap();
    eventually("Elixir sees cache", WAIT, || async {
        ctl.get_nodes(&an, &Role::atom("cache"), DEFAULT_SCOPE)
            .await
            == vec![rn.clone()]
            && ctl
                .get_nodes(&bn, &Role::atom("cache"), DEFAULT_SCOPE)
                .await
                == vec![rn.clone()]
    })
    .await;
    say(&format!(
        "   ClusterHelper.get_nodes(:cache) on both Elixir nodes = [{}]",
        short(&rn)
    ));

    say("4. Elixir node a adds role {:api, 2}; the Rust node sees it:");
    let api = Role::tuple(&[Role::atom("api"), Role::int(2)]);
    ctl.ch(&an, "add_role", vec![api.to_term()]).await;
    eventually("Rust sees api", WAIT, || async {
        r.get_nodes(&api) == vec![NodeName::new(&an)]
    })
    .await;
    say(&format!(
        "   get_nodes({api}) on the Rust node = [{}]",
        short(&an)
    ));

    say("5. `cluster-helper roles` asks a node for the whole table:");
    show_table(&cli, &an, &cookie);

    say(&format!(
        "6. {} is killed (kill -9); its roles vanish everywhere:",
        short(&bn)
    ));
    b.kill9();
    eventually("b's roles vanish", WAIT, || async {
        r.get_roles(&NodeName::new(&bn)).is_empty()
            && ctl
                .get_nodes(&an, &Role::atom("db"), DEFAULT_SCOPE)
                .await
                .is_empty()
    })
    .await;
    say(&format!(
        "   the Rust node now sees: {}",
        r.all_nodes()
            .iter()
            .map(|n| short(n.as_str()).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    show_table(&cli, &rn, &cookie);

    r.stop().await;
    node.shutdown().await;
    say(&format!(
        "Done in {:.1} s; every process started is stopped.",
        started.elapsed().as_secs_f64()
    ));
}
