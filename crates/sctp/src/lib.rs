//! The kernel's one-to-one SCTP sockets (`SOCK_STREAM`, `IPPROTO_SCTP`), made safe and small:
//! a [`Listener`] that accepts associations, an [`Association`] that connects (blocking or not,
//! so that an async shell can wait on its descriptor), sends one message per call and receives
//! one **whole** message per call (the reads of a message are joined until `MSG_EOR`, up to a
//! maximum size), tells notifications ([`Notification`]: the association's state changes and
//! the peer's SHUTDOWN) from data, and closes gracefully: dropping or [`Association::close`]
//! sends SHUTDOWN, only [`Association::abort`] sends ABORT.
//!
//! What it is not for: it decides nothing about SIP (framing is the message boundary SCTP
//! keeps; what to do with a message, when to close, is the caller's), and it has no runtime:
//! the sockets are plain descriptors ([`AsFd`]), blocking by default, non-blocking on request.
//! One-to-many sockets (`SOCK_SEQPACKET`), multi-homing and streams other than 0 are left out.
//!
//! Needs a kernel with SCTP (`modprobe sctp`); where it has none, opening a socket fails with
//! an error for which [`OpenError::is_unsupported`] is true.

mod assembler;
mod notification;
mod sys;

pub use notification::{AssocState, Notification, NotificationError};

use assembler::{Assembler, Step};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// The largest SIP message sbcd takes on any transport (`[sip] max_message_bytes`' default).
pub const DEFAULT_MAX_MESSAGE: usize = 65_535;
/// One read: a whole default-sized message fits, so a SIP message takes one `recvmsg`.
pub const DEFAULT_READ_CHUNK: usize = 65_536;

/// How sockets are set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// `SCTP_NODELAY`: no Nagle-like bundling delay (SIP is request/response).
    pub nodelay: bool,
    /// The largest message [`Association::recv`] assembles; a larger one is an error.
    pub max_message: usize,
    /// Bytes asked for per `recvmsg` (a larger message takes several reads). Each association
    /// keeps a buffer of this size (plus a message being joined) for its life.
    pub read_chunk: usize,
    /// Listen backlog.
    pub backlog: i32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodelay: true,
            max_message: DEFAULT_MAX_MESSAGE,
            read_chunk: DEFAULT_READ_CHUNK,
            backlog: 128,
        }
    }
}

/// Opening, binding, listening or connecting failed.
#[derive(Debug, thiserror::Error)]
#[error("SCTP {step} for {addr}: {source}")]
pub struct OpenError {
    /// What failed: "socket", "bind", "listen", "connect", "SCTP_NODELAY", ...
    pub step: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

impl OpenError {
    /// The kernel has no SCTP (`EPROTONOSUPPORT`: module not loaded or not built).
    pub fn is_unsupported(&self) -> bool {
        self.source.raw_os_error() == Some(libc::EPROTONOSUPPORT)
    }
}

/// Receiving failed.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("SCTP receive: {0}")]
    Io(#[from] io::Error),
    /// The message passed [`Options::max_message`]; its remaining parts are skipped and the
    /// association can go on.
    #[error("SCTP message larger than the limit of {limit} bytes (dropped after {got})")]
    TooLarge { limit: usize, got: usize },
    #[error(transparent)]
    Notification(#[from] NotificationError),
}

impl RecvError {
    /// The non-blocking socket has nothing whole yet; a part may be held for the next call.
    pub fn is_would_block(&self) -> bool {
        matches!(self, RecvError::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Sending failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("SCTP send of a {len}-byte message: {source}")]
    Io {
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("SCTP send took {sent} of a {len}-byte message")]
    Partial { sent: usize, len: usize },
}

impl SendError {
    pub fn is_would_block(&self) -> bool {
        matches!(self, SendError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }
}

/// What one [`Association::recv`] gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// One whole message.
    Message(Vec<u8>),
    Notification(Notification),
    /// The association is over: the peer shut it down and everything was read. (After an
    /// ABORT the next receive fails with `ConnectionReset` instead, once the COMM_LOST
    /// notification has been read.)
    Closed,
}

fn new_socket(addr: SocketAddr) -> Result<Socket, OpenError> {
    Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(Protocol::SCTP),
    )
    .map_err(|source| OpenError {
        step: "socket",
        addr,
        source,
    })
}

/// Subscribes to the notifications [`Notification`] parses, one `SCTP_EVENT` each.
fn subscribe(socket: &Socket, addr: SocketAddr) -> Result<(), OpenError> {
    for (step, kind) in [
        ("SCTP_EVENT assoc change", sys::SCTP_ASSOC_CHANGE),
        ("SCTP_EVENT shutdown", sys::SCTP_SHUTDOWN_EVENT),
        (
            "SCTP_EVENT partial delivery",
            sys::SCTP_PARTIAL_DELIVERY_EVENT,
        ),
    ] {
        let event = sys::SctpEvent {
            se_assoc_id: 0,
            se_type: kind,
            se_on: 1,
        };
        sys::setsockopt(socket.as_fd(), libc::IPPROTO_SCTP, sys::SCTP_EVENT, &event)
            .map_err(|source| OpenError { step, addr, source })?;
    }
    Ok(())
}

fn set_nodelay(socket: &Socket, on: bool, addr: SocketAddr) -> Result<(), OpenError> {
    let value: libc::c_int = on.into();
    sys::setsockopt(
        socket.as_fd(),
        libc::IPPROTO_SCTP,
        libc::SCTP_NODELAY,
        &value,
    )
    .map_err(|source| OpenError {
        step: "SCTP_NODELAY",
        addr,
        source,
    })
}

/// A listening one-to-one SCTP socket.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    addr: SocketAddr,
    options: Options,
}

impl Listener {
    /// Binds `addr` (port 0 for any) and listens; accepted associations inherit the
    /// notification subscriptions.
    pub fn bind(addr: SocketAddr, options: Options) -> Result<Listener, OpenError> {
        let socket = new_socket(addr)?;
        let err = |step| move |source| OpenError { step, addr, source };
        socket
            .set_reuse_address(true)
            .map_err(err("SO_REUSEADDR"))?;
        subscribe(&socket, addr)?;
        set_nodelay(&socket, options.nodelay, addr)?;
        socket.bind(&SockAddr::from(addr)).map_err(err("bind"))?;
        socket.listen(options.backlog).map_err(err("listen"))?;
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        Ok(Listener {
            socket,
            addr,
            options,
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the next association (blocks unless non-blocking). The association is blocking
    /// whatever the listener is; see [`Association::set_nonblocking`].
    pub fn accept(&self) -> io::Result<(Association, SocketAddr)> {
        let (socket, peer) = self.socket.accept()?;
        socket.set_nonblocking(false)?;
        let peer = peer.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "SCTP peer address is not IP")
        })?;
        let value: libc::c_int = self.options.nodelay.into();
        sys::setsockopt(
            socket.as_fd(),
            libc::IPPROTO_SCTP,
            libc::SCTP_NODELAY,
            &value,
        )?;
        Ok((Association::new(socket, peer, &self.options), peer))
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.socket.set_nonblocking(on)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// One SCTP association on a one-to-one socket. Dropping it closes it gracefully (SHUTDOWN).
#[derive(Debug)]
pub struct Association {
    socket: Socket,
    peer: SocketAddr,
    assembler: Assembler,
}

impl Association {
    fn new(socket: Socket, peer: SocketAddr, options: &Options) -> Association {
        Association {
            socket,
            peer,
            assembler: Assembler::new(options.max_message, options.read_chunk),
        }
    }

    fn open(peer: SocketAddr, options: &Options) -> Result<Socket, OpenError> {
        let socket = new_socket(peer)?;
        subscribe(&socket, peer)?;
        set_nodelay(&socket, options.nodelay, peer)?;
        Ok(socket)
    }

    /// Connects to `peer`, blocking until the association is up or has failed.
    pub fn connect(peer: SocketAddr, options: &Options) -> Result<Association, OpenError> {
        let socket = Association::open(peer, options)?;
        socket
            .connect(&SockAddr::from(peer))
            .map_err(|source| OpenError {
                step: "connect",
                addr: peer,
                source,
            })?;
        Ok(Association::new(socket, peer, options))
    }

    /// Starts connecting on a non-blocking socket and returns at once: wait until the
    /// descriptor is writable, then call [`Association::finish_connect`].
    pub fn start_connect(peer: SocketAddr, options: &Options) -> Result<Association, OpenError> {
        let socket = Association::open(peer, options)?;
        let err = |step| {
            move |source| OpenError {
                step,
                addr: peer,
                source,
            }
        };
        socket.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
        match socket.connect(&SockAddr::from(peer)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(err("connect")(e)),
        }
        Ok(Association::new(socket, peer, options))
    }

    /// The outcome of [`Association::start_connect`], once the descriptor is writable.
    pub fn finish_connect(&self) -> Result<(), OpenError> {
        let failed = |source| OpenError {
            step: "connect",
            addr: self.peer,
            source,
        };
        match self.socket.take_error() {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(failed(e)),
            Err(e) => Err(failed(e)),
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "SCTP local address is not IP")
        })
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.socket.set_nonblocking(on)
    }

    /// A receive timeout for blocking use (tests, tools); `None` waits for ever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    /// Receives one whole message or notification. On a non-blocking socket a message that has
    /// not fully arrived is kept and the call fails with [`RecvError::is_would_block`]; the next
    /// call goes on with it.
    pub fn recv(&mut self) -> Result<Incoming, RecvError> {
        loop {
            let space = self.assembler.read_space();
            let (n, flags) = sys::recvmsg(self.socket.as_fd(), space)?;
            let notification = flags & libc::MSG_NOTIFICATION != 0;
            if n == 0 && !notification {
                return Ok(Incoming::Closed);
            }
            match self
                .assembler
                .commit(n, flags & libc::MSG_EOR != 0, notification)
            {
                Step::More => continue,
                Step::Message(m) => return Ok(Incoming::Message(m)),
                Step::TooLarge { limit, got } => return Err(RecvError::TooLarge { limit, got }),
                Step::Notification(bytes) => {
                    let parsed = Notification::parse(&bytes)?;
                    if parsed == Notification::PartialDeliveryAborted {
                        self.assembler.drop_partial();
                    }
                    return Ok(Incoming::Notification(parsed));
                }
            }
        }
    }

    /// Sends `message` as one SCTP message (each send is a whole message: the kernel sets the
    /// end of record, and never takes part of one).
    pub fn send(&self, message: &[u8]) -> Result<(), SendError> {
        let sent = self
            .socket
            .send_with_flags(message, libc::MSG_NOSIGNAL)
            .map_err(|source| SendError::Io {
                len: message.len(),
                source,
            })?;
        if sent != message.len() {
            return Err(SendError::Partial {
                sent,
                len: message.len(),
            });
        }
        Ok(())
    }

    /// Starts the graceful SHUTDOWN (after what is queued has been sent and acknowledged) and
    /// keeps the socket, so that the rest of the peer's data and the notifications can still be
    /// read until [`Incoming::Closed`].
    pub fn shutdown(&self) -> io::Result<()> {
        self.socket.shutdown(std::net::Shutdown::Write)
    }

    /// Closes gracefully: the kernel completes the SHUTDOWN sequence in the background. The
    /// same as dropping.
    pub fn close(self) {}

    /// Ends the association at once with ABORT (`SO_LINGER` 0 and close): queued data is lost.
    /// Only for when the peer must not be waited for; [`Association::close`] is the normal way.
    pub fn abort(self) -> io::Result<()> {
        self.socket.set_linger(Some(Duration::ZERO))
    }
}

impl AsFd for Association {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Association {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
