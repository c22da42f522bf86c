//! `cargo xtask ci`: exactly what `.ci/run` runs.

pub fn run(args: crate::test::Args) -> anyhow::Result<()> {
    crate::test::run(args)
}
