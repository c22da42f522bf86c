//! The optional HTTP endpoint for scrapers (`[control] metrics_http`): `GET /metrics` answers
//! the Prometheus text of `show metrics`, built by the same router from the same answers.
//!
//! Decided here: what a request may be and what it gets. It is the smallest HTTP/1.x server
//! that a scraper needs, on purpose: one request per connection (`Connection: close`), a
//! request head of at most 8 KiB read within 5 s, `GET` (or `HEAD`) of `/metrics` (a query
//! string is ignored) answered 200, another path 404, another method 405, anything unreadable
//! 400. It carries no credentials and changes nothing; the configuration puts it on a core
//! listener's address and the firewall admits it only on the core port.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::control_server::Router;

/// Longest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONCURRENT: usize = 8;

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: the body too.
    Metrics,
    /// `HEAD /metrics`: the headers only.
    MetricsHead,
    /// Refused with this status.
    Refuse(u16),
}

/// Reads the request line of `head` (everything up to the blank line, or what came of it).
pub fn route(head: &[u8]) -> Route {
    let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
        return Route::Refuse(400);
    };
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::Refuse(400);
    };
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Route::Refuse(400);
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Refuse(400);
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("HEAD", "/metrics") => Route::MetricsHead,
        ("GET" | "HEAD", _) => Route::Refuse(404),
        _ => Route::Refuse(405),
    }
}

/// The whole response for `route`, with `body` the exposition (used for 200 only).
pub fn response(route: Route, body: &str) -> Vec<u8> {
    let (status, content_type, body, send_body) = match route {
        Route::Metrics => ("200 OK", control::metrics::CONTENT_TYPE, body, true),
        Route::MetricsHead => ("200 OK", control::metrics::CONTENT_TYPE, body, false),
        Route::Refuse(code) => {
            let (status, text) = match code {
                404 => ("404 Not Found", "only /metrics is served here\n"),
                405 => ("405 Method Not Allowed", "only GET and HEAD\n"),
                _ => ("400 Bad Request", "not an HTTP/1 request\n"),
            };
            (status, "text/plain; charset=utf-8", text, true)
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if route == Route::Refuse(405) {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if send_body {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

/// Binds `addr` (with IP_FREEBIND, so a twin's service address may be given before it is
/// held).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = netif::bind_tcp_listener_freebind(addr, 64)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves scrapers until the listener fails.
pub async fn serve(listener: std::net::TcpListener, router: Router) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics endpoint unavailable");
            return;
        }
    };
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let router = router.clone();
                tokio::spawn(async move {
                    one_request(stream, &router).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn one_request(mut stream: TcpStream, router: &Router) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let route = route(&head);
    let body = match route {
        Route::Metrics | Route::MetricsHead => {
            control::metrics::exposition(&router.metrics().await)
        }
        Route::Refuse(_) => String::new(),
    };
    let _ = stream.write_all(&response(route, &body)).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(
            route(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::MetricsHead);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::Refuse(404));
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::Refuse(405));
        for garbage in [
            &b""[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/1.1",
            b"GET  /metrics HTTP/1.1\r\n",
            b"GET /metrics SIP/2.0\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n",
        ] {
            assert_eq!(route(garbage), Route::Refuse(400), "{garbage:?}");
        }
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let ok = String::from_utf8(response(Route::Metrics, "a 1\n")).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(ok.contains("Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"));
        let head = String::from_utf8(response(Route::MetricsHead, "a 1\n")).unwrap();
        assert!(head.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let refused = String::from_utf8(response(Route::Refuse(405), "")).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(refused.contains("Allow: GET, HEAD\r\n"));
    }
}
