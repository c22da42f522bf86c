//! `cargo xtask bench` part: bench_sip.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`bench_sip` is not built yet")
}
