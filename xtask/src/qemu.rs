//! `cargo xtask qemu`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`qemu` is not built yet")
}
