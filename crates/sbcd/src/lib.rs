//! `sbcd`: the SBC daemon's I/O shell.
//!
//! It wires the pure cores (`proxy`, `system-state`, `panel`, `console`) to sockets, threads,
//! files and the board. It decides nothing about SIP, the drain or the panel: those decisions
//! live in the cores, and this crate only carries their inputs in and their outputs out.
//!
//! The binaries are thin: `sbcd` (src/main.rs) runs [`daemon::run`], `sbcctl` (src/bin) is a
//! one-shot client of the control socket.

pub mod config;
pub mod control_server;
pub mod daemon;
pub mod engine;
pub mod firewall;
pub mod health;
pub mod keys;
pub mod logging;
pub mod metrics_http;
pub mod network_wait;
pub mod panel;
pub mod replica_link;
pub mod shard;
pub mod sip_core;
#[cfg(feature = "testport")]
pub mod testport;
pub mod transport;
pub mod twin_link;
