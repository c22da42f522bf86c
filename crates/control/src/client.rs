//! A blocking client of the control socket, for `sbcctl` and `sbc-console`.

use crate::{decode_response, encode_request, DecodeError, Event, Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `sbcd` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sbc/control.sock";

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("sbcd is not running (no control socket at {path}): {source}")]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sbcd closed the connection before answering")]
    Closed,
    #[error("sbcd sent something this client does not understand: {0}")]
    Decode(#[from] DecodeError),
}

/// One connection to `sbcd`.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`; answers wait at most `timeout` (None: forever).
    pub fn connect(path: &Path, timeout: Option<Duration>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::NotRunning {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        };
        stream.set_read_timeout(timeout).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and waits for its answer.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let line = encode_request(req);
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| self.io(source))?;
        self.read_response()
    }

    /// Reads the next server line (an answer, or an event after [`Request::Subscribe`]).
    pub fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| self.io(source))?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(decode_response(&line)?)
    }

    /// Reads the next pushed event, skipping anything else.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Response::Event { event } = self.read_response()? {
                return Ok(event);
            }
        }
    }

    /// Changes how long reads wait (None: forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.writer
            .set_read_timeout(timeout)
            .map_err(|source| self.io(source))
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// The wall clock now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// The front ends' shorthand: the rendering itself (`render_text_at`) is pure and takes the
// time; these read the clock here, in the client, the I/O side of this crate.
impl Response {
    /// [`Response::render_text_at`] with the wall clock's now.
    pub fn render_text(&self) -> String {
        self.render_text_at(now_unix_ms())
    }
}

impl crate::Reply {
    /// [`crate::Reply::render_text_at`] with the wall clock's now.
    pub fn render_text(&self) -> String {
        self.render_text_at(now_unix_ms())
    }
}
