//! Two sync engines wired back to back in memory: what a driver does, in
//! thirty lines. `cargo run -p cluster_helper_core --example two_engines`
use cluster_helper_core::{Action, Event, Group, Input, NodeName, Role, Scope, SyncEngine};

/// Carries out actions of `from` on `to` (a perfect network), printing events.
fn deliver(from: &SyncEngine, to: &mut SyncEngine, actions: Vec<Action>) -> Vec<Action> {
    let mut back = Vec::new();
    for a in actions {
        match a {
            Action::Send { msg, .. } => back.extend(to.handle(Input::Message(msg)).unwrap()),
            Action::JoinGroups(scope) => {
                for group in [Group::Ours, Group::AllNodes] {
                    let node = from.node().clone();
                    back.extend(
                        to.handle(Input::Member {
                            scope: scope.clone(),
                            group,
                            node,
                            present: true,
                        })
                        .unwrap(),
                    );
                }
            }
            Action::Event(e) => println!("  {}: {}", from.node(), describe(&e)),
            _ => {}
        }
    }
    back
}

fn describe(e: &Event) -> String {
    match e {
        Event::RoleAdded { node, role, .. } => format!("{node} gained role {role}"),
        Event::RoleRemoved { node, role, .. } => format!("{node} lost role {role}"),
        Event::NodeAdded { node, .. } => format!("{node} joined the scope"),
        Event::NodeRemoved { node, .. } => format!("{node} left the scope"),
    }
}

fn main() {
    let scope = Scope::new("Elixir.ClusterHelper");
    let mut a = SyncEngine::new(NodeName::new("a@127.0.0.1"), 1);
    let mut b = SyncEngine::new(NodeName::new("b@127.0.0.1"), 1);
    println!("a joins the scope, then b takes roles web and {{shard,1}}:");
    let acts = a.handle(Input::JoinScope(scope.clone())).unwrap();
    let mut pending = deliver(&a, &mut b, acts);
    let acts = b
        .handle(Input::AddRoles {
            scope: scope.clone(),
            roles: vec![
                Role::atom("web"),
                Role::tuple(&[Role::atom("shard"), Role::int(1)]),
            ],
        })
        .unwrap();
    pending.extend(acts);
    let back = deliver(&b, &mut a, pending);
    deliver(&a, &mut b, back);
    let reader = a.shared_index();
    println!(
        "on a, get_nodes(web) = {:?}",
        reader.load().get_nodes(&scope, &Role::atom("web"))
    );
    println!(
        "on a, get_roles(b) = {:?}",
        reader
            .load()
            .get_roles(&scope, &NodeName::new("b@127.0.0.1"))
    );
    println!("b goes down:");
    for act in a
        .handle(Input::NodeDown(NodeName::new("b@127.0.0.1")))
        .unwrap()
    {
        if let Action::Event(e) = act {
            println!("  a: {}", describe(&e));
        }
    }
    println!("on a, all_nodes = {:?}", reader.load().all_nodes(&scope));
}
