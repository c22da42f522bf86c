//! The control socket: where `sbcctl` and `sbc-console` ask `sbcd` things (protocol in the
//! `control` crate: one JSON line per request, answers in order, events after `Subscribe`).
//!
//! This module owns the socket file (directory, stale socket, permissions) and the per-connection
//! line handling. It answers nothing itself: every request is routed to the part of the daemon
//! that owns the answer (see [`Router`]), and a part that is absent answers
//! [`Reply::NotAvailable`].

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use control::{Event, Reply, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Longest request line accepted; a client sending more is cut off (requests are tiny).
const MAX_LINE: u64 = 64 * 1024;

/// A request on its way to the part of the daemon that answers it.
#[derive(Debug)]
pub struct Ask {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Where requests go. A `None` part answers "not available".
#[derive(Debug, Clone)]
pub struct Router {
    /// The engine thread: system state, calls, registrations, upstreams, stats.
    pub engine: Option<mpsc::Sender<Ask>>,
    /// The panel task: `show panel`, simulated presses.
    pub panel: Option<mpsc::Sender<Ask>>,
    /// The control plane's own answers (health, log).
    pub local: Option<mpsc::Sender<Ask>>,
    /// State changes and notices for subscribers.
    pub events: broadcast::Sender<Event>,
}

impl Router {
    /// Answers one request by asking its owner.
    pub async fn answer(&self, request: Request) -> Response {
        if request == Request::ShowMetrics {
            return Response::Ok {
                reply: Reply::Metrics(Box::new(self.metrics().await)),
            };
        }
        self.route(request).await
    }

    /// What `show metrics` (and the HTTP endpoint) export: the answers of the show commands
    /// it is made of, each part that is absent or fails simply left out.
    pub async fn metrics(&self) -> control::metrics::MetricsSnapshot {
        let mut snapshot = control::metrics::MetricsSnapshot::default();
        let ok = |response| match response {
            Response::Ok { reply } => Some(reply),
            _ => None,
        };
        if let Some(Reply::SystemState(s)) = ok(self.route(Request::ShowSystemState).await) {
            snapshot.system_state = Some(s);
        }
        if let Some(Reply::Stats(stats)) = ok(self.route(Request::ShowStats).await) {
            snapshot.stats = stats;
        }
        if let Some(Reply::Upstreams(ups)) = ok(self.route(Request::ShowUpstreams).await) {
            snapshot.upstreams = ups;
        }
        if let Some(Reply::Health(h)) = ok(self.route(Request::ShowHealth).await) {
            snapshot.health = Some(h);
        }
        if let Some(Reply::Twin(t)) = ok(self.route(Request::ShowTwin).await) {
            snapshot.twin = Some(*t);
        }
        snapshot
    }

    /// Asks the part of the daemon that owns the answer.
    async fn route(&self, request: Request) -> Response {
        let (target, what) =
            match &request {
                Request::ShowSystemState
                | Request::SetSystemState { .. }
                | Request::ShowCalls
                | Request::ShowRegistrations
                | Request::ShowUpstreams
                | Request::ShowStats
                | Request::ShowTwin
                | Request::Switchover => (&self.engine, "the SIP engine"),
                Request::ShowPanel | Request::PanelPress { .. } => (&self.panel, "the front panel"),
                Request::ShowHealth | Request::ShowVersion | Request::ShowLog { .. } => {
                    (&self.local, "the control plane")
                }
                Request::Reboot => return not_available(
                    "reboot",
                    "sbcd does not reboot the box; use the console's reboot or systemctl reboot",
                ),
                // Answered by `answer`, from the others.
                Request::ShowMetrics => {
                    return Response::Ok {
                        reply: Reply::Metrics(Box::default()),
                    }
                }
                // Handled by the connection itself, before routing.
                Request::Subscribe => {
                    return Response::Ok {
                        reply: Reply::Subscribed,
                    }
                }
            };
        let Some(target) = target else {
            return not_available(what, "not running in this sbcd");
        };
        let (tx, rx) = oneshot::channel();
        if target.send(Ask { request, reply: tx }).await.is_err() {
            return Response::Error {
                message: format!("{what} has stopped"),
            };
        }
        rx.await.unwrap_or_else(|_| Response::Error {
            message: format!("{what} dropped the request"),
        })
    }
}

/// The answer for a part that is not there.
pub fn not_available(what: &str, why: &str) -> Response {
    Response::Ok {
        reply: Reply::NotAvailable {
            what: what.to_string(),
            why: why.to_string(),
        },
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create control socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("another sbcd is already answering on {path}")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket { path: PathBuf },
    #[error("cannot remove stale control socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot restrict permissions of control socket {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
}

/// Binds the socket at `path`: creates its directory, removes a stale socket left by a crashed
/// sbcd (but not a live one, nor a file that is not a socket), and restricts it to owner and
/// group (0660), since whoever can talk to it can take the box out of service.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BindError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(BindError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|source| {
        BindError::Permissions {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Accepts connections until the listener fails; each connection runs as its own task.
pub async fn serve(listener: UnixListener, router: Router) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let router = router.clone();
                tokio::spawn(connection(stream, router));
            }
            Err(e) => {
                // Out of file descriptors and the like: log, back off briefly, keep serving.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client: answers its requests in order; after `Subscribe`, also pushes events.
async fn connection(stream: UnixStream, router: Router) {
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut forwarder: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        if buf.len() as u64 > MAX_LINE {
            let resp = Response::Error {
                message: format!("request longer than {MAX_LINE} bytes"),
            };
            let _ = out_tx.send(control::encode_response(&resp)).await;
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            continue;
        }
        match control::decode_request(&text) {
            Ok(Request::Subscribe) => {
                // Subscribe before answering so no event is missed, and start forwarding after
                // the answer is queued so `Subscribed` is the first line the client sees.
                let events = router.events.subscribe();
                let line = control::encode_response(&Response::Ok {
                    reply: Reply::Subscribed,
                });
                if out_tx.send(line).await.is_err() {
                    break;
                }
                if forwarder.is_none() {
                    forwarder = Some(spawn_event_forwarder(events, out_tx.clone()));
                }
            }
            decoded => {
                let response = match decoded {
                    Ok(request) => router.answer(request).await,
                    Err(e) => Response::Error {
                        message: e.to_string(),
                    },
                };
                if out_tx
                    .send(control::encode_response(&response))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // The client is gone (or hung up its sending side): stop pushing events to it.
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}

/// Copies events to one subscriber until it goes away.
fn spawn_event_forwarder(
    mut events: broadcast::Receiver<Event>,
    out: mpsc::Sender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => Event::Notice {
                    message: format!("{n} events were lost: this subscriber read too slowly"),
                },
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let line = control::encode_response(&Response::Event { event });
            if out.send(line).await.is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    fn router(events: broadcast::Sender<Event>) -> Router {
        Router {
            engine: None,
            panel: None,
            local: None,
            events,
        }
    }

    async fn ask(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
        w: &mut tokio::net::unix::OwnedWriteHalf,
        text: &str,
    ) -> Response {
        w.write_all(text.as_bytes()).await.unwrap();
        let line = lines.next_line().await.unwrap().unwrap();
        control::decode_response(&line).unwrap()
    }

    #[tokio::test]
    async fn answers_every_request_and_pushes_events_after_subscribe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/sbc/control.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let (events, _) = broadcast::channel(8);
        tokio::spawn(serve(listener, router(events.clone())));

        let (r, mut w) = UnixStream::connect(&path).await.unwrap().into_split();
        let mut lines = BufReader::new(r).lines();
        let calls = control::encode_request(&Request::ShowCalls);
        assert!(matches!(
            ask(&mut lines, &mut w, &calls).await,
            Response::Ok {
                reply: Reply::NotAvailable { .. }
            }
        ));
        assert!(matches!(
            ask(&mut lines, &mut w, "\u{1b}[A not json\n").await,
            Response::Error { .. }
        ));
        let twin = control::encode_request(&Request::ShowTwin);
        assert!(matches!(
            ask(&mut lines, &mut w, &twin).await,
            Response::Ok {
                reply: Reply::NotAvailable { .. }
            }
        ));
        let subscribe = control::encode_request(&Request::Subscribe);
        assert_eq!(
            ask(&mut lines, &mut w, &subscribe).await,
            Response::Ok {
                reply: Reply::Subscribed
            }
        );
        let event = Event::Notice {
            message: "hello".into(),
        };
        events.send(event.clone()).unwrap();
        let line = lines.next_line().await.unwrap().unwrap();
        assert_eq!(
            control::decode_response(&line).unwrap(),
            Response::Event { event }
        );
    }

    #[tokio::test]
    async fn a_live_socket_is_kept_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(BindError::InUse { .. })));
        drop(live);
        // The file is still there, but nobody answers: stale.
        assert!(path.exists());
        bind(&path).unwrap();

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(bind(&file), Err(BindError::NotASocket { .. })));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
