//! `cargo xtask flash`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`flash` is not built yet")
}
