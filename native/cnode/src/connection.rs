//! One established distribution connection: the reader (bounded frames,
//! tick timeout) and the writer (queued frames, ticks at a quarter of the
//! tick time).
//!
//! Owns: the socket after the handshake. Every frame goes through
//! `frame::decode_body`; a bad frame closes this connection only. Decoded
//! control messages go to `process::dispatch`. Does not touch the
//! connection table (node.rs cleans up when `run` returns).

use crate::control::Control;
use crate::frame;
use crate::handshake::Peer;
use crate::node::Node;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs the connection until it ends; returns the reason.
pub(crate) async fn run(
    node: &Node,
    peer: &Peer,
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    kill: CancellationToken,
) -> String {
    let (mut rd, mut wr) = stream.into_split();
    let tick_time = node.inner.cfg.tick_time;
    let tick_every = tick_time / 4;
    let max_frame = node.inner.cfg.max_frame;
    let node_cancel = node.inner.cancel.clone();

    let writer_kill = kill.clone();
    let writer = async move {
        let mut interval = tokio::time::interval(tick_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote = false;
        loop {
            tokio::select! {
                _ = writer_kill.cancelled() => {
                    // Flush what is already queued (say, the MONITOR_P_EXIT
                    // of a scope stopped just before shutdown), briefly.
                    let flush = async {
                        while let Ok(bytes) = rx.try_recv() {
                            if wr.write_all(&bytes).await.is_err() {
                                break;
                            }
                        }
                        let _ = wr.shutdown().await;
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(500), flush).await;
                    return if node_cancel.is_cancelled() { "node shutdown" } else { "disconnected" }.to_string();
                }
                f = rx.recv() => match f {
                    Some(bytes) => {
                        if let Err(e) = wr.write_all(&bytes).await {
                            return format!("write failed: {e}");
                        }
                        wrote = true;
                    }
                    None => return "send queue closed".to_string(),
                },
                _ = interval.tick() => {
                    if !wrote {
                        if let Err(e) = wr.write_all(&frame::TICK).await {
                            return format!("write failed: {e}");
                        }
                    }
                    wrote = false;
                }
            }
        }
    };

    let reader = async {
        let mut len_buf = [0u8; 4];
        loop {
            match tokio::time::timeout(tick_time, rd.read_exact(&mut len_buf)).await {
                Err(_) => return format!("net_tick_timeout: no data for {tick_time:?}"),
                Ok(Err(e)) => return format!("read failed: {e}"),
                Ok(Ok(_)) => {}
            }
            let len = u32::from_be_bytes(len_buf) as usize;
            if len == 0 {
                continue; // tick
            }
            if len > max_frame {
                tracing::warn!(peer = %peer.name, len, max_frame, "oversized frame: closing connection");
                return format!("frame of {len} bytes over limit");
            }
            // Grow with the data actually received: a length header alone
            // must not make us allocate max_frame bytes.
            let mut body = Vec::with_capacity(len.min(64 * 1024));
            let mut limited = (&mut rd).take(len as u64);
            match tokio::time::timeout(tick_time, limited.read_to_end(&mut body)).await {
                Err(_) => return "net_tick_timeout in frame".to_string(),
                Ok(Err(e)) => return format!("read failed: {e}"),
                Ok(Ok(n)) if n < len => return "connection closed mid-frame".to_string(),
                Ok(Ok(_)) => {}
            }
            match frame::decode_body(&body) {
                Ok((ctrl_term, payload)) => match Control::from_term(&ctrl_term) {
                    Some(ctrl) => crate::process::dispatch(node, &peer.name, ctrl, payload),
                    None => {
                        tracing::warn!(peer = %peer.name, ctrl = %ctrl_term, "malformed control message ignored")
                    }
                },
                Err(e) => {
                    tracing::warn!(peer = %peer.name, error = %e, "bad frame: closing connection");
                    return format!("bad frame: {e}");
                }
            }
        }
    };

    // The writer owns the end of the connection when we close it (it
    // flushes first); the reader ends it when the peer goes silent or away.
    let reason = tokio::select! {
        r = writer => r,
        r = reader => r,
    };
    kill.cancel();
    reason
}
