//! Distribution handshake (protocol version 6) in both directions.
//!
//! Owns: the distribution flags we offer (with `MANDATORY_25_DIGEST` on its
//! real bit, 26), the handshake messages (`N`/`n` names, status, challenge,
//! complement, reply, ack), the cookie check both ways and the flags we
//! require from a peer. Every message is read into a buffer of at most
//! 65535 bytes (its u16 length) and parsed with bounds checks.
//!
//! Written here rather than taken from erl_dist 0.8, whose "alive" status
//! handling is broken both ways: a node that sees a second connection from
//! a peer it is connected to must ask that peer (`alive` -> `true`/`false`)
//! to resolve simultaneous connects and restarts as OTP does. The caller
//! decides the status; this module only speaks it.

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Distribution flag bits (erts `dist.h`).
pub mod flags {
    pub const PUBLISHED: u64 = 0x01;
    pub const EXTENDED_REFERENCES: u64 = 0x04;
    pub const DIST_MONITOR: u64 = 0x08;
    pub const FUN_TAGS: u64 = 0x10;
    pub const DIST_MONITOR_NAME: u64 = 0x20;
    pub const NEW_FUN_TAGS: u64 = 0x80;
    pub const EXTENDED_PIDS_PORTS: u64 = 0x100;
    pub const EXPORT_PTR_TAG: u64 = 0x200;
    pub const BIT_BINARIES: u64 = 0x400;
    pub const NEW_FLOATS: u64 = 0x800;
    pub const DIST_HDR_ATOM_CACHE: u64 = 0x2000;
    pub const UTF8_ATOMS: u64 = 0x10000;
    pub const MAP_TAG: u64 = 0x20000;
    pub const BIG_CREATION: u64 = 0x40000;
    pub const HANDSHAKE_23: u64 = 0x1000000;
    pub const UNLINK_ID: u64 = 0x2000000;
    /// Bit 26. erl_dist 0.8 puts it on bit 36, which OTP 27 rejects.
    pub const MANDATORY_25_DIGEST: u64 = 0x4000000;
    pub const SPAWN: u64 = 1 << 32;
    pub const NAME_ME: u64 = 1 << 33;
    pub const V4_NC: u64 = 1 << 34;
    pub const ALIAS: u64 = 1 << 35;

    /// What OTP 25 requires of every peer (`DFLAG_DIST_MANDATORY_25`).
    pub const MANDATORY_25: u64 = EXTENDED_REFERENCES
        | FUN_TAGS
        | EXTENDED_PIDS_PORTS
        | UTF8_ATOMS
        | NEW_FUN_TAGS
        | BIG_CREATION
        | NEW_FLOATS
        | MAP_TAG
        | EXPORT_PTR_TAG
        | BIT_BINARIES
        | HANDSHAKE_23;
    /// OTP 26+ mandatory set: OTP 25's plus V4_NC and UNLINK_ID.
    pub const MANDATORY_26: u64 = MANDATORY_25 | V4_NC | UNLINK_ID;

    /// Everything we offer. No atom cache, no fragments, no EXIT_PAYLOAD needs.
    pub fn offered(published: bool) -> u64 {
        let base =
            MANDATORY_26 | MANDATORY_25_DIGEST | DIST_MONITOR | DIST_MONITOR_NAME | SPAWN | ALIAS;
        if published {
            base | PUBLISHED
        } else {
            base
        }
    }
}

/// Handshake layer errors.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("wrong cookie (peer {peer})")]
    CookieMismatch { peer: String },
    #[error("peer {peer} lacks mandatory distribution flags {missing:#x}")]
    MissingFlags { peer: String, missing: u64 },
    #[error("peer {peer} asked for a dynamic name (not supported)")]
    DynamicName { peer: String },
    #[error("simultaneous connect: peer {peer} continues its own attempt")]
    Nok { peer: String },
    #[error("peer {peer} refused the connection ({status})")]
    Refused { peer: String, status: String },
    #[error("connection attempt to {peer} no longer wanted")]
    Declined { peer: String },
    #[error("handshake with {peer} failed: {reason}")]
    Failed { peer: String, reason: String },
}

/// What a finished handshake tells us about the peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub flags: u64,
    pub creation: u32,
}

fn check_flags(peer: &str, flags: u64) -> Result<(), HandshakeError> {
    let missing = flags::MANDATORY_25 & !flags;
    if missing != 0 {
        return Err(HandshakeError::MissingFlags {
            peer: peer.into(),
            missing,
        });
    }
    Ok(())
}

/// A random challenge (std's SipHash keys come from the OS RNG).
fn challenge() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// `md5(Cookie ++ integer_to_list(Challenge))`, as dist_util computes it.
fn digest(cookie: &str, challenge: u32) -> [u8; 16] {
    let mut ctx = md5::Context::new();
    ctx.consume(cookie.as_bytes());
    ctx.consume(challenge.to_string().as_bytes());
    ctx.finalize().0
}

fn failed(peer: &str, reason: impl Into<String>) -> HandshakeError {
    HandshakeError::Failed {
        peer: peer.into(),
        reason: reason.into(),
    }
}

async fn send_msg(s: &mut TcpStream, peer: &str, body: &[u8]) -> Result<(), HandshakeError> {
    let len = u16::try_from(body.len()).map_err(|_| failed(peer, "handshake message too long"))?;
    let mut buf = Vec::with_capacity(body.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    s.write_all(&buf)
        .await
        .map_err(|e| failed(peer, e.to_string()))
}

async fn recv_msg(s: &mut TcpStream, peer: &str) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            failed(peer, "connection closed by peer (wrong cookie or refused)")
        } else {
            failed(peer, e.to_string())
        }
    })?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)
        .await
        .map_err(|e| failed(peer, e.to_string()))?;
    Ok(body)
}

/// Bounds-checked reader over one handshake message.
struct Msg<'a> {
    b: &'a [u8],
    peer: &'a str,
}

impl<'a> Msg<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.b.len() < n {
            return Err(failed(self.peer, "truncated handshake message"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, HandshakeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, HandshakeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, HandshakeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, HandshakeError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn name(&mut self, n: usize) -> Result<String, HandshakeError> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| failed(self.peer, "node name is not UTF-8"))?;
        if crate::node::split_name(s).is_none() {
            return Err(failed(self.peer, format!("bad node name {s:?}")));
        }
        Ok(s.to_owned())
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

/// Our name message (`N`, version 6).
fn name_msg(our_name: &str, creation: u32, our_flags: u64) -> Vec<u8> {
    let mut m = vec![b'N'];
    m.extend_from_slice(&our_flags.to_be_bytes());
    m.extend_from_slice(&creation.to_be_bytes());
    m.extend_from_slice(&(our_name.len() as u16).to_be_bytes());
    m.extend_from_slice(our_name.as_bytes());
    m
}

/// Connects as the initiating side over an open socket. `still_wanted` is
/// asked when the peer answers `alive` (it believes we are connected): true
/// if this attempt still owns our side's slot (we restarted, or the old
/// connection is dead), false if another connection replaced it.
pub async fn connect(
    mut s: TcpStream,
    our_name: &str,
    creation: u32,
    our_flags: u64,
    cookie: &str,
    peer_name: &str,
    still_wanted: impl Fn() -> bool,
) -> Result<(TcpStream, Peer), HandshakeError> {
    let peer = peer_name;
    send_msg(&mut s, peer, &name_msg(our_name, creation, our_flags)).await?;
    let status = recv_msg(&mut s, peer).await?;
    let mut m = Msg { b: &status, peer };
    if m.u8()? != b's' {
        return Err(failed(peer, "expected a status message"));
    }
    match m.rest() {
        b"ok" | b"ok_simultaneous" => {}
        b"nok" => return Err(HandshakeError::Nok { peer: peer.into() }),
        b"alive" => {
            let go = still_wanted();
            send_msg(&mut s, peer, if go { b"strue" } else { b"sfalse" }).await?;
            if !go {
                return Err(HandshakeError::Declined { peer: peer.into() });
            }
        }
        other => {
            return Err(HandshakeError::Refused {
                peer: peer.into(),
                status: String::from_utf8_lossy(other).into_owned(),
            })
        }
    }
    // Challenge: N (version 6) or the old n (we sent N, so normally N).
    let ch = recv_msg(&mut s, peer).await?;
    let mut m = Msg { b: &ch, peer };
    let (flags, their_challenge, their_creation, name) = match m.u8()? {
        b'N' => {
            let flags = m.u64()?;
            let c = m.u32()?;
            let cr = m.u32()?;
            let n = usize::from(m.u16()?);
            (flags, c, cr, m.name(n)?)
        }
        b'n' => {
            let _version = m.u16()?;
            let flags = u64::from(m.u32()?);
            let c = m.u32()?;
            let n = m.rest().len();
            m = Msg {
                b: &ch[ch.len() - n..],
                peer,
            };
            (flags, c, 0, m.name(n)?)
        }
        t => return Err(failed(peer, format!("unexpected challenge tag {t}"))),
    };
    if name != peer_name {
        return Err(failed(peer, format!("peer calls itself {name}")));
    }
    check_flags(peer, flags)?;
    let ours = challenge();
    let mut reply = vec![b'r'];
    reply.extend_from_slice(&ours.to_be_bytes());
    reply.extend_from_slice(&digest(cookie, their_challenge));
    send_msg(&mut s, peer, &reply).await?;
    let ack = recv_msg(&mut s, peer).await?;
    let mut m = Msg { b: &ack, peer };
    if m.u8()? != b'a' {
        return Err(failed(peer, "expected challenge ack"));
    }
    if m.take(16)? != digest(cookie, ours) {
        return Err(HandshakeError::CookieMismatch { peer: peer.into() });
    }
    Ok((
        s,
        Peer {
            name,
            flags,
            creation: their_creation,
        },
    ))
}

/// First half of an accepted handshake: the peer's name is known.
pub struct Accepting {
    s: TcpStream,
    /// The name the peer announced.
    pub peer_name: String,
    /// The flags it announced.
    pub peer_flags: u64,
    /// Its creation (0 until the complement for an old `n` name).
    pub peer_creation: u32,
    old_name: bool,
    our_name: String,
    creation: u32,
    our_flags: u64,
    cookie: String,
}

/// Reads the peer's name (`N` or old `n`) on an accepted socket.
pub async fn accept_name(
    mut s: TcpStream,
    our_name: &str,
    creation: u32,
    our_flags: u64,
    cookie: &str,
) -> Result<Accepting, HandshakeError> {
    let msg = recv_msg(&mut s, "?").await?;
    let mut m = Msg { b: &msg, peer: "?" };
    let (flags, cr, name, old) = match m.u8()? {
        b'N' => {
            let flags = m.u64()?;
            let cr = m.u32()?;
            let n = usize::from(m.u16()?);
            if flags & flags::NAME_ME != 0 {
                return Err(HandshakeError::DynamicName { peer: "?".into() });
            }
            (flags, cr, m.name(n)?, false)
        }
        b'n' => {
            let _version = m.u16()?;
            let flags = u64::from(m.u32()?);
            let n = m.rest().len();
            let mut m2 = Msg {
                b: &msg[msg.len() - n..],
                peer: "?",
            };
            (flags, 0, m2.name(n)?, true)
        }
        t => return Err(failed("?", format!("unexpected name tag {t}"))),
    };
    check_flags(&name, flags)?;
    Ok(Accepting {
        s,
        peer_name: name,
        peer_flags: flags,
        peer_creation: cr,
        old_name: old,
        our_name: our_name.into(),
        creation,
        our_flags,
        cookie: cookie.into(),
    })
}

/// How to answer a peer whose name we have read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptStatus {
    /// Go on.
    Ok,
    /// Go on; we dropped our own attempt to this peer.
    OkSimultaneous,
    /// Stop: our own attempt to this peer continues.
    Nok,
    /// We believe we are connected: the peer says whether to go on.
    Alive,
}

impl Accepting {
    /// Sends the status and, unless refused, completes the handshake
    /// (challenge, cookie check both ways).
    pub async fn finish(self, status: AcceptStatus) -> Result<(TcpStream, Peer), HandshakeError> {
        let Accepting {
            mut s,
            peer_name,
            mut peer_flags,
            mut peer_creation,
            old_name,
            our_name,
            creation,
            our_flags,
            cookie,
        } = self;
        let peer = peer_name.as_str();
        let st: &[u8] = match status {
            AcceptStatus::Ok => b"sok",
            AcceptStatus::OkSimultaneous => b"sok_simultaneous",
            AcceptStatus::Nok => b"snok",
            AcceptStatus::Alive => b"salive",
        };
        send_msg(&mut s, peer, st).await?;
        match status {
            AcceptStatus::Nok => return Err(HandshakeError::Nok { peer: peer.into() }),
            AcceptStatus::Alive => {
                let answer = recv_msg(&mut s, peer).await?;
                if answer.as_slice() != b"strue" {
                    return Err(HandshakeError::Declined { peer: peer.into() });
                }
            }
            _ => {}
        }
        let ours = challenge();
        let mut ch = vec![b'N'];
        ch.extend_from_slice(&our_flags.to_be_bytes());
        ch.extend_from_slice(&ours.to_be_bytes());
        ch.extend_from_slice(&creation.to_be_bytes());
        ch.extend_from_slice(&(our_name.len() as u16).to_be_bytes());
        ch.extend_from_slice(our_name.as_bytes());
        send_msg(&mut s, peer, &ch).await?;
        let mut msg = recv_msg(&mut s, peer).await?;
        if old_name && msg.first() == Some(&b'c') {
            // Complement of an old `n` name: high flag bits and creation.
            let mut m = Msg { b: &msg[1..], peer };
            peer_flags |= u64::from(m.u32()?) << 32;
            peer_creation = m.u32()?;
            msg = recv_msg(&mut s, peer).await?;
        }
        let mut m = Msg { b: &msg, peer };
        if m.u8()? != b'r' {
            return Err(failed(peer, "expected challenge reply"));
        }
        let their_challenge = m.u32()?;
        if m.take(16)? != digest(&cookie, ours) {
            return Err(HandshakeError::CookieMismatch { peer: peer.into() });
        }
        let mut ack = vec![b'a'];
        ack.extend_from_slice(&digest(&cookie, their_challenge));
        send_msg(&mut s, peer, &ack).await?;
        Ok((
            s,
            Peer {
                name: peer_name,
                flags: peer_flags,
                creation: peer_creation,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    /// An old-style `n` name (version 5, 32-bit flags) followed by the
    /// complement, as an OTP 23/24 node may send it, is accepted.
    #[tokio::test]
    async fn accepts_old_n_name_with_complement() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let acc = accept_name(s, "srv@127.0.0.1", 5, offered(true), "C")
                .await
                .unwrap();
            assert_eq!(acc.peer_name, "old@127.0.0.1");
            acc.finish(AcceptStatus::Ok).await.map(|(_, p)| p)
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let fl = offered(true);
        let mut name = vec![b'n'];
        name.extend_from_slice(&5u16.to_be_bytes());
        name.extend_from_slice(&(fl as u32).to_be_bytes());
        name.extend_from_slice(b"old@127.0.0.1");
        send_msg(&mut c, "t", &name).await.unwrap();
        assert_eq!(recv_msg(&mut c, "t").await.unwrap(), b"sok");
        let ch = recv_msg(&mut c, "t").await.unwrap();
        assert_eq!(ch[0], b'N');
        let srv_challenge = u32::from_be_bytes([ch[9], ch[10], ch[11], ch[12]]);
        let mut comp = vec![b'c'];
        comp.extend_from_slice(&((fl >> 32) as u32).to_be_bytes());
        comp.extend_from_slice(&77u32.to_be_bytes());
        send_msg(&mut c, "t", &comp).await.unwrap();
        let mut reply = vec![b'r'];
        reply.extend_from_slice(&42u32.to_be_bytes());
        reply.extend_from_slice(&digest("C", srv_challenge));
        send_msg(&mut c, "t", &reply).await.unwrap();
        let ack = recv_msg(&mut c, "t").await.unwrap();
        assert_eq!(ack[0], b'a');
        assert_eq!(&ack[1..], &digest("C", 42));
        let peer = server.await.unwrap().unwrap();
        assert_eq!(peer.creation, 77);
        assert_eq!(peer.flags, fl);
    }

    /// A wrong cookie fails on the accepting side with CookieMismatch.
    #[tokio::test]
    async fn wrong_cookie_is_refused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let acc = accept_name(s, "srv@127.0.0.1", 5, offered(true), "right")
                .await
                .unwrap();
            acc.finish(AcceptStatus::Ok).await.map(|(_, p)| p)
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let r = connect(
            c,
            "cli@127.0.0.1",
            9,
            offered(true),
            "wrong",
            "srv@127.0.0.1",
            || true,
        )
        .await;
        assert!(r.is_err());
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::CookieMismatch { .. })
        ));
    }

    #[test]
    fn mandatory_25_digest_is_bit_26() {
        assert_eq!(MANDATORY_25_DIGEST, 1 << 26);
        assert_eq!(MANDATORY_25_DIGEST, 0x0400_0000);
        let f = offered(true);
        assert_ne!(f & MANDATORY_25_DIGEST, 0);
        // Never erl_dist's wrong bit 36, never the atom cache or fragments.
        assert_eq!(f & (1 << 36), 0);
        assert_eq!(f & DIST_HDR_ATOM_CACHE, 0);
        assert_eq!(f & 0x800000, 0);
        assert_eq!(f & MANDATORY_26, MANDATORY_26);
        assert_eq!(offered(false) & PUBLISHED, 0);
    }
}
