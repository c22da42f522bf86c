//! `cargo xtask ci`: exactly what `.ci/run` runs.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::test::run(args)
}
