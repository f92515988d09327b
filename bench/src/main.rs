//! `chbench`: the multi-node figures of `scripts/bench.sh` (figures 3-6 of
//! bench/RESULTS.md). Each subcommand appends Erlang terms (one per line,
//! `file:consult/1` syntax) to OUT; `bench/report.exs` turns them into the
//! results page and plots.
//!
//! ```text
//! chbench propagation OUT   5-node mixed cluster: change -> event latency; kill -9
//! chbench idle OUT          idle sync traffic, ours vs the 0.5.1 stand-in, N=3,5 x S=1,3
//! chbench throughput OUT    small messages/s Rust->BEAM, BEAM->Rust, BEAM->BEAM
//! chbench scale OUT K       K Rust nodes (+2 Elixir): time to converge, RSS per node
//! ```
//!
//! Scale diagnostics: `CHBENCH_JOIN_ON_ADD=1` makes the nodes join the scope
//! only when they add their roles; `CHBENCH_DIAG=1` prints, 2 s after the
//! roles were added, what each Rust node of a worker still misses.
//!
//! Needs the Elixir library compiled (`CLUSTER_HELPER_EBIN`, see rust_tests).
//! Every OS process started is killed when its guard drops.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster_helper_node::Event;
use rust_tests::cnode::Dest;
use rust_tests::*;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn bench_dir() -> PathBuf {
    repo_root().join("bench")
}

/// Appends one term line to OUT.
fn emit(out: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("OUT opens");
    writeln!(f, "{line}.").expect("OUT writes");
}

fn a(s: &str) -> Term {
    term::atom(s)
}

fn path_term(p: &Path) -> Term {
    term::bin(p.to_string_lossy().as_bytes())
}

/// Config code for an Elixir node running our library.
fn our_conf(roles: &str, pull_ms: u64, handler: bool) -> String {
    let mut s = String::from("Application.put_env(:logger, :level, :error)\n");
    if handler {
        s += &format!(
            "Code.require_file({:?})\nBench.Handler.setup()\nApplication.put_env(:cluster_helper, :event_handler, Bench.Handler)\n",
            bench_dir().join("handler.ex").to_string_lossy()
        );
    }
    s += &format!(
        "Application.put_env(:cluster_helper, :roles, {roles})\nApplication.put_env(:cluster_helper, :pull_interval, {pull_ms})\n"
    );
    s
}

/// Starts several OS processes at once (each `f(name)`), in name order.
fn start_all<F>(names: &[String], f: F) -> Vec<Proc>
where
    F: Fn(&str) -> Proc + Sync,
{
    std::thread::scope(|s| {
        let hs: Vec<_> = names.iter().map(|n| s.spawn(|| f(n))).collect();
        hs.into_iter().map(|h| h.join().expect("starts")).collect()
    })
}

async fn load_probe(ctl: &Control, node: &str) {
    ctl.call(
        node,
        "Elixir.Code",
        "require_file",
        vec![path_term(&bench_dir().join("probe.ex"))],
    )
    .await;
}

async fn connect_all(ctl: &Control, names: &[String]) {
    for n in &names[1..] {
        ctl.call(&names[0], "net_kernel", "connect_node", vec![a(n)])
            .await;
    }
}

// ---- 3. propagation --------------------------------------------------------

async fn propagation(out: &Path) {
    let cookie = unique_cookie();
    let exn: Vec<String> = (0..3)
        .map(|i| unique_name(&format!("prop_ex{i}")))
        .collect();
    let conf = our_conf("[:web]", 2_000, true);
    let _ex = start_all(&exn, |n| elixir_node(n, &cookie, &conf));
    let ctl = Control::start(&cookie).await;
    connect_all(&ctl, &exn).await;

    let mut rs = Vec::new();
    let seen: Arc<Mutex<BTreeMap<(usize, String), i64>>> = Default::default();
    for i in 0..2 {
        let node = rust_node(&unique_name(&format!("prop_rs{i}")), &cookie).await;
        let ch = ClusterHelper::start(
            node.clone(),
            Config {
                roles: vec![Role::atom("rust")],
                pull_interval: Duration::from_secs(2),
                ..Config::default()
            },
        )
        .await
        .expect("rust member starts");
        let mut ev = ch.events();
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(e) = ev.recv().await {
                let t = now_us();
                let key = match e {
                    Event::RoleAdded { role, .. } => format!("{role}"),
                    Event::NodeRemoved { node, .. } => format!("down {}", node.as_str()),
                    _ => continue,
                };
                seen.lock().unwrap().entry((i, key)).or_insert(t);
            }
        });
        node.connect(&exn[0]).await.expect("connects");
        rs.push((node, ch));
    }
    let all: Vec<String> = exn
        .iter()
        .cloned()
        .chain(rs.iter().map(|(n, _)| n.name().to_string()))
        .collect();
    let conv = |k: usize| {
        let (ctl, exn, rs) = (&ctl, &exn, &rs);
        async move {
            for e in exn {
                if ctl.all_nodes(e, DEFAULT_SCOPE).await.len() != k {
                    return false;
                }
            }
            rs.iter().all(|(_, ch)| ch.all_nodes().len() == k)
        }
    };
    eventually("5 nodes converge", Duration::from_secs(60), || conv(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 200 samples, the origin rotating over the 5 nodes
    let kind = |i: usize| if i < 3 { "elixir" } else { "rust" };
    for s in 0..200usize {
        let origin = s % 5;
        let role = Role::tuple(&[Role::atom("prop"), Role::int(s as i64)]);
        let t0 = if origin < 3 {
            let t = ctl
                .call(
                    &all[origin],
                    "Elixir.Bench.Handler",
                    "timed_add",
                    vec![role.to_term()],
                )
                .await;
            term::as_int(&t).expect("a time")
        } else {
            let t = now_us();
            rs[origin - 3].1.add_role(role.clone()).await.expect("adds");
            t
        };
        let mut pending: Vec<usize> = (0..5).filter(|&r| r != origin).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let mut still = Vec::new();
            for &r in &pending {
                let t = if r < 3 {
                    let key = term::tuple(vec![a("added"), a(&all[origin]), role.to_term()]);
                    let t = ctl
                        .call(&all[r], "Elixir.Bench.Handler", "time", vec![key])
                        .await;
                    term::as_int(&t)
                } else {
                    seen.lock()
                        .unwrap()
                        .get(&(r - 3, format!("{role}")))
                        .copied()
                };
                match t {
                    Some(t) => emit(
                        out,
                        &format!("{{prop,{},{},{}}}", kind(origin), kind(r), t - t0),
                    ),
                    None => still.push(r),
                }
            }
            pending = still;
            assert!(
                Instant::now() < deadline,
                "sample {s}: no event on {pending:?}"
            );
        }
    }
    eprintln!("propagation: 200 samples done");

    // kill -9: three Elixir victims, one after the other
    let vn: Vec<String> = (0..3).map(|i| unique_name(&format!("victim{i}"))).collect();
    let vconf = our_conf("[:victim]", 2_000, false);
    let mut victims = start_all(&vn, |n| elixir_node(n, &cookie, &vconf));
    for v in &vn {
        ctl.call(&exn[0], "net_kernel", "connect_node", vec![a(v)])
            .await;
    }
    eventually("8 nodes converge", Duration::from_secs(60), || conv(8)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (k, v) in victims.iter_mut().enumerate() {
        let name = v.name.clone();
        let t0 = now_us();
        v.kill9();
        let mut pending: Vec<usize> = (0..5).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let mut still = Vec::new();
            for &r in &pending {
                let t = if r < 3 {
                    let gone = ctl
                        .get_roles(&all[r], &name, DEFAULT_SCOPE)
                        .await
                        .is_empty();
                    let key = term::tuple(vec![a("node_removed"), a(&name)]);
                    let t = ctl
                        .call(&all[r], "Elixir.Bench.Handler", "time", vec![key])
                        .await;
                    term::as_int(&t).filter(|_| gone)
                } else {
                    let gone = rs[r - 3].1.get_roles(&NodeName::new(&name)).is_empty();
                    seen.lock()
                        .unwrap()
                        .get(&(r - 3, format!("down {name}")))
                        .copied()
                        .filter(|_| gone)
                };
                match t {
                    Some(t) => emit(out, &format!("{{kill,{k},{},{}}}", kind(r), t - t0)),
                    None => still.push(r),
                }
            }
            pending = still;
            assert!(
                Instant::now() < deadline,
                "victim {k}: still seen by {pending:?}"
            );
        }
    }
    eprintln!("propagation: kill -9 done");
    for (n, ch) in &rs {
        ch.stop().await;
        n.shutdown().await;
    }
    ctl.node.shutdown().await;
}

// ---- 4. idle traffic -------------------------------------------------------

async fn idle(out: &Path) {
    const PULL_MS: u64 = 1_000;
    const INTERVALS: u64 = 5;
    for legacy in [false, true] {
        for n in [3usize, 5] {
            for s in [1usize, 3] {
                let cookie = unique_cookie();
                let tag = if legacy { "legacy" } else { "ours" };
                let names: Vec<String> = (0..n)
                    .map(|i| unique_name(&format!("idle_{tag}{i}")))
                    .collect();
                let extra: Vec<String> = (2..=s).map(|k| format!("bench_s{k}")).collect();
                let scopes_ex = format!(
                    "[{}]",
                    extra
                        .iter()
                        .map(|x| format!(":{x}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let procs = if legacy {
                    let opts =
                        format!("roles: [:web], scopes: {scopes_ex}, pull_interval: {PULL_MS}");
                    start_all(&names, |nm| legacy_node(nm, &cookie, &opts))
                } else {
                    let conf = our_conf("[:web]", PULL_MS, false)
                        + &format!("Application.put_env(:cluster_helper, :scopes, {scopes_ex})\n");
                    start_all(&names, |nm| elixir_node(nm, &cookie, &conf))
                };
                let ctl = Control::start(&cookie).await;
                for nm in &names {
                    load_probe(&ctl, nm).await;
                    for x in &extra {
                        ctl.ch(nm, "add_role", vec![a("web"), a(x)]).await;
                    }
                }
                connect_all(&ctl, &names).await;
                let mut scopes = vec![DEFAULT_SCOPE.to_string()];
                scopes.extend(extra.iter().cloned());
                eventually("idle cluster converges", Duration::from_secs(60), || {
                    let (ctl, names, scopes) = (&ctl, &names, &scopes);
                    async move {
                        for nm in names {
                            for sc in scopes {
                                if ctl.all_nodes(nm, sc).await.len() != n {
                                    return false;
                                }
                            }
                        }
                        true
                    }
                })
                .await;
                // let the first pulls after connecting pass
                tokio::time::sleep(Duration::from_millis(3 * PULL_MS)).await;
                let me = ctl.node.name().to_string();
                let snap = || {
                    let (ctl, names, me) = (&ctl, &names, &me);
                    async move {
                        let mut tot = (0i64, 0i64);
                        for nm in names {
                            let t = ctl
                                .call(
                                    nm,
                                    "Elixir.Bench.Probe",
                                    "dist_stats",
                                    vec![term::list(vec![a(me)])],
                                )
                                .await;
                            for row in term::as_list(&t).unwrap_or_default() {
                                let el = term::as_tuple(&row).expect("a row").to_vec();
                                tot.0 += term::as_int(&el[1]).unwrap_or(0);
                                tot.1 += term::as_int(&el[2]).unwrap_or(0);
                            }
                        }
                        tot
                    }
                };
                let s0 = snap().await;
                let t0 = Instant::now();
                tokio::time::sleep(Duration::from_millis(INTERVALS * PULL_MS)).await;
                let s1 = snap().await;
                let intervals = t0.elapsed().as_secs_f64() * 1000.0 / PULL_MS as f64;
                let msgs = (s1.0 - s0.0) as f64 / intervals;
                let bytes = (s1.1 - s0.1) as f64 / intervals;
                emit(out, &format!("{{idle,{tag},{n},{s},{msgs:.2},{bytes:.1}}}"));
                eprintln!("idle {tag} N={n} S={s}: {msgs:.1} msgs, {bytes:.0} bytes per interval");
                ctl.node.shutdown().await;
                drop(procs);
            }
        }
    }
}

// ---- 5. throughput ---------------------------------------------------------

async fn throughput(out: &Path) {
    const N: i64 = 100_000;
    const REPS: usize = 5;
    let cookie = unique_cookie();
    let names = vec![unique_name("tp_a"), unique_name("tp_b")];
    let conf = our_conf("[]", 7_000, false);
    let _ex = start_all(&names, |n| elixir_node(n, &cookie, &conf));
    let ctl = Control::start(&cookie).await;
    for nm in &names {
        load_probe(&ctl, nm).await;
        ctl.call(nm, "Elixir.Bench.Probe", "start_sink", vec![])
            .await;
    }
    connect_all(&ctl, &names).await;
    let node = rust_node(&unique_name("tp_rust"), &cookie).await;
    node.connect(&names[0]).await.expect("connects");
    let rust = node.name().to_string();

    // Rust sink: on {m, Last, From, Last, _} sends done to From
    let mut sink = node.mailbox();
    sink.register("bench_rsink").expect("registers");
    tokio::spawn(async move {
        while let Some(m) = sink.recv().await {
            if let Some(el) = term::as_tuple(&m) {
                if el.len() == 5 && term::as_int(&el[1]) == term::as_int(&el[3]) {
                    if let Some(p) = term::as_pid(&el[2]) {
                        sink.send(p.clone(), a("done"));
                    }
                }
            }
        }
    });
    let mut mb = node.mailbox();
    let payload = term::bin(&[7u8; 16]);
    let blast_beam = |from: String, to_name: &str, to_node: String| {
        let ctl = &ctl;
        let dest = term::tuple(vec![a(to_name), a(&to_node)]);
        async move {
            let t = ctl
                .call(
                    &from,
                    "Elixir.Bench.Probe",
                    "blast",
                    vec![dest, term::int(N)],
                )
                .await;
            term::as_int(&t).expect("blast returns microseconds")
        }
    };
    for rep in 0..REPS {
        let us = blast_beam(names[1].clone(), "bench_sink", names[0].clone()).await;
        emit(out, &format!("{{throughput,beam_to_beam,{N},{us}}}"));
        let us = blast_beam(names[0].clone(), "bench_rsink", rust.clone()).await;
        emit(out, &format!("{{throughput,beam_to_rust,{N},{us}}}"));
        let t0 = Instant::now();
        let me = Term::Pid(mb.pid().clone());
        let dest = Dest::Remote {
            name: "bench_sink".into(),
            node: names[0].clone(),
        };
        for i in 0..N {
            mb.send(
                dest.clone(),
                term::tuple(vec![
                    a("m"),
                    term::int(i),
                    me.clone(),
                    term::int(N - 1),
                    payload.clone(),
                ]),
            );
        }
        mb.recv_match(|m| term::is_atom(m, "done"), Some(Duration::from_secs(120)))
            .await
            .expect("BEAM sink answers");
        let us = t0.elapsed().as_micros();
        emit(out, &format!("{{throughput,rust_to_beam,{N},{us}}}"));
        eprintln!("throughput rep {rep} done");
    }
    node.shutdown().await;
    ctl.node.shutdown().await;
}

// ---- 6. scale ----------------------------------------------------------------

fn vmrss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn scale_roles(prefix: &str) -> Vec<Role> {
    (0..10)
        .map(|j| Role::tuple(&[Role::atom("r"), Role::binary(prefix), Role::int(j)]))
        .collect()
}

/// A worker process: `count` Rust nodes, each a ClusterHelper member.
async fn scale_worker(args: &[String]) {
    let (cookie, seed, prefix) = (&args[0], &args[1], &args[2]);
    let count: usize = args[3].parse().expect("count");
    let total: usize = args[4].parse().expect("total");
    let go = PathBuf::from(&args[5]);
    let rss0 = vmrss_kb();
    let mut chs = Vec::new();
    for i in 0..count {
        let node = Node::builder(format!("{prefix}_{i}@127.0.0.1"))
            .cookie(cookie.as_str())
            .start()
            .await
            .expect("node starts");
        // in the scope from the start (no roles yet), as a configured service
        // is; CHBENCH_JOIN_ON_ADD=1 joins it only with the roles (see RESULTS.md)
        let config = Config {
            scopes: if join_on_add() {
                Vec::new()
            } else {
                vec![Scope::new(DEFAULT_SCOPE)]
            },
            ..Config::default()
        };
        let ch = ClusterHelper::start(node.clone(), config)
            .await
            .expect("member starts");
        node.connect(seed).await.expect("connects");
        chs.push((node, ch));
    }
    // full mesh: K Rust + 2 Elixir nodes
    let deadline = Instant::now() + Duration::from_secs(240);
    while chs.iter().any(|(n, _)| n.nodes().len() < total + 1) {
        assert!(Instant::now() < deadline, "no full mesh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready {}", vmrss_kb() - rss0);
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for (n, ch) in &chs {
        let (ch, roles) = (ch.clone(), scale_roles(n.name()));
        tokio::spawn(async move { ch.add_roles(roles).await });
    }
    let want = (total + 2) * 10;
    let t_go = Instant::now();
    let mut diag = false;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = chs.iter().all(|(_, ch)| {
            let nodes = ch.all_nodes();
            nodes.len() == total + 2
                && nodes.iter().map(|n| ch.get_roles(n).len()).sum::<usize>() == want
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence");
        if std::env::var("CHBENCH_DIAG").is_ok() && !diag && t_go.elapsed() > Duration::from_secs(2)
        {
            diag = true;
            for (n, ch) in &chs {
                let nodes = ch.all_nodes();
                let short: Vec<String> = nodes
                    .iter()
                    .filter(|m| ch.get_roles(m).len() != 10)
                    .map(|m| format!("{}:{}", m.as_str(), ch.get_roles(m).len()))
                    .collect();
                let conn = n.nodes();
                let missing: Vec<&String> = conn
                    .iter()
                    .filter(|c| !nodes.iter().any(|m| m.as_str() == c.as_str()))
                    .collect();
                eprintln!(
                    "diag {} sees {} nodes (connected {}); incomplete {:?} missing {:?}",
                    n.name(),
                    nodes.len(),
                    conn.len(),
                    short,
                    missing
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("converged {} {}", now_us(), vmrss_kb() - rss0);
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

struct Worker {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Worker {
    fn line(&self, prefix: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => {
                    return l.split_whitespace().skip(1).map(String::from).collect()
                }
                Ok(_) => {}
                Err(e) => panic!("worker: no `{prefix}` line: {e}"),
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rust nodes one process can hold in a full mesh of `total` nodes, within
/// its open-file limit (two sockets per in-process pair).
fn per_process(total: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    ((limit * 9 / 10) / (total + 3)).max(1)
}

const SETTLE_MS: u64 = 3_000;

/// Whether nodes join the scope only when they add their roles.
fn join_on_add() -> bool {
    std::env::var("CHBENCH_JOIN_ON_ADD").is_ok_and(|v| v == "1")
}

async fn scale(out: &Path, k: usize) {
    let cookie = unique_cookie();
    let names = vec![unique_name("scale_a"), unique_name("scale_b")];
    let mut conf = our_conf("[]", 7_000, true);
    if !join_on_add() {
        conf += "Application.put_env(:cluster_helper, :scopes, [ClusterHelper])\n";
    }
    let _ex = start_all(&names, |n| elixir_node(n, &cookie, &conf));
    let ctl = Control::start(&cookie).await;
    connect_all(&ctl, &names).await;
    let per = per_process(k);
    let nproc = k.div_ceil(per);
    let go = std::env::temp_dir().join(format!("chbench_go_{}_{}", std::process::id(), now_us()));
    let _ = std::fs::remove_file(&go);
    let exe = std::env::current_exe().expect("own path");
    let t_mesh = Instant::now();
    let mut workers = Vec::new();
    for w in 0..nproc {
        let count = per.min(k - w * per);
        let mut c = Command::new(&exe);
        c.arg("scale-worker")
            .args([
                &cookie,
                &names[0],
                &format!("sc{}_{}_w{w}", std::process::id(), k),
            ])
            .args([count.to_string(), k.to_string()])
            .arg(&go)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("worker starts");
        let outp = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(outp).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        workers.push(Worker { child, lines: rx });
    }
    let ready_rss: i64 = workers
        .iter()
        .map(|w| {
            w.line("ready", Duration::from_secs(300))[0]
                .parse::<i64>()
                .unwrap_or(0)
        })
        .sum();
    let mesh_ms = t_mesh.elapsed().as_millis();
    // let :pg membership settle on the new links before the roles are added
    tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    let want = ((k + 2) * 10) as i64;
    let t0 = now_us();
    std::fs::write(&go, b"go").expect("go file");
    for nm in &names {
        let roles: Vec<Term> = scale_roles(nm).iter().map(Role::to_term).collect();
        ctl.ch(nm, "add_roles", vec![term::list(roles)]).await;
    }
    let mut ex_done = [0i64; 2];
    let deadline = Instant::now() + Duration::from_secs(300);
    while ex_done.contains(&0) {
        for (i, nm) in names.iter().enumerate() {
            if ex_done[i] == 0 {
                let p = ctl.call(nm, "Elixir.Bench.Handler", "pairs", vec![]).await;
                if term::as_int(&p) == Some(want) {
                    ex_done[i] = now_us();
                }
            }
        }
        assert!(Instant::now() < deadline, "Elixir nodes do not converge");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut last = *ex_done.iter().max().unwrap();
    let mut rss = 0i64;
    for w in &workers {
        let l = w.line("converged", Duration::from_secs(300));
        last = last.max(l[0].parse().unwrap_or(0));
        rss += l[1].parse::<i64>().unwrap_or(0);
    }
    let conv_ms = (last - t0) as f64 / 1000.0;
    let ex_ms = (*ex_done.iter().max().unwrap() - t0) as f64 / 1000.0;
    let kb_per_node = rss as f64 / k as f64;
    let ready_kb = ready_rss as f64 / k as f64;
    emit(
        out,
        &format!("{{scale,{k},{nproc},{conv_ms:.1},{ex_ms:.1},{mesh_ms},{kb_per_node:.1},{ready_kb:.1}}}"),
    );
    eprintln!("scale K={k} ({nproc} processes): converged in {conv_ms:.1} ms (Elixir {ex_ms:.1} ms), mesh {mesh_ms} ms, {kb_per_node:.0} KiB/node");
    drop(workers);
    let _ = std::fs::remove_file(&go);
    ctl.node.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    if cmd == "scale-worker" {
        return scale_worker(&args[1..]).await;
    }
    let out = PathBuf::from(args.get(1).expect("usage: chbench CMD OUT [K]"));
    match cmd {
        "propagation" => propagation(&out).await,
        "idle" => idle(&out).await,
        "throughput" => throughput(&out).await,
        "scale" => scale(&out, args[2].parse().expect("K")).await,
        _ => panic!("unknown command {cmd}"),
    }
}
