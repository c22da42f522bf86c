//! The session driven through the `Pair` harness: the handshake, delivery, the window, every
//! reason to close, timers and status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
mod delivery;
mod pair;
mod timers;
