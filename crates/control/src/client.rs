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
