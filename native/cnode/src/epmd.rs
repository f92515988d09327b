//! EPMD client: register our node (and keep the registration socket open,
//! since EPMD drops the name when it closes), look up peers' ports, and
//! start `epmd -daemon` when none answers, as `erl` does.
//!
//! Owns: talking to EPMD on port 4369 (or `$ERL_EPMD_PORT`). Uses
//! `erl_dist::epmd` over `tokio_util::compat`. Knows nothing of connections.

use erl_dist::epmd::{EpmdClient, NodeEntry};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// EPMD layer errors.
#[derive(Debug, Error)]
pub enum EpmdError {
    #[error("cannot reach epmd at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("epmd protocol error: {0}")]
    Protocol(String),
    #[error("epmd refused to register {0} (name in use?)")]
    Refused(String),
    #[error("node {0} is not registered in epmd on its host")]
    UnknownNode(String),
    #[error("epmd request timed out")]
    Timeout,
}

/// The EPMD port: `$ERL_EPMD_PORT` or 4369.
pub fn epmd_port() -> u16 {
    std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4369)
}

async fn dial(host: &str) -> Result<TcpStream, EpmdError> {
    let addr = format!("{host}:{}", epmd_port());
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(EpmdError::Unreachable { addr, source }),
        Err(_) => Err(EpmdError::Timeout),
    }
}

/// A live EPMD registration: dropping it unregisters the node.
#[derive(Debug)]
pub struct Registration {
    socket: Compat<TcpStream>,
    /// The creation EPMD gave us (used in our pids, refs and handshakes).
    pub creation: u32,
}

impl Registration {
    /// Holds the registration until `cancel` fires. If EPMD goes away (its
    /// socket closes), registers again every second until it is back, so
    /// peers can keep finding us. Peers learn our creation from the
    /// handshake, so a new EPMD creation does not change our pids.
    pub async fn keep_alive(
        self,
        alive: String,
        port: u16,
        hidden: bool,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        use tokio::io::AsyncReadExt;
        let mut socket = self.socket.into_inner();
        loop {
            let mut buf = [0u8; 64];
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = socket.read(&mut buf) => match r {
                    Ok(n) if n > 0 => continue,
                    _ => tracing::warn!("epmd registration lost; registering again"),
                },
            }
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match register(&alive, port, hidden).await {
                    Ok(r) => {
                        socket = r.socket.into_inner();
                        tracing::info!("registered with epmd again");
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "epmd re-registration failed"),
                }
            }
        }
    }
}

/// Registers `alive` (the part before `@`) with the local EPMD, starting
/// `epmd -daemon` first if nothing answers.
pub async fn register(alive: &str, port: u16, hidden: bool) -> Result<Registration, EpmdError> {
    let socket = match dial("127.0.0.1").await {
        Ok(s) => s,
        Err(EpmdError::Unreachable { .. }) => {
            tracing::info!("no epmd answered; starting `epmd -daemon`");
            let _ = tokio::process::Command::new("epmd")
                .arg("-daemon")
                .status()
                .await;
            let mut last = None;
            let mut sock = None;
            for _ in 0..50 {
                match dial("127.0.0.1").await {
                    Ok(s) => {
                        sock = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match sock {
                Some(s) => s,
                None => return Err(last.unwrap_or(EpmdError::Timeout)),
            }
        }
        Err(e) => return Err(e),
    };
    let entry = if hidden {
        NodeEntry::new_hidden(alive, port)
    } else {
        NodeEntry::new(alive, port)
    };
    let fut = EpmdClient::new(socket.compat()).register(entry);
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok((sock, creation))) => Ok(Registration {
            socket: sock,
            creation: creation.get(),
        }),
        Ok(Err(erl_dist::epmd::EpmdError::RegisterNodeError { .. })) => {
            Err(EpmdError::Refused(alive.into()))
        }
        Ok(Err(e)) => Err(EpmdError::Protocol(e.to_string())),
        Err(_) => Err(EpmdError::Timeout),
    }
}

/// Looks up the distribution port of `alive` on `host`.
pub async fn lookup(alive: &str, host: &str) -> Result<u16, EpmdError> {
    let socket = dial(host).await?;
    let fut = EpmdClient::new(socket.compat()).get_node(alive);
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok(Some(entry))) => Ok(entry.port),
        Ok(Ok(None)) => Err(EpmdError::UnknownNode(format!("{alive}@{host}"))),
        Ok(Err(e)) => Err(EpmdError::Protocol(e.to_string())),
        Err(_) => Err(EpmdError::Timeout),
    }
}
