//! `sbcd`: the SBC daemon.
fn main() {}
