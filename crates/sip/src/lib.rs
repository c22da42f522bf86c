//! SIP messages for the wire path of a session border controller: parsing without copying,
//! typed lazy access to what a proxy needs, stream framing, building responses and requests,
//! and proxy edits that copy untouched bytes verbatim.
//!
//! What it is for: every datagram or stream message the SBC receives goes through
//! [`Message::parse_with`] (after [`StreamFramer`] on streams); the proxy reads Via,
//! From/To, Call-ID, CSeq, Route, Contact, ... through typed accessors that parse on demand, and
//! writes what it forwards with an [`Editor`] and what it originates with the [`build`]
//! builders. Parsing and header access never allocate; errors say whether to answer (400, 413,
//! 505, 513) or drop ([`Error::disposition`]).
//!
//! What it is not for: no I/O, no transactions or dialogs (the `proxy` crate), no SDP, no
//! authentication, no full RFC 3261 URI equality (only the address-of-record comparison a
//! registration cache needs, [`Uri::aor_eq`]).
//!
//! ```
//! use sip::{Message, Editor, HeaderName};
//! let raw = b"OPTIONS sip:sbc.example.com SIP/2.0\r\n\
//!             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
//!             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\n\
//!             To: <sip:sbc.example.com>\r\nCall-ID: x@192.0.2.1\r\nCSeq: 1 OPTIONS\r\n\
//!             Content-Length: 0\r\n\r\n";
//! let msg = Message::parse(raw).unwrap();
//! assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK1"));
//! let mut ed = Editor::new(&msg);
//! ed.prepend_header("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKp");
//! ed.decrement_max_forwards().unwrap();
//! let mut out = Vec::new();
//! ed.write(&mut out).unwrap();
//! let fwd = Message::parse(&out).unwrap();
//! assert_eq!(fwd.vias().count(), 2);
//! assert_eq!(fwd.max_forwards().unwrap(), Some(69));
//! assert_eq!(fwd.headers_of(HeaderName::CallId).count(), 1);
//! ```

pub mod build;
pub mod edit;
pub mod error;
pub mod framing;
pub mod header_name;
pub mod limits;
pub mod message;
pub mod method;
pub mod name_addr;
pub mod params;
mod parse;
mod scan;
pub mod uri;
pub mod values;
pub mod via;

pub use build::{RequestBuilder, ResponseBuilder};
pub use edit::Editor;
pub use error::{Disposition, Error, WriteError};
pub use framing::{next_frame, Frame, Framed, StreamFramer};
pub use header_name::HeaderName;
pub use limits::{Framing, Limits, MAX_HEADERS};
pub use message::{Header, HeaderIndex, Mandatory, Message, StartLine};
pub use method::Method;
pub use name_addr::{Contact, NameAddr};
pub use params::Params;
pub use uri::{Host, Scheme, Uri};
pub use values::{CSeq, Reason, ResourcePriority, RetryAfter};
pub use via::{Rport, Transport, Via};
