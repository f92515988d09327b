//! The `cluster-helper` command line against real nodes: the table, and
//! clear errors for a bad cookie, an unreachable node and a bad role.

use std::process::Command;
use std::time::Duration;

use rust_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_ch-test-node");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_prints_the_table_and_json() {
    let cookie = unique_cookie();
    let en = unique_name("excli");
    let _e = elixir_node(
        &en,
        &cookie,
        "Application.put_env(:cluster_helper, :roles, [:web, {:shard, 2}])",
    );
    let rn = unique_name("rscli");
    let _r = cli_node(
        BIN,
        &rn,
        &cookie,
        &["--role", "'Big Worker'", "--connect", &en],
    );
    let ctl = Control::start(&cookie).await;
    eventually("ex sees the CLI node", Duration::from_secs(10), || async {
        ctl.all_nodes(&en, DEFAULT_SCOPE).await.len() == 2
    })
    .await;
    let (code, out, err) = run(&["roles", "--connect", &en, "--cookie", &cookie]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains(&format!("{en}  ")) && out.contains("{shard,2}, web"),
        "{out}"
    );
    assert!(out.contains("'Big Worker'"), "{out}");
    // The Rust node answers the same questions.
    let (code, out, err) = run(&["roles", "--connect", &rn, "--cookie", &cookie, "--json"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.starts_with("{\"scope\":\"Elixir.ClusterHelper\",\"nodes\":{"),
        "{out}"
    );
    assert!(
        out.contains(&format!("\"{en}\":[\"{{shard,2}}\",\"web\"]")),
        "{out}"
    );
    assert!(
        out.contains(&format!("\"{rn}\":[\"'Big Worker'\"]")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_a_clear_error() {
    let cookie = unique_cookie();
    let en = unique_name("excookie");
    let _e = elixir_node(&en, &cookie, "");
    let (code, _, err) = run(&[
        "roles",
        "--connect",
        &en,
        "--cookie",
        "not-the-cookie",
        "--timeout",
        "5",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("cannot connect to {en}")), "{err}");
    let (code, _, err) = run(&[
        "node",
        "--name",
        &unique_name("rsbad"),
        "--cookie",
        "nope",
        "--connect",
        &en,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("cannot connect to {en}")), "{err}");
}

#[test]
fn an_unreachable_node_is_a_clear_error() {
    ensure_epmd();
    let ghost = unique_name("nobody_here");
    let (code, _, err) = run(&[
        "roles",
        "--connect",
        &ghost,
        "--cookie",
        "c",
        "--timeout",
        "5",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("cannot connect to {ghost}")), "{err}");
}

#[test]
fn a_bad_role_is_refused_with_position_and_reason() {
    let (code, _, err) = run(&[
        "node",
        "--name",
        &unique_name("rsrole"),
        "--cookie",
        "c",
        "--role",
        "{shard, 1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad role `{shard, 1`") && err.contains("position 9"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "node",
        "--name",
        &unique_name("rsrole"),
        "--cookie",
        "c",
        "--role",
        "Web",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("variable"), "{err}");
}
