//! The `cluster-helper` command line: run a ClusterHelper member, or print
//! a cluster's role table. The binary is a one-line wrapper around [`main`]
//! (tests build their own wrapper, so they can run it as a child process).
//!
//! ```text
//! cluster-helper node --name rust1@127.0.0.1 --cookie C --role web --role '{shard,1}' --connect app@127.0.0.1
//! cluster-helper roles --connect app@127.0.0.1 --cookie C [--scope S] [--json]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cnode::term::{as_atom, as_list, atom};
use cnode::Node;

use crate::{parse_role, scope_from_user, ClusterHelper, Config, Event, Role, Scope};

#[derive(Parser)]
#[command(
    name = "cluster-helper",
    version,
    about = "ClusterHelper from the command line"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a member until SIGINT/SIGTERM, logging events; leave cleanly on shutdown.
    /// Lines on standard input change it at run time: `add ROLE`, `remove ROLE`,
    /// `join SCOPE`, `leave SCOPE`, `roles`.
    Node {
        /// Node name, `name@host` (long names) or `name@shorthost`.
        #[arg(long)]
        name: String,
        /// Cookie (default: ~/.erlang.cookie, as erl does).
        #[arg(long)]
        cookie: Option<String>,
        /// A role in Erlang term syntax (`web`, `'"cache"'`, `{shard,1}`, `42`); repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A scope to join (default `ClusterHelper`); roles go into every given scope. Repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A node to connect to at start; repeatable.
        #[arg(long = "connect")]
        connect: Vec<String>,
        /// Interval of the periodic sync, in milliseconds.
        #[arg(long, default_value_t = 7000)]
        pull_interval: u64,
        /// Distribution port (default: any).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Connect as a hidden node, print the scope's table (node -> roles) and exit.
    Roles {
        /// A node of the cluster to ask.
        #[arg(long)]
        connect: String,
        /// Cookie (default: ~/.erlang.cookie).
        #[arg(long)]
        cookie: Option<String>,
        /// Scope (default `ClusterHelper`).
        #[arg(long, default_value = "ClusterHelper")]
        scope: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the node.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

/// Parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,cluster_helper_node=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        match cli.cmd {
            Cmd::Node {
                name,
                cookie,
                roles,
                scopes,
                connect,
                pull_interval,
                port,
            } => run_node(name, cookie, roles, scopes, connect, pull_interval, port).await,
            Cmd::Roles {
                connect,
                cookie,
                scope,
                json,
                timeout,
            } => show_roles(connect, cookie, scope, json, Duration::from_secs(timeout)).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_roles(texts: &[String]) -> Result<Vec<Role>, String> {
    texts
        .iter()
        .map(|t| parse_role(t).map_err(|e| format!("bad role `{t}`: {e}")))
        .collect()
}

fn builder(name: &str, cookie: Option<String>) -> cnode::NodeBuilder {
    let b = Node::builder(name);
    match cookie {
        Some(c) => b.cookie(c),
        None => b,
    }
}

async fn run_node(
    name: String,
    cookie: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    connect: Vec<String>,
    pull_interval: u64,
    port: Option<u16>,
) -> Result<(), String> {
    let roles = parse_roles(&roles)?;
    let scopes: Vec<Scope> = scopes.iter().map(|s| scope_from_user(s)).collect();
    let mut b = builder(&name, cookie);
    if let Some(p) = port {
        b = b.port(p);
    }
    let node = b
        .start()
        .await
        .map_err(|e| format!("cannot start node {name}: {e}"))?;
    for peer in &connect {
        node.connect(peer).await.map_err(|e| e.to_string())?;
    }
    let config = Config {
        roles: Vec::new(),
        scopes: scopes.clone(),
        pull_interval: Duration::from_millis(pull_interval.max(10)),
        ..Config::default()
    };
    let ch = ClusterHelper::start(node.clone(), config)
        .await
        .map_err(|e| e.to_string())?;
    let mut events = ch.events();
    let targets = if scopes.is_empty() {
        vec![ch.default_scope().clone()]
    } else {
        scopes
    };
    if !roles.is_empty() {
        for s in &targets {
            ch.add_roles_in(roles.clone(), s.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    println!(
        "node {} up (scopes: {})",
        node.name(),
        names(&ch.list_scopes())
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut stdin =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    let mut stdin_open = true;
    loop {
        tokio::select! {
            Some(e) = events.recv() => print_event(&e),
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(l)) => command(&ch, &targets, l.trim()).await,
                // End of input (or none, as under `< /dev/null`): keep running.
                _ => stdin_open = false,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    println!("leaving");
    ch.stop().await;
    node.shutdown().await;
    Ok(())
}

/// One line typed on the running node's standard input:
/// `add ROLE`, `remove ROLE`, `join SCOPE`, `leave SCOPE`, `roles`.
/// Roles go to the node's scopes (as with `--role`). Answers `ok: ...` or `error: ...`.
async fn command(ch: &ClusterHelper, scopes: &[Scope], line: &str) {
    let (verb, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let arg = arg.trim();
    let result: Result<String, String> = match verb {
        "" => return,
        "add" | "remove" => match parse_role(arg) {
            Ok(role) => {
                let mut r = Ok(());
                for s in scopes {
                    r = r.and(if verb == "add" {
                        ch.add_roles_in(vec![role.clone()], s.clone()).await
                    } else {
                        ch.remove_roles_in(vec![role.clone()], s.clone()).await
                    });
                }
                r.map(|()| format!("{verb} {role}"))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("bad role `{arg}`: {e}")),
        },
        "join" => ch
            .join_scope(scope_from_user(arg))
            .await
            .map(|()| format!("joined {arg}"))
            .map_err(|e| e.to_string()),
        "leave" => ch
            .leave_scope(scope_from_user(arg))
            .await
            .map(|()| format!("left {arg}"))
            .map_err(|e| e.to_string()),
        "roles" => {
            let mut out = Vec::new();
            for s in scopes {
                for n in ch.all_nodes_in(s) {
                    let roles: Vec<String> = ch
                        .get_roles_in(&n, s)
                        .iter()
                        .map(|r| r.to_string())
                        .collect();
                    out.push(format!("{} {n}: {}", scope_name(s), roles.join(", ")));
                }
            }
            Ok(out.join("\n"))
        }
        other => Err(format!(
            "unknown command `{other}` (add ROLE, remove ROLE, join SCOPE, leave SCOPE, roles)"
        )),
    };
    match result {
        Ok(m) => println!("ok: {m}"),
        Err(e) => println!("error: {e}"),
    }
}

fn names(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str().trim_start_matches("Elixir."))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scope_name(scope: &Scope) -> &str {
    scope.as_str().trim_start_matches("Elixir.")
}

fn print_event(e: &Event) {
    use std::io::Write;
    let line = match e {
        Event::RoleAdded { scope, node, role } => {
            format!("role added: {node} {role} (scope {})", scope_name(scope))
        }
        Event::RoleRemoved { scope, node, role } => {
            format!("role removed: {node} {role} (scope {})", scope_name(scope))
        }
        Event::NodeAdded { scope, node } => {
            format!("node added: {node} (scope {})", scope_name(scope))
        }
        Event::NodeRemoved { scope, node } => {
            format!("node removed: {node} (scope {})", scope_name(scope))
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn show_roles(
    connect: String,
    cookie: Option<String>,
    scope: String,
    json: bool,
    timeout: Duration,
) -> Result<(), String> {
    let host = connect
        .split_once('@')
        .map(|(_, h)| h.to_string())
        .ok_or_else(|| format!("`{connect}` is not name@host"))?;
    let me = format!("cluster_helper_cli_{}@{host}", std::process::id());
    let node = builder(&me, cookie)
        .hidden(true)
        .mesh(false)
        .start()
        .await
        .map_err(|e| format!("cannot start a node: {e}"))?;
    let result = async {
        tokio::time::timeout(timeout, node.connect(&connect))
            .await
            .map_err(|_| format!("cannot connect to {connect}: timed out"))?
            .map_err(|e| e.to_string())?;
        let scope = scope_from_user(&scope);
        let s = atom(scope.as_str());
        let nodes = node
            .erpc_call(
                &connect,
                "Elixir.ClusterHelper",
                "all_nodes",
                vec![s.clone()],
                timeout,
            )
            .await
            .map_err(|e| format!("{connect} did not answer ClusterHelper.all_nodes: {e}"))?;
        let nodes: Vec<String> = as_list(&nodes)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| as_atom(n).map(String::from))
            .collect();
        let mut table = Vec::new();
        for n in nodes {
            let roles = node
                .erpc_call(
                    &connect,
                    "Elixir.ClusterHelper",
                    "get_roles",
                    vec![atom(&n), s.clone()],
                    timeout,
                )
                .await
                .map_err(|e| format!("{connect} did not answer ClusterHelper.get_roles: {e}"))?;
            let roles: Vec<String> = as_list(&roles)
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    Role::from_term(r)
                        .map(|r| r.to_string())
                        .unwrap_or_else(|_| format!("{r}"))
                })
                .collect();
            table.push((n, roles));
        }
        Ok::<_, String>((scope, table))
    }
    .await;
    node.shutdown().await;
    let (scope, table) = result?;
    if json {
        let nodes: Vec<String> = table
            .iter()
            .map(|(n, rs)| {
                let roles: Vec<String> = rs.iter().map(|r| json_str(r)).collect();
                format!("{}:[{}]", json_str(n), roles.join(","))
            })
            .collect();
        println!(
            "{{\"scope\":{},\"nodes\":{{{}}}}}",
            json_str(scope.as_str()),
            nodes.join(",")
        );
    } else {
        println!("scope {}", scope_name(&scope));
        let w = table.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
        println!("{:w$}  roles", "node");
        for (n, rs) in &table {
            println!("{n:w$}  {}", rs.join(", "));
        }
    }
    Ok(())
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
