//! Many Rust nodes in one process (no global state): 20 nodes join one
//! seed and mesh fully; a `:pg` group spans them all; then they stop.

mod support;
use cnode::term::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_mesh_in_one_process() {
    const N: usize = 20;
    let seed = rust_node("seed").await;
    let mut nodes = vec![seed.clone()];
    for _ in 1..N {
        let n = rust_node("many").await;
        n.connect(seed.name()).await.unwrap();
        nodes.push(n);
    }
    let meshed = eventually(60, || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|n| n.nodes().len() == N - 1) }
    })
    .await;
    assert!(
        meshed,
        "{:?}",
        nodes.iter().map(|n| n.nodes().len()).collect::<Vec<_>>()
    );
    let scopes: Vec<_> = nodes
        .iter()
        .map(|n| n.pg_scope("many_scope").unwrap())
        .collect();
    let mboxes: Vec<_> = nodes.iter().map(|n| n.mailbox()).collect();
    for (s, m) in scopes.iter().zip(&mboxes) {
        s.join(atom("all"), &[m.pid().clone()]).await.unwrap();
    }
    let all = eventually(60, || {
        let scopes = scopes.clone();
        async move {
            scopes
                .iter()
                .all(|s| s.get_members(&atom("all")).len() == N)
        }
    })
    .await;
    assert!(
        all,
        "{:?}",
        scopes
            .iter()
            .map(|s| s.get_members(&atom("all")).len())
            .collect::<Vec<_>>()
    );
    for n in &nodes {
        n.shutdown().await;
    }
}
