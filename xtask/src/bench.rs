//! `cargo xtask bench`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`bench` is not built yet")
}
