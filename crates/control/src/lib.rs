//! Control-socket protocol.
