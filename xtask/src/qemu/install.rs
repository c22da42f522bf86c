//! QEMU for x86-64 without touching the host's packages: the `.deb` files that
//! `apt-get install qemu-system-x86` would install are downloaded and unpacked into the cache,
//! and QEMU runs from there with `LD_LIBRARY_PATH` and `-L`.
//!
//! Installing the package properly is not an option on these hosts: bookworm's QEMU 7.2
//! conflicts with the preinstalled qemu-utils 10 from backports and would remove it.

use crate::image::cache_dir;
use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// An unpacked QEMU.
#[derive(Debug)]
pub struct Qemu {
    pub tree: PathBuf,
}

impl Qemu {
    /// Finds the unpacked QEMU in the cache, fetching it on first use.
    pub fn get() -> Result<Qemu> {
        let tree = cache_dir().join("qemu/root");
        let stamp = cache_dir().join("qemu/unpacked");
        if !stamp.exists() {
            fetch(&tree)?;
            fs::write(&stamp, "qemu-system-x86\n")
                .with_context(|| format!("writing {}", stamp.display()))?;
        }
        Ok(Qemu { tree })
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.tree.join("usr/bin/qemu-system-x86_64"));
        cmd.env("LD_LIBRARY_PATH", self.library_path());
        // Firmware: SeaBIOS and QEMU's own option ROMs, from the unpacked tree only.
        cmd.arg("-L").arg(self.tree.join("usr/share/qemu"));
        cmd.arg("-L").arg(self.tree.join("usr/share/seabios"));
        cmd
    }

    fn library_path(&self) -> String {
        let dirs = [
            self.tree
                .join("usr/lib/x86_64-linux-gnu")
                .display()
                .to_string(),
            self.tree.join("lib/x86_64-linux-gnu").display().to_string(),
        ];
        dirs.join(":")
    }
}

fn fetch(tree: &PathBuf) -> Result<()> {
    eprintln!(
        "xtask qemu: fetching QEMU's packages into {}",
        tree.display()
    );
    let sim = Command::new("apt-get")
        .args([
            "install",
            "-s",
            "--no-install-recommends",
            "qemu-system-x86",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("running apt-get install -s qemu-system-x86")?;
    let text = String::from_utf8_lossy(&sim.stdout);
    let packages: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    if packages.is_empty() {
        bail!(
            "apt-get install -s qemu-system-x86 lists nothing to install (stderr: {})",
            String::from_utf8_lossy(&sim.stderr).trim()
        );
    }
    let debs = cache_dir().join("qemu/debs");
    if tree.exists() {
        fs::remove_dir_all(tree).with_context(|| format!("removing partial {}", tree.display()))?;
    }
    fs::create_dir_all(tree).with_context(|| format!("creating {}", tree.display()))?;
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    util::run(
        Command::new("apt-get")
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
            .args(&packages)
            .current_dir(&debs),
    )?;
    for p in &packages {
        let deb = crate::image::download_deb(p, &debs)?;
        util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tree))?;
    }
    Ok(())
}
