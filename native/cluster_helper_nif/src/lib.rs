//! The Rustler NIF behind `ClusterHelper.Native`.
//!
//! Owns only term conversion: Elixir terms in, [`cluster_helper_core`] inputs
//! and reads, Elixir terms out. Every decision lives in the core; the
//! driver (`ClusterHelper.NodeConfig`, a GenServer) carries out the actions.
//! The interface is fixed in `CONTRACT.md` beside this crate.
//!
//! Scheduling: reads run on normal schedulers and build at most
//! [`MAX_NORMAL_RESULT`] elements (past that they answer `:too_big` and the
//! caller uses the `_dirty` variant); engine inputs run on dirty CPU
//! schedulers, since a batch of roles or a big snapshot has no size bound.
//! Panics are caught by rustler and raised as Erlang errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use cluster_helper_core::canon;
use cluster_helper_core::protocol::{Msg, OURS_GROUP};
use cluster_helper_core::{
    Action, Event, Group, Input, NodeName, Role, Scope, SharedIndex, SyncEngine, Via,
};
use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder, Env, Error, NifResult, ResourceArc, Term};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        too_big,
        already_joined,
        not_joined,
        all_nodes,
        join_groups,
        leave_groups,
        send,
        legacy,
        ours,
        ask_scopes,
        ask_generation,
        pull,
        event,
        role_added,
        role_removed,
        node_added,
        node_removed,
        bad_message,
    }
}

/// Results longer than this are built on a dirty scheduler instead.
pub const MAX_NORMAL_RESULT: usize = 2048;

/// What a resource holds: the engine (written by the driver only) and what
/// readers need, each readable without the engine's lock.
pub struct State {
    engine: Mutex<SyncEngine>,
    index: Arc<SharedIndex>,
    me: NodeName,
    /// Joined scopes and their generations, republished after each input.
    scopes: ArcSwap<Vec<(Scope, u64)>>,
    /// Node and scope atoms already made, so reads rarely touch the atom
    /// table. Copy-on-write behind an atomic pointer: readers on many
    /// schedulers load it without a lock (a `RwLock` read per node bounced
    /// its cache line between cores: see bench/RESULTS.md).
    atoms: ArcSwap<HashMap<NodeName, Atom>>,
    /// Atoms inside roles, filled by the writer as roles arrive (same scheme).
    role_atoms: ArcSwap<AtomCache>,
}

#[rustler::resource_impl]
impl rustler::Resource for State {}

type Res = ResourceArc<State>;

/// The text of an atom term; badarg for anything else.
///
/// NIF 2.16's atom API is Latin-1 only: an atom with a character past 255
/// (`:"日本"`) is read from its external form instead.
fn atom_text(term: Term) -> NifResult<String> {
    if !term.is_atom() {
        return Err(Error::BadArg);
    }
    if let Ok(s) = term.atom_to_string() {
        return Ok(s);
    }
    let bin = term.to_binary();
    match bin.as_slice() {
        [131, 119, n, rest @ ..] if rest.len() == *n as usize => {
            String::from_utf8(rest.to_vec()).map_err(|_| Error::BadArg)
        }
        [131, 118, _, _, rest @ ..] => String::from_utf8(rest.to_vec()).map_err(|_| Error::BadArg),
        _ => Err(Error::BadArg),
    }
}

/// The name of an atom term (node or scope); badarg for anything else.
fn to_name(term: Term) -> NifResult<NodeName> {
    atom_text(term).map(NodeName::from)
}

/// The atom `text`, whatever its characters (see [`atom_text`]).
fn make_atom(env: Env, text: &str) -> NifResult<Atom> {
    if let Ok(a) = Atom::from_str(env, text) {
        return Ok(a);
    }
    let mut etf = vec![canon::VERSION];
    canon::write_atom(&mut etf, text);
    Atom::from_term(trusted_term(env, &etf)?)
}

/// Decodes external-term bytes this crate made (canonical, so valid): atoms
/// they name are created if needed, which the safe decoder would refuse.
fn trusted_term<'a>(env: Env<'a>, etf: &[u8]) -> NifResult<Term<'a>> {
    // SAFETY: the bytes come from the core's encoder or canonicaliser, which
    // only ever produce complete, valid external terms.
    unsafe { env.binary_to_term_trusted(etf) }
        .map(|(t, _)| t)
        .ok_or(Error::RaiseAtom("undecodable_term"))
}

impl State {
    fn atom<'a>(&self, env: Env<'a>, name: &NodeName) -> NifResult<Atom> {
        match self.atoms.load().get(name) {
            Some(a) => Ok(*a),
            None => make_atom(env, name.as_str()),
        }
    }

    /// Remembers the atoms of names seen by the writer, for readers.
    fn remember(&self, env: Env, names: &[&NodeName]) {
        let missing: Vec<(NodeName, Atom)> = {
            let known = self.atoms.load();
            names
                .iter()
                .filter(|n| !known.contains_key(**n))
                .filter_map(|n| make_atom(env, n.as_str()).ok().map(|a| ((*n).clone(), a)))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        self.atoms.rcu(|known| {
            let mut m = HashMap::clone(known);
            m.extend(missing.iter().cloned());
            m
        });
    }
}

/// Canonical bytes of a role term, written into `buf` (cleared first).
/// Atoms, small integers and binaries skip `term_to_binary`.
fn role_etf(term: Term, buf: &mut Vec<u8>) -> NifResult<()> {
    buf.clear();
    buf.push(canon::VERSION);
    if term.is_atom() {
        let s = atom_text(term)?;
        canon::write_atom(buf, &s);
        return Ok(());
    }
    if term.is_integer() {
        if let Ok(i) = term.decode::<i64>() {
            canon::write_i64(buf, i);
            return Ok(());
        }
    }
    let bin = term.to_binary();
    let c = canon::canonicalize(bin.as_slice()).map_err(|_| Error::BadArg)?;
    *buf = c;
    Ok(())
}

fn role_from_term(term: Term) -> NifResult<Role> {
    let mut buf = Vec::new();
    role_etf(term, &mut buf)?;
    Role::from_etf(&buf).map_err(|_| Error::BadArg)
}

fn roles_from_list(term: Term) -> NifResult<Vec<Role>> {
    let iter: rustler::ListIterator = term.decode()?;
    iter.map(role_from_term).collect()
}

/// Atom texts (UTF-8) -> atoms, for building role terms without the atom table.
type AtomCache = HashMap<Box<[u8]>, Atom>;

/// The term of a role. Common shapes (atoms, integers, floats, binaries,
/// tuples and proper lists of them) are built directly from the canonical
/// bytes, atoms from `cache`; anything else goes through `binary_to_term`.
/// Atoms not in the cache are made and pushed to `misses` (the writer adds
/// them to the cache; readers drop them).
fn role_to_term<'a>(
    env: Env<'a>,
    role: &Role,
    cache: &AtomCache,
    misses: &mut Vec<(Box<[u8]>, Atom)>,
) -> NifResult<Term<'a>> {
    let body = role.body();
    let mut pos = 0;
    if let Some(t) = build(env, body, &mut pos, cache, misses, 0) {
        if pos == body.len() {
            return Ok(t);
        }
    }
    trusted_term(env, role.as_etf())
}

/// Builds the canonical term at `b[*pos..]`; `None` for shapes left to
/// `binary_to_term`. Recursion is bounded by the canonical depth limit.
fn build<'a>(
    env: Env<'a>,
    b: &[u8],
    pos: &mut usize,
    cache: &AtomCache,
    misses: &mut Vec<(Box<[u8]>, Atom)>,
    depth: usize,
) -> Option<Term<'a>> {
    if depth > canon::MAX_DEPTH {
        return None;
    }
    let tag = *b.get(*pos)?;
    *pos += 1;
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        Some(s)
    };
    Some(match tag {
        97 => (take(pos, 1)?[0] as i64).encode(env),
        98 => {
            let x = take(pos, 4)?;
            (i32::from_be_bytes([x[0], x[1], x[2], x[3]]) as i64).encode(env)
        }
        70 => {
            let x = take(pos, 8)?;
            f64::from_be_bytes(x.try_into().ok()?).encode(env)
        }
        119 => {
            let n = take(pos, 1)?[0] as usize;
            let text = take(pos, n)?;
            match cache.get(text) {
                Some(a) => a.encode(env),
                None => {
                    let a = make_atom(env, std::str::from_utf8(text).ok()?).ok()?;
                    misses.push((text.into(), a));
                    a.encode(env)
                }
            }
        }
        104 => {
            let n = take(pos, 1)?[0] as usize;
            let mut elems = Vec::with_capacity(n);
            for _ in 0..n {
                elems.push(build(env, b, pos, cache, misses, depth + 1)?);
            }
            make_tuple(env, &elems)
        }
        106 => Vec::<Term<'a>>::new().encode(env),
        107 => {
            let x = take(pos, 2)?;
            let n = u16::from_be_bytes([x[0], x[1]]) as usize;
            let bytes = take(pos, n)?;
            bytes
                .iter()
                .map(|v| *v as i64)
                .collect::<Vec<i64>>()
                .encode(env)
        }
        108 => {
            let x = take(pos, 4)?;
            let n = u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize;
            let mut elems = Vec::with_capacity(n.min(b.len()));
            for _ in 0..n {
                elems.push(build(env, b, pos, cache, misses, depth + 1)?);
            }
            // Improper lists are left to binary_to_term.
            if take(pos, 1)? != [106] {
                return None;
            }
            elems.encode(env)
        }
        109 => {
            let x = take(pos, 4)?;
            let n = u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize;
            let bytes = take(pos, n)?;
            let mut bin = rustler::NewBinary::new(env, n);
            bin.as_mut_slice().copy_from_slice(bytes);
            let t: Term<'a> = bin.into();
            t
        }
        _ => return None,
    })
}

fn roles_to_list<'a, 'r>(
    env: Env<'a>,
    state: &State,
    roles: impl Iterator<Item = &'r Role>,
) -> NifResult<Term<'a>> {
    let cache = state.role_atoms.load();
    let mut misses = Vec::new();
    let terms: Vec<Term<'a>> = roles
        .map(|r| role_to_term(env, r, &cache, &mut misses))
        .collect::<NifResult<_>>()?;
    Ok(terms.encode(env))
}

fn nodes_to_list<'a, 'n>(
    env: Env<'a>,
    state: &State,
    nodes: impl Iterator<Item = &'n NodeName>,
) -> NifResult<Term<'a>> {
    let known = state.atoms.load();
    let terms: Vec<Term<'a>> = nodes
        .map(|n| match known.get(n) {
            Some(a) => Ok(a.encode(env)),
            None => make_atom(env, n.as_str()).map(|a| a.encode(env)),
        })
        .collect::<NifResult<_>>()?;
    Ok(terms.encode(env))
}

// ---- construction ----------------------------------------------------------

#[rustler::nif]
fn new<'a>(env: Env<'a>, local_node: Term<'a>, incarnation: u64) -> NifResult<Res> {
    let me = to_name(local_node)?;
    let engine = SyncEngine::new(me.clone(), incarnation);
    let index = engine.shared_index();
    let state = State {
        engine: Mutex::new(engine),
        index,
        me: me.clone(),
        scopes: ArcSwap::from_pointee(Vec::new()),
        atoms: ArcSwap::from_pointee(HashMap::new()),
        role_atoms: ArcSwap::from_pointee(HashMap::new()),
    };
    state.remember(env, &[&me]);
    Ok(ResourceArc::new(state))
}

#[rustler::nif]
fn ours_group(env: Env) -> NifResult<Atom> {
    Atom::from_str(env, OURS_GROUP)
}

// ---- reads -----------------------------------------------------------------

fn get_nodes_impl<'a>(
    env: Env<'a>,
    res: Res,
    scope: Term<'a>,
    role: Term<'a>,
    dirty: bool,
) -> NifResult<Term<'a>> {
    let scope = to_name(scope)?;
    let mut key = Vec::with_capacity(32);
    role_etf(role, &mut key)?;
    let snap = res.index.load();
    let Some(view) = snap.scope(&scope) else {
        return Ok(Vec::<Term>::new().encode(env));
    };
    if !dirty && view.count_nodes_with_etf(&key) > MAX_NORMAL_RESULT {
        return Ok(atoms::too_big().encode(env));
    }
    nodes_to_list(env, &res, view.nodes_with_etf(&key))
}

#[rustler::nif]
fn get_nodes<'a>(env: Env<'a>, res: Res, scope: Term<'a>, role: Term<'a>) -> NifResult<Term<'a>> {
    get_nodes_impl(env, res, scope, role, false)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn get_nodes_dirty<'a>(
    env: Env<'a>,
    res: Res,
    scope: Term<'a>,
    role: Term<'a>,
) -> NifResult<Term<'a>> {
    get_nodes_impl(env, res, scope, role, true)
}

fn get_roles_impl<'a>(
    env: Env<'a>,
    res: Res,
    scope: Term<'a>,
    node: NodeName,
    dirty: bool,
) -> NifResult<Term<'a>> {
    let scope = to_name(scope)?;
    let snap = res.index.load();
    let Some(view) = snap.scope(&scope) else {
        return Ok(Vec::<Term>::new().encode(env));
    };
    if !dirty && view.count_roles_of(&node) > MAX_NORMAL_RESULT {
        return Ok(atoms::too_big().encode(env));
    }
    roles_to_list(env, &res, view.roles_of(&node))
}

#[rustler::nif]
fn get_roles<'a>(env: Env<'a>, res: Res, scope: Term<'a>, node: Term<'a>) -> NifResult<Term<'a>> {
    get_roles_impl(env, res, scope, to_name(node)?, false)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn get_roles_dirty<'a>(
    env: Env<'a>,
    res: Res,
    scope: Term<'a>,
    node: Term<'a>,
) -> NifResult<Term<'a>> {
    get_roles_impl(env, res, scope, to_name(node)?, true)
}

#[rustler::nif]
fn get_my_roles<'a>(env: Env<'a>, res: Res, scope: Term<'a>) -> NifResult<Term<'a>> {
    let me = res.me.clone();
    get_roles_impl(env, res, scope, me, false)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn get_my_roles_dirty<'a>(env: Env<'a>, res: Res, scope: Term<'a>) -> NifResult<Term<'a>> {
    let me = res.me.clone();
    get_roles_impl(env, res, scope, me, true)
}

fn all_nodes_impl<'a>(env: Env<'a>, res: Res, scope: Term<'a>, dirty: bool) -> NifResult<Term<'a>> {
    let scope = to_name(scope)?;
    let snap = res.index.load();
    let Some(view) = snap.scope(&scope) else {
        return Ok(Vec::<Term>::new().encode(env));
    };
    if !dirty && view.node_count() > MAX_NORMAL_RESULT {
        return Ok(atoms::too_big().encode(env));
    }
    nodes_to_list(env, &res, view.nodes())
}

#[rustler::nif]
fn all_nodes<'a>(env: Env<'a>, res: Res, scope: Term<'a>) -> NifResult<Term<'a>> {
    all_nodes_impl(env, res, scope, false)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn all_nodes_dirty<'a>(env: Env<'a>, res: Res, scope: Term<'a>) -> NifResult<Term<'a>> {
    all_nodes_impl(env, res, scope, true)
}

#[rustler::nif]
fn list_scopes<'a>(env: Env<'a>, res: Res) -> NifResult<Term<'a>> {
    let scopes = res.scopes.load();
    let terms: Vec<Term> = scopes
        .iter()
        .map(|(s, _)| res.atom(env, s).map(|a| a.encode(env)))
        .collect::<NifResult<_>>()?;
    Ok(terms.encode(env))
}

#[rustler::nif]
fn generation<'a>(res: Res, scope: Term<'a>) -> NifResult<u64> {
    let scope = to_name(scope)?;
    let scopes = res.scopes.load();
    Ok(scopes
        .iter()
        .find(|(s, _)| *s == scope)
        .map_or(0, |(_, g)| *g))
}

// ---- engine inputs -----------------------------------------------------------

/// Feeds one input and turns the actions into terms: `{:ok, actions}`.
fn run<'a>(env: Env<'a>, res: &Res, input: Input) -> NifResult<Term<'a>> {
    let result = {
        let mut engine = res
            .engine
            .lock()
            .map_err(|_| Error::RaiseAtom("engine_poisoned"))?;
        let r = engine.handle(input);
        res.scopes.store(Arc::new(engine.scope_generations()));
        r
    };
    let actions = match result {
        Ok(a) => a,
        Err(cluster_helper_core::EngineError::AlreadyJoined) => {
            return Ok((atoms::error(), atoms::already_joined()).encode(env))
        }
        Err(cluster_helper_core::EngineError::NotJoined) => {
            return Ok((atoms::error(), atoms::not_joined()).encode(env))
        }
    };
    let mut seen: Vec<&NodeName> = Vec::new();
    let mut out: Vec<Term<'a>> = Vec::with_capacity(actions.len());
    let cache = res.role_atoms.load_full();
    let mut misses = Vec::new();
    for a in &actions {
        out.push(action_to_term(env, res, a, &cache, &mut misses)?);
        match a {
            Action::Event(Event::NodeAdded { scope, node }) => {
                seen.push(node);
                seen.push(scope);
            }
            Action::JoinGroups(scope) => seen.push(scope),
            _ => {}
        }
    }
    res.remember(env, &seen);
    if !misses.is_empty() {
        // Roles that arrived (events carry every one) teach readers their atoms.
        res.role_atoms.rcu(|known| {
            let mut m = AtomCache::clone(known);
            m.extend(misses.iter().cloned());
            m
        });
    }
    Ok((atoms::ok(), out).encode(env))
}

fn action_to_term<'a>(
    env: Env<'a>,
    res: &Res,
    a: &Action,
    cache: &AtomCache,
    misses: &mut Vec<(Box<[u8]>, Atom)>,
) -> NifResult<Term<'a>> {
    let at = |n: &NodeName| -> NifResult<Term<'a>> { Ok(res.atom(env, n)?.encode(env)) };
    Ok(match a {
        Action::JoinGroups(s) => (atoms::join_groups(), at(s)?).encode(env),
        Action::LeaveGroups(s) => (atoms::leave_groups(), at(s)?).encode(env),
        Action::Send {
            node,
            scope,
            via,
            msg,
        } => {
            let m = trusted_term(env, &msg.encode())?;
            let via = match via {
                Via::AllNodesMembers => atoms::legacy(),
                Via::Server => atoms::ours(),
            };
            make_tuple(
                env,
                &[
                    atoms::send().encode(env),
                    at(node)?,
                    at(scope)?,
                    m,
                    via.encode(env),
                ],
            )
        }
        Action::AskScopes(n) => (atoms::ask_scopes(), at(n)?).encode(env),
        Action::AskGeneration { node, scope } => {
            (atoms::ask_generation(), at(node)?, at(scope)?).encode(env)
        }
        Action::Pull { node, scope, token } => {
            (atoms::pull(), at(node)?, at(scope)?, *token).encode(env)
        }
        Action::Event(e) => match e {
            Event::RoleAdded { scope, node, role } => make_tuple(
                env,
                &[
                    atoms::event().encode(env),
                    atoms::role_added().encode(env),
                    at(scope)?,
                    at(node)?,
                    role_to_term(env, role, cache, misses)?,
                ],
            ),
            Event::RoleRemoved { scope, node, role } => make_tuple(
                env,
                &[
                    atoms::event().encode(env),
                    atoms::role_removed().encode(env),
                    at(scope)?,
                    at(node)?,
                    role_to_term(env, role, cache, misses)?,
                ],
            ),
            Event::NodeAdded { scope, node } => {
                (atoms::event(), atoms::node_added(), at(scope)?, at(node)?).encode(env)
            }
            Event::NodeRemoved { scope, node } => {
                (atoms::event(), atoms::node_removed(), at(scope)?, at(node)?).encode(env)
            }
        },
    })
}

#[rustler::nif(schedule = "DirtyCpu")]
fn add_roles<'a>(env: Env<'a>, res: Res, scope: Term<'a>, roles: Term<'a>) -> NifResult<Term<'a>> {
    let input = Input::AddRoles {
        scope: to_name(scope)?,
        roles: roles_from_list(roles)?,
    };
    run(env, &res, input)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn remove_roles<'a>(
    env: Env<'a>,
    res: Res,
    scope: Term<'a>,
    roles: Term<'a>,
) -> NifResult<Term<'a>> {
    let input = Input::RemoveRoles {
        scope: to_name(scope)?,
        roles: roles_from_list(roles)?,
    };
    run(env, &res, input)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn join_scope<'a>(env: Env<'a>, res: Res, scope: Term<'a>) -> NifResult<Term<'a>> {
    run(env, &res, Input::JoinScope(to_name(scope)?))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn leave_scope<'a>(env: Env<'a>, res: Res, scope: Term<'a>) -> NifResult<Term<'a>> {
    run(env, &res, Input::LeaveScope(to_name(scope)?))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn node_up<'a>(env: Env<'a>, res: Res, node: Term<'a>) -> NifResult<Term<'a>> {
    let node = to_name(node)?;
    res.remember(env, &[&node]);
    run(env, &res, Input::NodeUp(node))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn node_down<'a>(env: Env<'a>, res: Res, node: Term<'a>) -> NifResult<Term<'a>> {
    run(env, &res, Input::NodeDown(to_name(node)?))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn member<'a>(
    env: Env<'a>,
    res: Res,
    scope: Term<'a>,
    group: Term<'a>,
    node: Term<'a>,
    present: bool,
) -> NifResult<Term<'a>> {
    let group = if group.is_atom() && Atom::from_term(group)? == atoms::all_nodes() {
        Group::AllNodes
    } else if to_name(group)?.as_str() == OURS_GROUP {
        Group::Ours
    } else {
        return Err(Error::BadArg);
    };
    let node = to_name(node)?;
    res.remember(env, &[&node]);
    run(
        env,
        &res,
        Input::Member {
            scope: to_name(scope)?,
            group,
            node,
            present,
        },
    )
}

#[rustler::nif(schedule = "DirtyCpu")]
fn message<'a>(env: Env<'a>, res: Res, msg: Term<'a>) -> NifResult<Term<'a>> {
    let bin = msg.to_binary();
    match Msg::decode(bin.as_slice()) {
        Ok(m) => {
            let sender = m.sender().clone();
            res.remember(env, &[&sender]);
            run(env, &res, Input::Message(m))
        }
        Err(e) => Ok((atoms::error(), (atoms::bad_message(), e.to_string())).encode(env)),
    }
}

/// `{:ok, x}` or anything else (a failure).
fn ok_value(term: Term) -> Option<Term> {
    let t = rustler::types::tuple::get_tuple(term).ok()?;
    match t.as_slice() {
        [tag, v] if Atom::from_term(*tag).ok()? == atoms::ok() => Some(*v),
        _ => None,
    }
}

#[rustler::nif(schedule = "DirtyCpu")]
fn scopes_result<'a>(
    env: Env<'a>,
    res: Res,
    node: Term<'a>,
    result: Term<'a>,
) -> NifResult<Term<'a>> {
    // A peer's answer is input from the network: skip what is not an atom.
    let scopes = ok_value(result)
        .and_then(|v| v.decode::<rustler::ListIterator>().ok())
        .map(|it| it.filter_map(|t| to_name(t).ok()).collect::<Vec<Scope>>());
    run(
        env,
        &res,
        Input::Scopes {
            node: to_name(node)?,
            result: scopes,
        },
    )
}

#[rustler::nif(schedule = "DirtyCpu")]
fn generation_result<'a>(
    env: Env<'a>,
    res: Res,
    node: Term<'a>,
    scope: Term<'a>,
    result: Term<'a>,
) -> NifResult<Term<'a>> {
    let g = ok_value(result).and_then(|v| v.decode::<u64>().ok());
    run(
        env,
        &res,
        Input::Generation {
            node: to_name(node)?,
            scope: to_name(scope)?,
            result: g,
        },
    )
}

#[rustler::nif(schedule = "DirtyCpu")]
fn pull_result<'a>(
    env: Env<'a>,
    res: Res,
    node: Term<'a>,
    scope: Term<'a>,
    token: u64,
    result: Term<'a>,
) -> NifResult<Term<'a>> {
    let parsed = rustler::types::tuple::get_tuple(result)
        .ok()
        .and_then(|t| match t.as_slice() {
            [tag, g1, roles, g2] if Atom::from_term(*tag).ok()? == atoms::ok() => {
                let g1 = g1.decode::<u64>().ok()?;
                let g2 = g2.decode::<u64>().ok()?;
                // Roles from a peer: a list of any terms; anything else is a failed pull.
                let roles = roles_from_list(*roles).ok()?;
                Some((g1, roles, g2))
            }
            _ => None,
        });
    run(
        env,
        &res,
        Input::PullResult {
            node: to_name(node)?,
            scope: to_name(scope)?,
            token,
            result: parsed,
        },
    )
}

#[rustler::nif(schedule = "DirtyCpu")]
fn tick<'a>(env: Env<'a>, res: Res, connected: Term<'a>) -> NifResult<Term<'a>> {
    let it: rustler::ListIterator = connected.decode()?;
    let nodes: Vec<NodeName> = it.map(to_name).collect::<NifResult<_>>()?;
    run(env, &res, Input::Tick { connected: nodes })
}

rustler::init!("Elixir.ClusterHelper.Native");
