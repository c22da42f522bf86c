//! The policy of SIP's connection-oriented transports (TCP now, SCTP next), without sockets:
//! which received bytes make a message, a keep-alive or bad input and what bad input is
//! answered, when a connection is closed for silence or slowness, how it closes (gracefully:
//! a shutdown, never a reset), and who may hold a connection at all.
//!
//! - [`Connection`]: one connection's sans-IO machine (framing, the RFC 5626 keep-alive pong,
//!   the bad-input verdict, idle / message / write deadlines, the closing states). A byte
//!   stream and a transport that keeps message boundaries ([`Mode::Records`], SCTP's MSG_EOR)
//!   share it.
//! - [`Admission`]: the connection caps (per source, per listener, for the box) and the bound
//!   on refused connections waiting out their close.
//!
//! Not here: sockets, tasks and queues of outgoing messages (the shells in `sbcd` own them and
//! bound them in bytes), and which connection a message goes on (the proxy's decision). Time is
//! passed in: nothing here reads a clock.

pub mod admission;
mod connection;
mod receive;

pub use admission::{Admission, Caps, Refused, MAX_LINGERING};
pub use connection::{Config, Connection, Ending, Output, Why};
pub use receive::Mode;

#[cfg(test)]
mod tests;
