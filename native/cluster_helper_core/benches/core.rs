//! Core microbenchmarks: index reads and writes, role canonicalisation.
//! Figures only (no assertions): `cargo bench -p cluster_helper_core`.

use cluster_helper_core::{IndexState, NodeName, Role, Scope, SharedIndex};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

fn cluster(nodes: usize, roles_per_node: usize) -> (IndexState, Scope) {
    let s = Scope::new("Elixir.ClusterHelper");
    let mut ix = IndexState::new();
    for n in 0..nodes {
        let node = NodeName::new(&format!("node{n}@10.0.0.1"));
        let roles: Vec<Role> = (0..roles_per_node)
            .map(|r| Role::atom(&format!("role{r}")))
            .collect();
        ix.add(&s, &node, roles);
    }
    (ix, s)
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_read");
    for nodes in [1usize, 100, 1000] {
        let (ix, s) = cluster(nodes, 10);
        let shared = SharedIndex::new();
        shared.publish(ix);
        let role = Role::atom("role3");
        let node = NodeName::new("node0@10.0.0.1");
        g.bench_with_input(BenchmarkId::new("get_nodes", nodes), &nodes, |b, _| {
            b.iter(|| black_box(shared.load().get_nodes(&s, &role)))
        });
        g.bench_with_input(BenchmarkId::new("get_roles", nodes), &nodes, |b, _| {
            b.iter(|| black_box(shared.load().get_roles(&s, &node)))
        });
        g.bench_with_input(BenchmarkId::new("all_nodes", nodes), &nodes, |b, _| {
            b.iter(|| black_box(shared.load().all_nodes(&s)))
        });
    }
    g.finish();
}

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_write");
    for roles in [110usize, 1010, 10010] {
        let (mut ix, s) = cluster(1, roles);
        let node = NodeName::new("node0@10.0.0.1");
        let extra = Role::tuple(&[Role::atom("extra"), Role::int(1)]);
        g.bench_with_input(BenchmarkId::new("add_remove_one", roles), &roles, |b, _| {
            b.iter(|| {
                ix.add(&s, &node, [extra.clone()]);
                ix.remove(&s, &node, [&extra]);
            })
        });
    }
    let (ix, s) = cluster(1000, 10);
    let node = NodeName::new("node500@10.0.0.1");
    g.bench_function("drop_node_of_10k_entries", |b| {
        b.iter_batched(
            || ix.clone(),
            |mut ix| black_box(ix.drop_node(&s, &node)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn canon(c: &mut Criterion) {
    let mut g = c.benchmark_group("role_canon");
    let atom = Role::atom("web").as_etf().to_vec();
    let latin1 = {
        let mut v = vec![131, 100, 0, 3];
        v.extend_from_slice(b"web");
        v
    };
    let tuple = Role::tuple(&[Role::atom("shard"), Role::int(12), Role::binary("eu-west")])
        .as_etf()
        .to_vec();
    g.bench_function("atom", |b| {
        b.iter(|| black_box(Role::from_etf(&atom).unwrap()))
    });
    g.bench_function("latin1_atom", |b| {
        b.iter(|| black_box(Role::from_etf(&latin1).unwrap()))
    });
    g.bench_function("tuple3", |b| {
        b.iter(|| black_box(Role::from_etf(&tuple).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, reads, writes, canon);
criterion_main!(benches);
