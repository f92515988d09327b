//! EPMD lifecycle, on a private EPMD port so the machine's epmd is never
//! touched: the node starts `epmd -daemon` when none answers, and registers
//! again when EPMD dies and comes back. Its own test binary, because it sets
//! `ERL_EPMD_PORT` for the whole process.

mod support;
use cnode::Node;
use std::time::Duration;
use support::*;

/// PIDs of epmd processes whose environment names our port.
fn epmd_pids(port: u16) -> Vec<i32> {
    let want = format!("ERL_EPMD_PORT={port}");
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "epmd" {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn kill_epmds(port: u16) {
    for pid in epmd_pids(port) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

struct EpmdGuard(u16);
impl Drop for EpmdGuard {
    fn drop(&mut self) {
        kill_epmds(self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_epmd_and_reregisters() {
    init_log();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::env::set_var("ERL_EPMD_PORT", port.to_string());
    let _guard = EpmdGuard(port);
    let name = unique("epmd");
    let alive = name.split('@').next().unwrap().to_owned();
    let node = Node::builder(&name)
        .cookie(COOKIE)
        .start()
        .await
        .expect("start with no epmd running");
    assert!(!epmd_pids(port).is_empty(), "the node started epmd");
    assert_eq!(
        cnode::epmd::lookup(&alive, "127.0.0.1").await.unwrap(),
        node.port()
    );
    // EPMD dies and comes back: the node registers again.
    kill_epmds(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::process::Command::new("epmd").arg("-daemon").status();
    let our_port = node.port();
    let back = eventually(30, || {
        let a = alive.clone();
        async move { cnode::epmd::lookup(&a, "127.0.0.1").await.ok() == Some(our_port) }
    })
    .await;
    assert!(back, "node did not register again");
    node.shutdown().await;
    let gone = eventually(10, || {
        let a = alive.clone();
        async move { cnode::epmd::lookup(&a, "127.0.0.1").await.is_err() }
    })
    .await;
    assert!(gone);
}
