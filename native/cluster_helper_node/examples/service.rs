//! A Rust service in a ClusterHelper cluster: joins as `worker@127.0.0.1`,
//! takes roles, finds the nodes that have `web`, follows events.
//!
//! ```text
//! elixir --name app@127.0.0.1 --cookie demo -S mix run --no-halt   # an Elixir app with ClusterHelper
//! cargo run -p cluster_helper_node --example service -- app@127.0.0.1 demo
//! ```
use std::time::Duration;

use cluster_helper_node::{ClusterHelper, Config, Event, Role};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seed = args.next().unwrap_or_else(|| "app@127.0.0.1".into());
    let cookie = args.next().unwrap_or_else(|| "demo".into());

    // 1. Become a visible Erlang node and join the cluster through one node.
    let node = cnode::Node::builder("worker@127.0.0.1")
        .cookie(cookie)
        .start()
        .await?;
    node.connect(&seed).await?;

    // 2. Take part in ClusterHelper, as an Elixir node would.
    let config = Config {
        roles: vec![
            Role::atom("worker"),
            Role::tuple(&[Role::atom("region"), Role::binary("eu")]),
        ],
        pull_interval: Duration::from_secs(7),
        ..Config::default()
    };
    let ch = ClusterHelper::start(node.clone(), config).await?;
    let mut events = ch.events();

    // 3. Ask the cluster: reads come from the local index, no round trip.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "nodes with role web: {:?}",
        ch.get_nodes(&Role::atom("web"))
    );
    for n in ch.all_nodes() {
        let roles: Vec<String> = ch.get_roles(&n).iter().map(|r| r.to_string()).collect();
        println!("{n}: {}", roles.join(", "));
    }

    // 4. Change roles at run time; peers hear of it at once.
    ch.add_role(Role::atom("busy")).await?;

    // 5. Follow the cluster until Ctrl-C, then leave cleanly.
    loop {
        tokio::select! {
            Some(e) = events.recv() => match e {
                Event::RoleAdded { node, role, .. } => println!("{node} gained {role}"),
                Event::RoleRemoved { node, role, .. } => println!("{node} lost {role}"),
                Event::NodeAdded { node, .. } => println!("{node} joined"),
                Event::NodeRemoved { node, .. } => println!("{node} left"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    ch.stop().await;
    node.shutdown().await;
    Ok(())
}
