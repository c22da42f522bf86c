//! `cargo xtask bench` part: bench_parser.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`bench_parser` is not built yet")
}
