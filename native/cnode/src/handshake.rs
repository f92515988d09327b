//! Distribution handshake (protocol version 6) in both directions.
//!
//! Owns: the distribution flags we offer (with `MANDATORY_25_DIGEST` on its
//! real bit, 26), the cookie check both ways (via `erl_dist::handshake` over
//! `tokio_util::compat`), and the flags we require from a peer. Does not
//! decide simultaneous-connect outcomes: the caller passes the status.

use erl_dist::handshake::{
    ClientSideHandshake, HandshakeError as ErlHsError, HandshakeStatus, ServerSideHandshake,
};
use erl_dist::node::{Creation, LocalNode, NodeName};
use erl_dist::DistributionFlags;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

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
    #[error("handshake with {peer} timed out")]
    Timeout { peer: String },
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

fn local(name: &str, creation: u32, flags: u64) -> Result<LocalNode, String> {
    let name: NodeName = name
        .parse()
        .map_err(|e: erl_dist::node::NodeNameError| e.to_string())?;
    Ok(LocalNode {
        name,
        flags: DistributionFlags::from_bits_truncate(flags),
        creation: Creation::new(creation),
    })
}

fn map_err(peer: &str, e: ErlHsError) -> HandshakeError {
    match e {
        ErlHsError::CookieMismatch => HandshakeError::CookieMismatch { peer: peer.into() },
        ErlHsError::OngoingHandshake => HandshakeError::Nok { peer: peer.into() },
        ErlHsError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            HandshakeError::Failed {
                peer: peer.into(),
                reason: "connection closed by peer (wrong cookie or refused)".into(),
            }
        }
        other => HandshakeError::Failed {
            peer: peer.into(),
            reason: other.to_string(),
        },
    }
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

/// Connects as the initiating side over an already-open socket.
pub async fn connect(
    stream: TcpStream,
    our_name: &str,
    creation: u32,
    our_flags: u64,
    cookie: &str,
    peer_name: &str,
) -> Result<(TcpStream, Peer), HandshakeError> {
    let local = local(our_name, creation, our_flags).map_err(|reason| HandshakeError::Failed {
        peer: peer_name.into(),
        reason,
    })?;
    let mut hs = ClientSideHandshake::new(stream.compat(), local, cookie);
    let status = hs
        .execute_send_name(6)
        .await
        .map_err(|e| map_err(peer_name, e))?;
    if status == HandshakeStatus::Nok {
        return Err(HandshakeError::Nok {
            peer: peer_name.into(),
        });
    }
    let (stream, peer) = hs
        .execute_rest(true)
        .await
        .map_err(|e| map_err(peer_name, e))?;
    let name = peer.name.to_string();
    if name != peer_name {
        return Err(HandshakeError::Failed {
            peer: peer_name.into(),
            reason: format!("peer calls itself {name}"),
        });
    }
    check_flags(&name, peer.flags.bits())?;
    Ok((
        stream.into_inner(),
        Peer {
            name,
            flags: peer.flags.bits(),
            creation: peer.creation.map(|c| c.get()).unwrap_or(0),
        },
    ))
}

/// First half of an accepted handshake: the peer's name is known.
pub struct Accepting {
    hs: ServerSideHandshake<Compat<TcpStream>>,
    /// The name the peer announced.
    pub peer_name: String,
}

/// Reads the peer's name on an accepted socket.
pub async fn accept_name(
    stream: TcpStream,
    our_name: &str,
    creation: u32,
    our_flags: u64,
    cookie: &str,
) -> Result<Accepting, HandshakeError> {
    let local = local(our_name, creation, our_flags).map_err(|reason| HandshakeError::Failed {
        peer: "?".into(),
        reason,
    })?;
    let mut hs = ServerSideHandshake::new(stream.compat(), local, cookie);
    match hs.execute_recv_name().await.map_err(|e| map_err("?", e))? {
        Some(name) => Ok(Accepting {
            hs,
            peer_name: name.to_string(),
        }),
        None => Err(HandshakeError::DynamicName { peer: "?".into() }),
    }
}

/// How to answer a peer whose name we have read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptStatus {
    Ok,
    OkSimultaneous,
    Nok,
}

impl Accepting {
    /// Sends the status and, unless it is `Nok`, completes the handshake
    /// (challenge, cookie check both ways).
    pub async fn finish(self, status: AcceptStatus) -> Result<(TcpStream, Peer), HandshakeError> {
        let peer_name = self.peer_name;
        let st = match status {
            AcceptStatus::Ok => HandshakeStatus::Ok,
            AcceptStatus::OkSimultaneous => HandshakeStatus::OkSimultaneous,
            AcceptStatus::Nok => HandshakeStatus::Nok,
        };
        let (stream, peer) = self
            .hs
            .execute_rest(st)
            .await
            .map_err(|e| map_err(&peer_name, e))?;
        check_flags(&peer_name, peer.flags.bits())?;
        Ok((
            stream.into_inner(),
            Peer {
                name: peer_name,
                flags: peer.flags.bits(),
                creation: peer.creation.map(|c| c.get()).unwrap_or(0),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;

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
