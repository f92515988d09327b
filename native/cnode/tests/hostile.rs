//! Hostile input: the frame decoder never panics on random or mutated
//! bytes (proptest), and a live peer sending bad frames loses only its own
//! connection while the node and its other connections keep working.

mod support;
use cnode::frame::{decode_body, encode_frame};
use cnode::term::*;
use cnode::{Node, Term};
use proptest::prelude::*;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arb_term() -> impl Strategy<Value = Term> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(|i| int(i64::from(i))),
        any::<i64>().prop_map(int),
        "[a-z_]{0,12}".prop_map(|s| atom(&s)),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|b| bin(&b)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Term::Float(eetf::Float::try_from(f).unwrap())),
        (0u32..0x7fff, 0u32..100, any::<u32>())
            .prop_map(|(id, serial, cr)| Term::Pid(eetf::Pid::new("n@h", id, serial, cr))),
        proptest::collection::vec(any::<u32>(), 1..4).prop_map(|ids| Term::Reference(Box::new(
            eetf::Reference {
                node: eetf::Atom::from("n@h"),
                id: ids,
                creation: 3
            }
        ))),
    ];
    // Map keys are leaves: eetf hashes a map in iteration order, so a map
    // used as a key of a map would not compare equal after a round trip.
    let key = leaf.clone();
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(tuple),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(list),
            (
                proptest::collection::vec(inner.clone(), 1..4),
                inner.clone()
            )
                .prop_map(|(h, t)| improper(h, t)),
            proptest::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| Term::Map(
                eetf::Map::from(kv.into_iter().collect::<std::collections::HashMap<_, _>>())
            )),
        ]
    })
}

/// Lists as the BEAM sees them: a `ByteList` is a list of small integers.
fn normalize(t: &Term) -> Term {
    match t {
        Term::ByteList(b) => list(b.bytes.iter().map(|x| int(i64::from(*x))).collect()),
        Term::List(l) => list(l.elements.iter().map(normalize).collect()),
        Term::ImproperList(l) if matches!(&*l.last, Term::List(t) if t.elements.is_empty()) => {
            list(l.elements.iter().map(normalize).collect())
        }
        Term::ImproperList(l) => improper(
            l.elements.iter().map(normalize).collect(),
            normalize(&l.last),
        ),
        Term::Tuple(x) => tuple(x.elements.iter().map(normalize).collect()),
        Term::Map(m) => Term::Map(eetf::Map::from(
            m.map
                .iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        )),
        Term::BigInteger(b) => match i32::try_from(&b.value) {
            Ok(small) => int(i64::from(small)),
            Err(_) => t.clone(),
        },
        other => other.clone(),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Set32(usize, u32),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Mutation::Set32(i, v)),
    ]
}

fn mutate(mut body: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if body.is_empty() {
            break;
        }
        let n = body.len();
        match *m {
            Mutation::Flip(i, b) => body[i % n] ^= b,
            Mutation::Truncate(i) => body.truncate(i % n),
            Mutation::Insert(i, b) => body.insert(i % n, b),
            Mutation::Set32(i, v) => {
                let i = i % n;
                for (k, byte) in v.to_be_bytes().iter().enumerate() {
                    if i + k < body.len() {
                        body[i + k] = *byte;
                    }
                }
            }
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_body(&bytes);
        let mut with_header = vec![112u8, 131];
        with_header.extend_from_slice(&bytes);
        let _ = decode_body(&with_header);
    }

    #[test]
    fn valid_frames_roundtrip(ctrl in arb_term(), payload in proptest::option::of(arb_term())) {
        let f = encode_frame(&ctrl, payload.as_ref()).unwrap();
        let (c, p) = decode_body(&f[4..]).unwrap();
        prop_assert_eq!(normalize(&c), normalize(&ctrl));
        prop_assert_eq!(p.map(|p| normalize(&p)), payload.map(|p| normalize(&p)));
    }

    #[test]
    fn mutated_frames_never_panic(ctrl in arb_term(), payload in arb_term(), muts in proptest::collection::vec(arb_mutation(), 1..6)) {
        let f = encode_frame(&ctrl, Some(&payload)).unwrap();
        let body = mutate(f[4..].to_vec(), &muts);
        let _ = decode_body(&body);
    }
}

#[test]
fn known_bad_inputs_are_errors() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![112],
        vec![112, 131],
        vec![112, 131, 82, 1],                                // ATOM_CACHE_REF
        vec![112, 131, 68, 0],                                // distribution header
        vec![112, 131, 80, 0, 0, 0, 10, 1, 2],                // compressed
        vec![112, 131, 109, 255, 255, 255, 255],              // binary claiming 4 GiB
        vec![112, 131, 105, 127, 255, 255, 255],              // huge tuple
        vec![112, 131, 116, 255, 255, 255, 255],              // huge map
        vec![112, 131, 77, 0, 0, 0, 1, 0, 9],                 // bit binary with 0 tail bits
        vec![112, 131, 77, 0, 0, 0, 1, 9, 9],                 // bit binary with 9 tail bits
        vec![112, 131, 90, 255, 255, 119, 1, 97, 0, 0, 0, 1], // ref with 65535 words
        vec![1, 2, 3],
    ];
    for c in cases {
        assert!(decode_body(&c).is_err(), "{c:?} should be rejected");
    }
    // Deep nesting is rejected, not a stack overflow.
    let mut deep = vec![112u8, 131];
    for _ in 0..100_000 {
        deep.extend_from_slice(&[104, 1]);
    }
    deep.push(106);
    assert!(decode_body(&deep).is_err());
}

/// Opens a raw distribution connection to `node` as `evil_name`.
async fn evil_peer(node: &Node, evil_name: &str) -> tokio::net::TcpStream {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", node.port()))
        .await
        .unwrap();
    let flags = cnode::handshake::flags::offered(true);
    let (s, _peer) =
        cnode::handshake::connect(s, evil_name, 7, flags, COOKIE, node.name(), || true)
            .await
            .unwrap();
    s
}

async fn closed_by_peer(s: &mut tokio::net::TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // ticks or other frames
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_that_connection() {
    init_log();
    ensure_epmd();
    let node = Node::builder(unique("hostile"))
        .cookie(COOKIE)
        .max_frame(1 << 20)
        .start()
        .await
        .unwrap();
    let friend = rust_node("friend").await;
    friend.register_rpc_sync("f", "ping", 0, |_| cnode::RpcResult::Ok(atom("pong")));
    node.connect(friend.name()).await.unwrap();
    let frames: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 4, 112, 131, 82, 0], // atom cache ref
        vec![0, 0, 0, 3, 112, 131, 200],   // bad tag
        vec![0, 0, 0, 7, 112, 131, 109, 255, 255, 255, 255], // absurd binary length
        vec![0, 0, 0, 5, 112, 131, 104, 2, 97], // truncated term
        vec![0, 0x20, 0, 0],               // 2 MiB: over the 1 MiB limit
        vec![0, 0, 0, 3, 99, 131, 106],    // not pass-through
    ];
    for (i, f) in frames.iter().enumerate() {
        let evil = unique(&format!("evil{i}"));
        let mut s = evil_peer(&node, &evil).await;
        s.write_all(f).await.unwrap();
        assert!(
            closed_by_peer(&mut s, 10).await,
            "frame {i} did not close the connection"
        );
        // The node and its other connection still work.
        let v = node
            .erpc_call(friend.name(), "f", "ping", vec![], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(v, atom("pong"));
        assert!(node.nodes().contains(&friend.name().to_owned()));
    }
    // A well-formed but unknown control message is ignored, the connection stays.
    let mut s = evil_peer(&node, &unique("odd")).await;
    let f = encode_frame(&tuple(vec![int(99), atom("x")]), None).unwrap();
    s.write_all(&f).await.unwrap();
    let f = encode_frame(&tuple(vec![atom("not_a_control")]), None).unwrap();
    s.write_all(&f).await.unwrap();
    assert!(
        !closed_by_peer(&mut s, 2).await,
        "unknown control must not close"
    );
    node.shutdown().await;
    friend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_rust_simultaneous_connect_and_calls() {
    // Many rounds: simultaneous connects race differently each time.
    for _ in 0..10 {
        let a = rust_node("simA").await;
        let b = rust_node("simB").await;
        let (ra, rb) = tokio::join!(a.connect(b.name()), b.connect(a.name()));
        assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
        let both = eventually(10, || async {
            a.nodes() == vec![b.name().to_owned()] && b.nodes() == vec![a.name().to_owned()]
        })
        .await;
        assert!(both);
        // The connection that won stays up (no flapping).
        let mut ev = a.events();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let flap = tokio::time::timeout(Duration::from_millis(50), ev.recv()).await;
        assert!(flap.is_err(), "unexpected event {flap:?}");
        let v = a
            .erpc_call(b.name(), "erlang", "nodes", vec![], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(v, list(vec![atom(a.name())]));
        a.shutdown().await;
        b.shutdown().await;
    }
    let a = rust_node("simA").await;
    let b = rust_node("simB").await;
    b.register_rpc("m", "f", 1, |args| async move {
        cnode::RpcResult::Ok(tuple(vec![atom("got"), args[0].clone()]))
    });
    a.connect(b.name()).await.unwrap();
    let v = a
        .erpc_call(b.name(), "m", "f", vec![int(3)], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(v, tuple(vec![atom("got"), int(3)]));
    let r = a
        .erpc_call(b.name(), "m", "nope", vec![], Duration::from_secs(10))
        .await;
    assert!(
        matches!(r, Err(cnode::ErpcError::Error { ref reason, .. }) if *reason == atom("undef")),
        "{r:?}"
    );
    let mut mb = b.mailbox();
    mb.register("inbox").unwrap();
    let ma = a.mailbox();
    ma.send(("inbox", b.name()), atom("hello"));
    assert_eq!(
        mb.recv_timeout(Duration::from_secs(10)).await,
        Some(atom("hello"))
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Reads frames from a raw peer socket until `want` matches a control term.
async fn read_until(
    s: &mut tokio::net::TcpStream,
    want: impl Fn(&Term) -> bool,
    secs: u64,
) -> Option<Term> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut len = [0u8; 4];
        tokio::time::timeout_at(deadline, s.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            continue;
        }
        let mut body = vec![0u8; n];
        tokio::time::timeout_at(deadline, s.read_exact(&mut body))
            .await
            .ok()?
            .ok()?;
        if let Ok((ctrl, _)) = decode_body(&body) {
            if want(&ctrl) {
                return Some(ctrl);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_peer_unlink_id_acked_and_foreign_senders_ignored() {
    init_log();
    ensure_epmd();
    let node = Node::builder(unique("rawpeer"))
        .cookie(COOKIE)
        .mesh(false)
        .start()
        .await
        .unwrap();
    let evil = unique("rawevil");
    let mut s = evil_peer(&node, &evil).await;
    let mbox = node.mailbox();
    let me = Term::Pid(mbox.pid().clone());
    let them = Term::Pid(eetf::Pid::new(evil.as_str(), 77, 0, 7));
    // LINK then UNLINK_ID: the node must answer UNLINK_ID_ACK {36, Id, To, From}.
    s.write_all(&encode_frame(&tuple(vec![int(1), them.clone(), me.clone()]), None).unwrap())
        .await
        .unwrap();
    s.write_all(
        &encode_frame(
            &tuple(vec![int(35), int(4242), them.clone(), me.clone()]),
            None,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let ack = read_until(
        &mut s,
        |c| {
            as_tuple(c)
                .map(|e| e.first() == Some(&int(36)))
                .unwrap_or(false)
        },
        10,
    )
    .await;
    assert_eq!(
        ack,
        Some(tuple(vec![int(36), int(4242), me.clone(), them.clone()]))
    );
    // MONITOR_P from the peer, then the mailbox closes: MONITOR_P_EXIT comes back.
    let r = Term::Reference(Box::new(eetf::Reference {
        node: eetf::Atom::from(evil.as_str()),
        id: vec![1, 2, 3],
        creation: 7,
    }));
    s.write_all(
        &encode_frame(
            &tuple(vec![int(19), them.clone(), me.clone(), r.clone()]),
            None,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    // A LINK claiming to come from another node is ignored (no EXIT to it later).
    let foreign = Term::Pid(eetf::Pid::new("elsewhere@10.255.255.1", 1, 0, 1));
    s.write_all(&encode_frame(&tuple(vec![int(1), foreign, me.clone()]), None).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mbox.close(atom("bye"));
    let exit = read_until(
        &mut s,
        |c| {
            as_tuple(c)
                .map(|e| e.first() == Some(&int(21)))
                .unwrap_or(false)
        },
        10,
    )
    .await;
    assert_eq!(
        exit,
        Some(tuple(vec![
            int(21),
            me.clone(),
            them.clone(),
            r,
            atom("bye")
        ]))
    );
    assert_eq!(
        node.nodes(),
        vec![evil.clone()],
        "no connection attempt to the foreign node"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_dropped_after_tick_time() {
    init_log();
    ensure_epmd();
    let node = Node::builder(unique("silent"))
        .cookie(COOKIE)
        .mesh(false)
        .tick_time(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let evil = unique("mute");
    let mut s = evil_peer(&node, &evil).await;
    // We never write: the node ticks at us, then drops us after ~2 s.
    let start = tokio::time::Instant::now();
    let mut ticks = 0;
    let mut buf = [0u8; 4];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if buf == [0, 0, 0, 0] => ticks += 1,
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(ticks >= 1, "the node sends ticks");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "silent peer must be dropped"
    );
    let mut down = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        if matches!(ev, cnode::NodeEvent::Down { ref node, .. } if *node == evil) {
            down = true;
            break;
        }
    }
    assert!(down);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_gives_noconnection() {
    let node = rust_node("unreach").await;
    let mut mbox = node.mailbox();
    let ghost = unique("ghost");
    let r = mbox.monitor(("someone", ghost.as_str()));
    let d = mbox
        .recv_match(
            |m| tagged(m, "DOWN").is_some(),
            Some(Duration::from_secs(30)),
        )
        .await
        .expect("DOWN");
    assert_eq!(as_tuple(&d).unwrap()[1], Term::Reference(Box::new(r)));
    assert_eq!(as_tuple(&d).unwrap()[4], atom("noconnection"));
    assert!(node.connect(&ghost).await.is_err());
    let v = node
        .gen_call(
            ("someone", ghost.as_str()),
            atom("x"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(v, Err(cnode::CallError::NoConnection));
    let v = node
        .erpc_call(&ghost, "m", "f", vec![], Duration::from_secs(30))
        .await;
    assert_eq!(v, Err(cnode::ErpcError::NoConnection));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_only_mesh_and_pg() {
    let a = rust_node("rmA").await;
    let b = rust_node("rmB").await;
    let c = rust_node("rmC").await;
    let scopes: Vec<cnode::PgScope> = [&a, &b, &c]
        .iter()
        .map(|n| n.pg_scope("rscope").unwrap())
        .collect();
    b.connect(a.name()).await.unwrap();
    c.connect(a.name()).await.unwrap();
    // Mesh through a: every node ends up connected to the other two.
    let all = [a.clone(), b.clone(), c.clone()];
    let meshed = eventually(30, || {
        let all = all.clone();
        async move { all.iter().all(|n| n.nodes().len() == 2) }
    })
    .await;
    assert!(meshed, "{:?} {:?} {:?}", a.nodes(), b.nodes(), c.nodes());
    let mboxes: Vec<cnode::Mailbox> = all.iter().map(|n| n.mailbox()).collect();
    for (s, m) in scopes.iter().zip(&mboxes) {
        s.join(atom("g"), &[m.pid().clone()]).await.unwrap();
    }
    let seen = eventually(30, || {
        let scopes = scopes.clone();
        async move { scopes.iter().all(|s| s.get_members(&atom("g")).len() == 3) }
    })
    .await;
    assert!(
        seen,
        "{:?}",
        scopes
            .iter()
            .map(|s| s.get_members(&atom("g")))
            .collect::<Vec<_>>()
    );
    // c goes away: its member leaves everywhere.
    c.shutdown().await;
    let gone = eventually(30, || {
        let scopes = scopes.clone();
        async move {
            scopes[..2]
                .iter()
                .all(|s| s.get_members(&atom("g")).len() == 2)
        }
    })
    .await;
    assert!(gone);
    a.shutdown().await;
    b.shutdown().await;
}
