//! OTP 27 / Elixir 1.18 peers in a mixed cluster, driven from Rust: the
//! host's OTP 25 Elixir node and an OTP 27 Elixir node (the Debian trixie
//! chroot of `scripts/otp27.sh`), both running our library with the
//! host-built NIF, next to a Rust member; and the 0.5.1 stand-in running on
//! OTP 27 next to our OTP 25 node and a Rust member.
//!
//! They need the chroot set up and mounted with the repository bound at its
//! own path, so they are `#[ignore]`d in a plain `cargo test`;
//! `scripts/test_otp27.sh` (run by `scripts/test.sh`) sets that up and runs
//! them with `-- --ignored`.
//!
//! Pull intervals are a minute: a change seen within `WAIT` travelled by
//! broadcast (or by the initial sync at node-up), not by the periodic pull.

use std::time::Duration;

use rust_tests::*;

const LONG_PULL: &str = "Application.put_env(:cluster_helper, :pull_interval, 60_000)";
const WAIT: Duration = Duration::from_secs(15);

fn cfg(roles: &str) -> String {
    format!("{LONG_PULL}\nApplication.put_env(:cluster_helper, :roles, {roles})")
}

async fn rust_member(name: &str, cookie: &str, roles: Vec<Role>) -> ClusterHelper {
    let node = rust_node(name, cookie).await;
    let config = Config {
        roles,
        pull_interval: Duration::from_secs(60),
        ..Config::default()
    };
    ClusterHelper::start(node, config)
        .await
        .expect("rust member starts")
}

/// `erlang:system_info(otp_release)` of `node`.
async fn otp_release(ctl: &Control, node: &str) -> String {
    let t = ctl
        .call(
            node,
            "erlang",
            "system_info",
            vec![term::atom("otp_release")],
        )
        .await;
    charlist(&t).unwrap_or_else(|| panic!("otp_release of {node}: {t}"))
}

/// `System.version()` of `node`.
async fn elixir_version(ctl: &Control, node: &str) -> String {
    let t = ctl.call(node, "Elixir.System", "version", vec![]).await;
    match &t {
        Term::Binary(b) => String::from_utf8_lossy(&b.bytes).into_owned(),
        _ => panic!("System.version() of {node}: {t}"),
    }
}

/// Asserts `node` runs OTP 27 with Elixir 1.18 and `other` does not.
async fn assert_versions(ctl: &Control, node27: &str, other: &str) {
    assert_eq!(
        otp_release(ctl, node27).await,
        "27",
        "{node27} is not OTP 27"
    );
    let ex = elixir_version(ctl, node27).await;
    assert!(ex.starts_with("1.18."), "{node27} runs Elixir {ex}");
    assert_ne!(
        otp_release(ctl, other).await,
        "27",
        "{other} should be the host's OTP"
    );
}

/// An OTP 25 and an OTP 27 Elixir node (ours) and a Rust member, meshed and
/// converged on everyone's initial roles.
struct Trio {
    cookie: String,
    ctl: Control,
    e25n: String,
    e25: Proc,
    e27n: String,
    e27: Proc,
    r: ClusterHelper,
    rn: String,
}

async fn trio(prefix: &str) -> Trio {
    let cookie = unique_cookie();
    let e25n = unique_name(&format!("{prefix}25"));
    let e27n = unique_name(&format!("{prefix}27"));
    let e25 = elixir_node(&e25n, &cookie, &cfg("[:web, {:otp, 25}]"));
    let e27 = elixir_node_with(
        &elixir27_spec(),
        &e27n,
        &cookie,
        &cfg("[:db, {:otp, 27}, \"from 27\"]"),
    );
    let ctl = Control::start(&cookie).await;
    assert_versions(&ctl, &e27n, &e25n).await;

    // The OTP 27 node joins the OTP 25 one; the Rust node dials only the
    // OTP 25 node and meshes with the OTP 27 one through it.
    let up = ctl
        .call(&e27n, "net_kernel", "connect_node", vec![term::atom(&e25n)])
        .await;
    assert!(term::is_atom(&up, "true"), "OTP 27 -> OTP 25 connect: {up}");
    let r = rust_member(
        &unique_name(&format!("{prefix}rs")),
        &cookie,
        vec![Role::atom("rusty")],
    )
    .await;
    let rn = r.local_node().to_string();
    r.node()
        .connect(&e25n)
        .await
        .expect("connect to the OTP 25 node");
    eventually(
        "the Rust node meshes with the OTP 27 node",
        WAIT,
        || async { r.node().nodes().contains(&e27n) },
    )
    .await;

    // Initial sync, every way.
    let all = sorted(vec![e25n.clone(), e27n.clone(), rn.clone()]);
    for e in [&e25n, &e27n] {
        eventually("each Elixir node sees all three members", WAIT, || async {
            ctl.all_nodes(e, DEFAULT_SCOPE).await == all
        })
        .await;
        assert_eq!(
            ctl.get_nodes(e, &Role::atom("rusty"), DEFAULT_SCOPE).await,
            vec![rn.clone()]
        );
    }
    eventually("OTP 25 sees OTP 27's roles", WAIT, || async {
        ctl.get_roles(&e25n, &e27n, DEFAULT_SCOPE).await.len() == 3
    })
    .await;
    assert_eq!(
        ctl.get_nodes(&e25n, &Role::binary("from 27"), DEFAULT_SCOPE)
            .await,
        vec![e27n.clone()]
    );
    eventually("OTP 27 sees OTP 25's roles", WAIT, || async {
        ctl.get_nodes(&e27n, &Role::atom("web"), DEFAULT_SCOPE)
            .await
            == vec![e25n.clone()]
            && ctl.get_roles(&e27n, &e25n, DEFAULT_SCOPE).await.len() == 2
    })
    .await;
    let otp27 = Role::tuple(&[Role::atom("otp"), Role::int(27)]);
    eventually("Rust sees both Elixir nodes' roles", WAIT, || async {
        r.get_nodes(&Role::atom("web")) == vec![NodeName::new(&e25n)]
            && r.get_nodes(&otp27) == vec![NodeName::new(&e27n)]
            && r.get_roles(&NodeName::new(&e27n)).len() == 3
    })
    .await;
    assert_eq!(r.all_nodes().len(), 3);
    Trio {
        cookie,
        ctl,
        e25n,
        e25,
        e27n,
        e27,
        r,
        rn,
    }
}

/// `ClusterHelper.add_role(role)` / `remove_role(role)` on an Elixir node.
async fn elixir_role(ctl: &Control, node: &str, add: bool, role: &Role) {
    let f = if add { "add_role" } else { "remove_role" };
    let t = ctl.ch(node, f, vec![role.to_term()]).await;
    assert!(term::is_atom(&t, "ok"), "{f} on {node}: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OTP 27 chroot: scripts/test_otp27.sh runs them"]
async fn otp25_and_otp27_elixir_nodes_and_a_rust_node_converge() {
    let Trio {
        ctl,
        e25n,
        e25: _e25,
        e27n,
        mut e27,
        r,
        rn,
        ..
    } = trio("cv").await;
    let (n25, n27) = (NodeName::new(&e25n), NodeName::new(&e27n));

    // Live, OTP 27 -> OTP 25 and Rust.
    let from27 = Role::tuple(&[Role::atom("live27"), Role::binary("x")]);
    elixir_role(&ctl, &e27n, true, &from27).await;
    eventually("OTP 25 sees a live OTP 27 role", WAIT, || async {
        ctl.get_nodes(&e25n, &from27, DEFAULT_SCOPE).await == vec![e27n.clone()]
    })
    .await;
    eventually("Rust sees a live OTP 27 role", WAIT, || async {
        r.get_nodes(&from27) == vec![n27.clone()]
    })
    .await;
    elixir_role(&ctl, &e27n, false, &from27).await;
    eventually(
        "OTP 25 and Rust see a live OTP 27 removal",
        WAIT,
        || async {
            ctl.get_nodes(&e25n, &from27, DEFAULT_SCOPE)
                .await
                .is_empty()
                && r.get_nodes(&from27).is_empty()
        },
    )
    .await;

    // Live, OTP 25 -> OTP 27 and Rust.
    let from25 = Role::atom("live25");
    elixir_role(&ctl, &e25n, true, &from25).await;
    eventually("OTP 27 and Rust see a live OTP 25 role", WAIT, || async {
        ctl.get_nodes(&e27n, &from25, DEFAULT_SCOPE).await == vec![e25n.clone()]
            && r.get_nodes(&from25) == vec![n25.clone()]
    })
    .await;
    elixir_role(&ctl, &e25n, false, &from25).await;
    eventually(
        "OTP 27 and Rust see a live OTP 25 removal",
        WAIT,
        || async {
            ctl.get_nodes(&e27n, &from25, DEFAULT_SCOPE)
                .await
                .is_empty()
                && r.get_nodes(&from25).is_empty()
        },
    )
    .await;

    // Live, Rust -> both Elixir nodes.
    let fromrs = Role::tuple(&[Role::atom("live_rs"), Role::int(1)]);
    r.add_role(fromrs.clone()).await.unwrap();
    for e in [&e25n, &e27n] {
        eventually("each Elixir node sees a live Rust role", WAIT, || async {
            ctl.get_nodes(e, &fromrs, DEFAULT_SCOPE).await == vec![rn.clone()]
        })
        .await;
    }
    r.remove_role(fromrs.clone()).await.unwrap();
    for e in [&e25n, &e27n] {
        eventually(
            "each Elixir node sees a live Rust removal",
            WAIT,
            || async { ctl.get_nodes(e, &fromrs, DEFAULT_SCOPE).await.is_empty() },
        )
        .await;
    }

    // Another scope, joined on the OTP 27 node at run time.
    let other = Scope::new("otp27_other_scope");
    r.add_roles_in(vec![Role::atom("rs_other")], other.clone())
        .await
        .unwrap();
    let t = ctl
        .ch(
            &e27n,
            "add_role",
            vec![
                Role::atom("e27_other").to_term(),
                term::atom(other.as_str()),
            ],
        )
        .await;
    assert!(term::is_atom(&t, "ok"), "{t}");
    eventually("OTP 27 and Rust meet in the other scope", WAIT, || async {
        ctl.get_nodes(&e27n, &Role::atom("rs_other"), other.as_str())
            .await
            == vec![rn.clone()]
            && r.get_nodes_in(&Role::atom("e27_other"), &other) == vec![n27.clone()]
            && r.get_nodes(&Role::atom("e27_other")).is_empty()
    })
    .await;

    // kill -9 of the OTP 27 node: nodedown on the OTP 25 node and on Rust.
    e27.kill9();
    eventually("OTP 25 drops the killed OTP 27 node", WAIT, || async {
        ctl.all_nodes(&e25n, DEFAULT_SCOPE).await == sorted(vec![e25n.clone(), rn.clone()])
            && ctl
                .get_nodes(&e25n, &Role::atom("db"), DEFAULT_SCOPE)
                .await
                .is_empty()
    })
    .await;
    eventually("Rust drops the killed OTP 27 node", WAIT, || async {
        r.get_roles(&n27).is_empty()
            && r.get_roles_in(&n27, &other).is_empty()
            && !r.all_nodes().contains(&n27)
    })
    .await;
    r.stop().await;
    r.node().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OTP 27 chroot: scripts/test_otp27.sh runs them"]
async fn otp27_node_sees_the_otp25_node_die_and_the_rust_node_leave() {
    let Trio {
        cookie,
        ctl,
        e25n,
        mut e25,
        e27n,
        e27: _e27,
        r,
        rn,
    } = trio("nd").await;

    // kill -9 of the OTP 25 node: the OTP 27 node and Rust drop it.
    e25.kill9();
    eventually("OTP 27 drops the killed OTP 25 node", WAIT, || async {
        ctl.all_nodes(&e27n, DEFAULT_SCOPE).await == sorted(vec![e27n.clone(), rn.clone()])
            && ctl
                .get_nodes(&e27n, &Role::atom("web"), DEFAULT_SCOPE)
                .await
                .is_empty()
    })
    .await;
    eventually("Rust drops the killed OTP 25 node", WAIT, || async {
        r.get_roles(&NodeName::new(&e25n)).is_empty()
    })
    .await;

    // A new OTP 25 node joins the OTP 27 one: initial sync again.
    let e25bn = unique_name("nd25b");
    let _e25b = elixir_node(&e25bn, &cookie, &cfg("[:web_again]"));
    let up = ctl
        .call(
            &e25bn,
            "net_kernel",
            "connect_node",
            vec![term::atom(&e27n)],
        )
        .await;
    assert!(term::is_atom(&up, "true"), "OTP 25 -> OTP 27 connect: {up}");
    eventually("OTP 27 and Rust see the new OTP 25 node", WAIT, || async {
        ctl.get_nodes(&e27n, &Role::atom("web_again"), DEFAULT_SCOPE)
            .await
            == vec![e25bn.clone()]
            && r.get_nodes(&Role::atom("web_again")) == vec![NodeName::new(&e25bn)]
    })
    .await;
    eventually("the new OTP 25 node sees OTP 27 and Rust", WAIT, || async {
        ctl.all_nodes(&e25bn, DEFAULT_SCOPE).await
            == sorted(vec![e25bn.clone(), e27n.clone(), rn.clone()])
    })
    .await;

    // The Rust member stops cleanly, then its node goes: the OTP 27 node
    // drops it.
    r.stop().await;
    r.node().shutdown().await;
    eventually("OTP 27 drops the stopped Rust node", WAIT, || async {
        ctl.get_nodes(&e27n, &Role::atom("rusty"), DEFAULT_SCOPE)
            .await
            .is_empty()
            && !ctl.all_nodes(&e27n, DEFAULT_SCOPE).await.contains(&rn)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OTP 27 chroot: scripts/test_otp27.sh runs them"]
async fn the_0_5_1_stand_in_on_otp27_lives_with_our_otp25_node_and_rust() {
    let cookie = unique_cookie();
    let ln = unique_name("legacy27");
    let e25n = unique_name("ours25");
    let mut l = legacy_node_with(
        &elixir27_spec(),
        &ln,
        &cookie,
        "roles: [:legacy_role, {:zone, \"eu\"}], pull_interval: 60_000",
    );
    let _e25 = elixir_node(&e25n, &cookie, &cfg("[:ours]"));
    let ctl = Control::start(&cookie).await;
    assert_versions(&ctl, &ln, &e25n).await;
    // Only the stand-in's ClusterHelper is loaded there: it is no node of ours.
    let ours = ctl
        .call(
            &ln,
            "code",
            "is_loaded",
            vec![term::atom("Elixir.ClusterHelper.Native")],
        )
        .await;
    assert!(
        term::is_atom(&ours, "false"),
        "our NIF module on the 0.5.1 node: {ours}"
    );

    let up = ctl
        .call(&e25n, "net_kernel", "connect_node", vec![term::atom(&ln)])
        .await;
    assert!(term::is_atom(&up, "true"), "OTP 25 -> OTP 27 connect: {up}");
    let r = rust_member(&unique_name("rs51"), &cookie, vec![Role::atom("rusty")]).await;
    let rn = r.local_node().to_string();
    r.node()
        .connect(&ln)
        .await
        .expect("connect to the 0.5.1 node");
    let (nl, n25) = (NodeName::new(&ln), NodeName::new(&e25n));

    // Initial sync, every way.
    eventually(
        "our OTP 25 node pulls the 0.5.1 node's roles",
        WAIT,
        || async { ctl.get_roles(&e25n, &ln, DEFAULT_SCOPE).await.len() == 2 },
    )
    .await;
    eventually("Rust pulls the 0.5.1 node's roles", WAIT, || async {
        r.get_roles(&nl).len() == 2
    })
    .await;
    eventually("the 0.5.1 node knows both of ours", WAIT, || async {
        ctl.get_nodes(&ln, &Role::atom("ours"), DEFAULT_SCOPE).await == vec![e25n.clone()]
            && ctl
                .get_nodes(&ln, &Role::atom("rusty"), DEFAULT_SCOPE)
                .await
                == vec![rn.clone()]
    })
    .await;
    eventually("ours see each other", WAIT, || async {
        r.get_nodes(&Role::atom("ours")) == vec![n25.clone()]
            && ctl
                .get_nodes(&e25n, &Role::atom("rusty"), DEFAULT_SCOPE)
                .await
                == vec![rn.clone()]
    })
    .await;

    // Live, 0.5.1 (OTP 27) -> ours.
    ctl.ch(&ln, "add_role", vec![Role::atom("legacy_live").to_term()])
        .await;
    eventually("ours see a live 0.5.1 role", WAIT, || async {
        r.get_nodes(&Role::atom("legacy_live")) == vec![nl.clone()]
            && ctl
                .get_nodes(&e25n, &Role::atom("legacy_live"), DEFAULT_SCOPE)
                .await
                == vec![ln.clone()]
    })
    .await;
    ctl.ch(
        &ln,
        "remove_role",
        vec![Role::atom("legacy_live").to_term()],
    )
    .await;
    eventually("ours see a live 0.5.1 removal", WAIT, || async {
        r.get_nodes(&Role::atom("legacy_live")).is_empty()
            && ctl
                .get_nodes(&e25n, &Role::atom("legacy_live"), DEFAULT_SCOPE)
                .await
                .is_empty()
    })
    .await;

    // Live, ours -> 0.5.1 (its own {:new_roles, ...} / {:remove_roles, ...}).
    elixir_role(&ctl, &e25n, true, &Role::binary("ours live")).await;
    r.add_role(Role::atom("rust_live")).await.unwrap();
    eventually("0.5.1 sees live roles of ours", WAIT, || async {
        ctl.get_nodes(&ln, &Role::binary("ours live"), DEFAULT_SCOPE)
            .await
            == vec![e25n.clone()]
            && ctl
                .get_nodes(&ln, &Role::atom("rust_live"), DEFAULT_SCOPE)
                .await
                == vec![rn.clone()]
    })
    .await;
    elixir_role(&ctl, &e25n, false, &Role::binary("ours live")).await;
    r.remove_role(Role::atom("rust_live")).await.unwrap();
    eventually("0.5.1 sees live removals of ours", WAIT, || async {
        ctl.get_nodes(&ln, &Role::binary("ours live"), DEFAULT_SCOPE)
            .await
            .is_empty()
            && ctl
                .get_nodes(&ln, &Role::atom("rust_live"), DEFAULT_SCOPE)
                .await
                .is_empty()
    })
    .await;

    // It answers our generation question as 0.5.1 does.
    let g = ctl
        .call(
            &ln,
            "Elixir.ClusterHelper.NodeConfig",
            "__get_generation__",
            vec![term::atom(DEFAULT_SCOPE)],
        )
        .await;
    assert!(term::as_int(&g).is_some_and(|g| g >= 1), "generation {g}");

    // kill -9 of the 0.5.1 node: ours drop it.
    l.kill9();
    eventually("ours drop the killed 0.5.1 node", WAIT, || async {
        r.get_roles(&nl).is_empty()
            && ctl
                .get_nodes(&e25n, &Role::atom("legacy_role"), DEFAULT_SCOPE)
                .await
                .is_empty()
    })
    .await;
    r.stop().await;
    r.node().shutdown().await;
}
