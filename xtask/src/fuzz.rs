//! `cargo xtask fuzz`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`fuzz` is not built yet")
}
