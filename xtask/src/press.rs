//! `cargo xtask press`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`press` is not built yet")
}
