//! The replication connection's shell (SPEC §7, hot standby): one TCP connection between the
//! twins on the cross-connect, on the keep-alive's address and port. Node 1 listens, node 2
//! connects (and reconnects, every [`RETRY`], for as long as sbcd runs); only the configured
//! peer's address is accepted.
//!
//! It decides nothing: what is written, whether a connection is the twin's (the handshake's
//! HMAC) and when it is over are the `replica` session's inside the node. This module moves
//! bytes both ways and says when a connection starts and ends; each connection has a number,
//! so bytes meant for an old one never reach a new one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::config::TwinPath;

/// How long node 2 waits between connection attempts, and how long one may take.
pub const RETRY: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// From the connection to the engine.
#[derive(Debug)]
pub enum StreamIn {
    /// Connection `gen` is up.
    Opened { gen: u64 },
    /// Bytes read on connection `gen`.
    Bytes { gen: u64, bytes: Vec<u8> },
    /// Connection `gen` is over.
    Closed { gen: u64, why: String },
}

/// From the engine to the connection.
#[derive(Debug)]
pub enum StreamOut {
    /// Write on connection `gen` (dropped if that connection is gone).
    Write { gen: u64, bytes: Vec<u8> },
    /// End connection `gen` (its session ended).
    Drop { gen: u64 },
}

/// Starts the connection task on the current runtime.
pub fn spawn(
    node_id: u8,
    link: TwinPath,
) -> (
    mpsc::UnboundedSender<StreamOut>,
    mpsc::UnboundedReceiver<StreamIn>,
) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(node_id, link, out_rx, in_tx));
    (out_tx, in_rx)
}

async fn run(
    node_id: u8,
    link: TwinPath,
    mut out: mpsc::UnboundedReceiver<StreamOut>,
    into: mpsc::UnboundedSender<StreamIn>,
) {
    let listener = if node_id == 1 {
        match netif::bind_tcp_listener_freebind(link.local, 4)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
        {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(addr = %link.local, error = %e, "twin: cannot listen for the replication connection; the pair runs without replication");
                return;
            }
        }
    } else {
        None
    };
    let mut gen = 0u64;
    loop {
        let stream = match &listener {
            Some(l) => accept_from(l, link.peer.ip()).await,
            None => connect(link.local.ip(), link.peer, &mut out).await,
        };
        let Some(stream) = stream else {
            return;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "twin: TCP_NODELAY not set on the replication connection");
        }
        gen += 1;
        if into.send(StreamIn::Opened { gen }).is_err() {
            return;
        }
        tracing::info!(gen, peer = %link.peer, "twin: replication connection up");
        let why = carry(stream, gen, &mut out, &into).await;
        tracing::info!(gen, why = %why, "twin: replication connection down");
        if into.send(StreamIn::Closed { gen, why }).is_err() {
            return;
        }
    }
}

/// The next connection from the twin's address; strangers are closed at once.
async fn accept_from(listener: &TcpListener, peer: IpAddr) -> Option<TcpStream> {
    loop {
        match listener.accept().await {
            Ok((stream, from)) if from.ip() == peer => return Some(stream),
            Ok((_, from)) => {
                tracing::warn!(%from, "twin: replication connection from a stranger refused");
            }
            Err(e) => {
                tracing::debug!(error = %e, "twin: accept failed");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Connects from our cross-connect address to the twin's, retrying until it answers. Writes
/// for a connection that is gone are dropped meanwhile; `None` when the engine is gone.
async fn connect(
    local: IpAddr,
    peer: SocketAddr,
    out: &mut mpsc::UnboundedReceiver<StreamOut>,
) -> Option<TcpStream> {
    loop {
        let attempt = async {
            let socket = netif_stream_socket(local)?;
            tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(peer))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        };
        match attempt.await {
            Ok(stream) => return Some(stream),
            Err(e) => tracing::trace!(%peer, error = %e, "twin: replication connect failed"),
        }
        // Nothing to write meanwhile: whatever is queued was for a connection that is gone.
        let pause = tokio::time::sleep(RETRY);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                message = out.recv() => { message.as_ref()?; }
            }
        }
    }
}

/// A TCP socket bound (freebind: the address may come up after sbcd) to `local`, any port.
fn netif_stream_socket(local: IpAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let addr = SocketAddr::new(local, 0);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
}

/// Moves bytes both ways on connection `gen` until it ends; returns why.
async fn carry(
    stream: TcpStream,
    gen: u64,
    out: &mut mpsc::UnboundedReceiver<StreamOut>,
    into: &mpsc::UnboundedSender<StreamIn>,
) -> String {
    let (mut reader, mut writer) = stream.into_split();
    // Writes on their own task: a large write waiting for the twin's window never stops the
    // reading of its acknowledgements.
    let (write_tx, mut write_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut writing = tokio::spawn(async move {
        while let Some(bytes) = write_rx.recv().await {
            writer.write_all(&bytes).await?;
        }
        writer.shutdown().await
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return "closed by the twin".into(),
                Ok(n) => {
                    if into.send(StreamIn::Bytes { gen, bytes: buf[..n].to_vec() }).is_err() {
                        return "the engine stopped".into();
                    }
                }
                Err(e) => return format!("read: {e}"),
            },
            message = out.recv() => match message {
                Some(StreamOut::Write { gen: g, bytes }) if g == gen => {
                    if write_tx.send(bytes).is_err() {
                        return "the writer stopped".into();
                    }
                }
                Some(StreamOut::Drop { gen: g }) if g == gen => {
                    writing.abort();
                    return "the session ended".into();
                }
                Some(_) => {}
                None => return "the engine stopped".into(),
            },
            done = &mut writing => {
                return match done {
                    Ok(Ok(())) => "the writer finished".into(),
                    Ok(Err(e)) => format!("write: {e}"),
                    Err(e) => format!("the writer failed: {e}"),
                };
            }
        }
    }
}
