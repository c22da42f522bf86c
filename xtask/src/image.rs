//! `cargo xtask image`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`image` is not built yet")
}
