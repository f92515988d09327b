//! Role canonicalisation properties: random terms, encoded in every
//! equivalent way, give one `Role`; arbitrary and mutated bytes never panic.

use std::io::Write;

use cluster_helper_core::Role;
use proptest::prelude::*;

/// A term model, rich enough to have several encodings per term.
#[derive(Debug, Clone)]
enum T {
    Atom(String),
    Int(bool, Vec<u8>), // negative, little-endian magnitude
    Float(f64),
    Bin(Vec<u8>),
    Bits(Vec<u8>, u8),
    List(Vec<T>),
    Improper(Vec<T>, Box<T>),
    Tuple(Vec<T>),
    Map(Vec<(T, T)>),
    Pid(String, u32, u32, u32),
    Ref(String, u32, Vec<u32>),
    Port(String, u64, u32),
}

fn atom_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,8}",
        "[A-Za-z0-9 .@]{0,12}",
        "[a-zé\u{e8}\u{fc}]{1,6}",
        "[\u{3b1}-\u{3c9}\u{4e00}-\u{4e10}]{1,4}",
    ]
}

fn leaf() -> impl Strategy<Value = T> {
    prop_oneof![
        atom_text().prop_map(T::Atom),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(n, m)| T::Int(n, m)),
        (0u8..=255).prop_map(|v| T::Int(false, vec![v])),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(T::Float),
        proptest::collection::vec(any::<u8>(), 0..10).prop_map(T::Bin),
        (proptest::collection::vec(any::<u8>(), 1..5), 1u8..8).prop_map(|(b, n)| T::Bits(b, n)),
        (
            "[a-z]{1,5}@[a-z0-9.]{1,9}",
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(n, i, s, c)| T::Pid(n, i & 0x7fff, s & 0x1fff, c)),
        (
            "[a-z]{1,5}@[a-z]{1,5}",
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 1..=3)
        )
            .prop_map(|(n, c, ids)| T::Ref(n, c, ids)),
        ("[a-z]{1,5}@[a-z]{1,5}", any::<u64>(), any::<u32>())
            .prop_map(|(n, id, c)| T::Port(n, id, c)),
    ]
}

fn term() -> impl Strategy<Value = T> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(T::List),
            proptest::collection::vec((0u8..=255).prop_map(|v| T::Int(false, vec![v])), 0..6)
                .prop_map(T::List),
            (
                proptest::collection::vec(inner.clone(), 1..4),
                inner.clone()
            )
                .prop_filter("improper tail", |(_, t)| !matches!(
                    t,
                    T::List(_) | T::Improper(..)
                ))
                .prop_map(|(e, t)| T::Improper(e, Box::new(t))),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(T::Tuple),
            proptest::collection::vec((atom_text(), inner), 0..5).prop_map(|kv| {
                // Unique keys: atoms by text.
                let mut seen = std::collections::BTreeSet::new();
                T::Map(
                    kv.into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .map(|(k, v)| (T::Atom(k), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// Picks encodings from a seed.
struct Choices(u64);
impl Choices {
    fn pick(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn enc_atom(o: &mut Vec<u8>, s: &str, c: &mut Choices) {
    let latin1: Option<Vec<u8>> = s.chars().map(|ch| u8::try_from(ch as u32).ok()).collect();
    let choice = c.pick(4);
    match (choice, latin1) {
        (0, Some(l)) => {
            o.push(100);
            o.extend_from_slice(&(l.len() as u16).to_be_bytes());
            o.extend_from_slice(&l);
        }
        (1, Some(l)) => {
            o.push(115);
            o.push(l.len() as u8);
            o.extend_from_slice(&l);
        }
        (2, _) => {
            o.push(118);
            o.extend_from_slice(&(s.len() as u16).to_be_bytes());
            o.extend_from_slice(s.as_bytes());
        }
        _ => {
            o.push(119);
            o.push(s.len() as u8);
            o.extend_from_slice(s.as_bytes());
        }
    }
}

fn enc_int(o: &mut Vec<u8>, neg: bool, mag: &[u8], c: &mut Choices) {
    let mut m = mag.to_vec();
    while m.last() == Some(&0) {
        m.pop();
    }
    let val: Option<i128> = if m.len() <= 8 {
        let v = m
            .iter()
            .enumerate()
            .fold(0i128, |a, (i, b)| a | (*b as i128) << (8 * i));
        Some(if neg { -v } else { v })
    } else {
        None
    };
    match (val, c.pick(3)) {
        (Some(v), 0) if (0..=255).contains(&v) => {
            o.push(97);
            o.push(v as u8);
        }
        (Some(v), 1) if i32::try_from(v).is_ok() => {
            o.push(98);
            o.extend_from_slice(&(v as i32).to_be_bytes());
        }
        _ => {
            // A big, possibly padded with zero bytes, small or large form.
            let pad = c.pick(3) as usize;
            let mut mm = m.clone();
            mm.extend(std::iter::repeat_n(0, pad));
            if c.pick(2) == 0 && mm.len() <= 255 {
                o.push(110);
                o.push(mm.len() as u8);
            } else {
                o.push(111);
                o.extend_from_slice(&(mm.len() as u32).to_be_bytes());
            }
            o.push(neg as u8);
            o.extend_from_slice(&mm);
        }
    }
}

fn small_int_value(t: &T) -> Option<u8> {
    match t {
        T::Int(false, m) => {
            let nz: Vec<u8> = m.iter().rev().skip_while(|b| **b == 0).cloned().collect();
            match nz.len() {
                0 => Some(0),
                1 => Some(nz[0]),
                _ => None,
            }
        }
        _ => None,
    }
}

fn enc(o: &mut Vec<u8>, t: &T, c: &mut Choices) {
    match t {
        T::Atom(s) => enc_atom(o, s, c),
        T::Int(n, m) => enc_int(o, *n, m, c),
        T::Float(f) => {
            if c.pick(2) == 0 {
                o.push(70);
                o.extend_from_slice(&f.to_be_bytes());
            } else {
                o.push(99);
                let mut s = format!("{f:.20e}").into_bytes();
                s.resize(31, 0);
                o.extend_from_slice(&s);
            }
        }
        T::Bin(b) => {
            if c.pick(2) == 0 {
                o.push(109);
                o.extend_from_slice(&(b.len() as u32).to_be_bytes());
            } else {
                o.push(77);
                o.extend_from_slice(&(b.len() as u32).to_be_bytes());
                o.push(if b.is_empty() { 0 } else { 8 });
            }
            o.extend_from_slice(b);
        }
        T::Bits(b, n) => {
            o.push(77);
            o.extend_from_slice(&(b.len() as u32).to_be_bytes());
            o.push(*n);
            let mut b = b.clone();
            // The model's value has zero unused bits; junk there must not matter.
            let junk = c.pick(2) as u8;
            let last = b.len() - 1;
            b[last] = (b[last] & (0xffu8 << (8 - n))) | (junk & !(0xffu8 << (8 - n)));
            o.extend_from_slice(&b);
        }
        T::List(es) => {
            let bytes: Option<Vec<u8>> = es.iter().map(small_int_value).collect();
            match (bytes, c.pick(3)) {
                (_, _) if es.is_empty() && c.pick(2) == 0 => o.push(106),
                (Some(b), 0) => {
                    o.push(107);
                    o.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    o.extend_from_slice(&b);
                }
                (_, 1) if es.len() >= 2 => {
                    // [a | [b, c...]]: a list chained through its tail.
                    o.push(108);
                    o.extend_from_slice(&1u32.to_be_bytes());
                    enc(o, &es[0], c);
                    enc(o, &T::List(es[1..].to_vec()), c);
                }
                _ => {
                    o.push(108);
                    o.extend_from_slice(&(es.len() as u32).to_be_bytes());
                    for e in es {
                        enc(o, e, c);
                    }
                    o.push(106);
                }
            }
        }
        T::Improper(es, tail) => {
            o.push(108);
            o.extend_from_slice(&(es.len() as u32).to_be_bytes());
            for e in es {
                enc(o, e, c);
            }
            enc(o, tail, c);
        }
        T::Tuple(es) => {
            if c.pick(2) == 0 {
                o.push(104);
                o.push(es.len() as u8);
            } else {
                o.push(105);
                o.extend_from_slice(&(es.len() as u32).to_be_bytes());
            }
            for e in es {
                enc(o, e, c);
            }
        }
        T::Map(kv) => {
            let mut kv = kv.clone();
            // A random key order.
            for i in (1..kv.len()).rev() {
                let j = c.pick(i as u64 + 1) as usize;
                kv.swap(i, j);
            }
            o.push(116);
            o.extend_from_slice(&(kv.len() as u32).to_be_bytes());
            for (k, v) in &kv {
                enc(o, k, c);
                enc(o, v, c);
            }
        }
        T::Pid(node, id, serial, creation) => {
            if *creation <= 255 && c.pick(2) == 0 {
                o.push(103);
                enc_atom(o, node, c);
                o.extend_from_slice(&id.to_be_bytes());
                o.extend_from_slice(&serial.to_be_bytes());
                o.push(*creation as u8);
            } else {
                o.push(88);
                enc_atom(o, node, c);
                o.extend_from_slice(&id.to_be_bytes());
                o.extend_from_slice(&serial.to_be_bytes());
                o.extend_from_slice(&creation.to_be_bytes());
            }
        }
        T::Ref(node, creation, ids) => {
            let choice = c.pick(3);
            if choice == 0 && ids.len() == 1 && *creation <= 255 {
                o.push(101);
                enc_atom(o, node, c);
                o.extend_from_slice(&ids[0].to_be_bytes());
                o.push(*creation as u8);
            } else if choice == 1 && *creation <= 255 {
                o.push(114);
                o.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                enc_atom(o, node, c);
                o.push(*creation as u8);
                for id in ids {
                    o.extend_from_slice(&id.to_be_bytes());
                }
            } else {
                o.push(90);
                o.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                enc_atom(o, node, c);
                o.extend_from_slice(&creation.to_be_bytes());
                for id in ids {
                    o.extend_from_slice(&id.to_be_bytes());
                }
            }
        }
        T::Port(node, id, creation) => {
            let choice = c.pick(3);
            if choice == 0 && *id <= u32::MAX as u64 && *creation <= 255 {
                o.push(102);
                enc_atom(o, node, c);
                o.extend_from_slice(&(*id as u32).to_be_bytes());
                o.push(*creation as u8);
            } else if choice == 1 && *id <= u32::MAX as u64 {
                o.push(89);
                enc_atom(o, node, c);
                o.extend_from_slice(&(*id as u32).to_be_bytes());
                o.extend_from_slice(&creation.to_be_bytes());
            } else {
                o.push(120);
                enc_atom(o, node, c);
                o.extend_from_slice(&id.to_be_bytes());
                o.extend_from_slice(&creation.to_be_bytes());
            }
        }
    }
}

fn encode(t: &T, seed: u64) -> Vec<u8> {
    let mut c = Choices(seed);
    let mut body = Vec::new();
    enc(&mut body, t, &mut c);
    if c.pick(4) == 0 {
        // term_to_binary(T, [compressed]).
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&body).unwrap();
        let data = z.finish().unwrap();
        let mut o = vec![131, 80];
        o.extend_from_slice(&(body.len() as u32).to_be_bytes());
        o.extend_from_slice(&data);
        o
    } else {
        let mut o = vec![131];
        o.extend_from_slice(&body);
        o
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)))]

    #[test]
    fn every_encoding_of_a_term_gives_one_role(t in term(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let a = encode(&t, s1);
        let b = encode(&t, s2);
        let ra = Role::from_etf(&a).map_err(|e| TestCaseError::fail(format!("{e} for {a:?}")))?;
        let rb = Role::from_etf(&b).map_err(|e| TestCaseError::fail(format!("{e} for {b:?}")))?;
        prop_assert_eq!(&ra, &rb);
        // Canonical bytes are a fixed point, and survive a trip through eetf.
        prop_assert_eq!(&Role::from_etf(ra.as_etf()).unwrap(), &ra);
        prop_assert_eq!(&Role::from_term(&ra.to_term()).unwrap(), &ra);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut v = vec![131];
        v.extend(&bytes);
        let _ = Role::from_etf(&v);
        let _ = Role::from_etf(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(t in term(), seed in any::<u64>(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut e = encode(&t, seed);
        let p = pos % e.len();
        e[p] = byte;
        let _ = Role::from_etf(&e);
        e.truncate(p);
        let _ = Role::from_etf(&e);
    }
}

#[test]
fn integer_and_float_differ_and_map_order_does_not_matter() {
    assert_ne!(Role::int(1), Role::float(1.0));
    let a = encode(
        &T::Map(vec![
            (T::Atom("a".into()), T::Int(false, vec![1])),
            (T::Atom("b".into()), T::Bin(vec![])),
        ]),
        1,
    );
    let b = encode(
        &T::Map(vec![
            (T::Atom("b".into()), T::Bin(vec![])),
            (T::Atom("a".into()), T::Int(false, vec![1])),
        ]),
        2,
    );
    assert_eq!(Role::from_etf(&a).unwrap(), Role::from_etf(&b).unwrap());
}

#[test]
fn deep_nesting_within_the_bound_fits_a_small_stack() {
    // Scheduler threads have modest stacks: the deepest accepted term must fit in 256 KiB.
    let depth = cluster_helper_core::canon::MAX_DEPTH;
    let mut v = vec![131];
    for i in 0..depth {
        match i % 3 {
            0 => v.extend_from_slice(&[104, 1]),
            1 => v.extend_from_slice(&[108, 0, 0, 0, 1]),
            _ => v.extend_from_slice(&[116, 0, 0, 0, 1, 97, 1]),
        }
    }
    v.push(106);
    for i in (0..depth).rev() {
        if i % 3 == 1 {
            v.push(106);
        }
    }
    let h = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || Role::from_etf(&v).is_ok())
        .unwrap();
    assert!(h.join().unwrap(), "a term at the depth bound is accepted");
}
