//! A twin lab node booted through SeaBIOS and GRUB (`cargo xtask qemu --twin --bios`): GRUB's
//! kernel command line is the image's own, so the node cannot be told `sbc.lab` and read its
//! files from fw_cfg. It is set up the way a site sets up a box instead: its files are on its
//! own disk's data partition (`/etc/sbc/sbc.toml`, `/etc/sbc/twin.key`, the addresses in
//! `/etc/systemd/network`), which an update leaves alone.
//!
//! Each node's disk is a sparse copy of the built image made for the run
//! (`out/qemu/twin-<node>/disk-bios.img`): a factory box with the lab's site settings, written
//! with `debugfs` at the data partition's offset (read from the disk's GPT), no loop device and
//! no mount.

use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The data partition's GPT name (`docs/image.md`, "Disk layout").
const DATA_PARTITION: &str = "sbc-data";

/// Where a lab file given by fw_cfg (`opt/sbc/...`, `lab.rs`) lives on the data partition,
/// with its mode: what `apply-lab-config` does with it at boot, done once on the disk.
fn placement(fw_name: &str) -> Result<(&'static str, String, u32)> {
    let rel = fw_name
        .strip_prefix("opt/sbc/")
        .with_context(|| format!("{fw_name} is not a lab file"))?;
    Ok(match rel {
        "sbc.toml" | "twin.key" => (
            "etc/sbc",
            rel.to_string(),
            if rel == "twin.key" { 0o600 } else { 0o640 },
        ),
        _ => match rel.strip_prefix("network/") {
            Some(file) if !file.is_empty() && !file.contains('/') => {
                ("etc/systemd/network", file.to_string(), 0o644)
            }
            _ => bail!("{fw_name}: no place for it on the data partition"),
        },
    })
}

/// Makes node's disk in `dir` from `image` and writes `files` (fw_cfg name, host file) onto its
/// data partition. Returns the disk's path.
pub fn node_disk(image: &Path, dir: &Path, files: &[(String, PathBuf)]) -> Result<PathBuf> {
    if !util::have("debugfs") {
        bail!("--twin --bios needs debugfs (e2fsprogs) to put each node's settings on its disk");
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let disk = dir.join("disk-bios.img");
    let _ = fs::remove_file(&disk);
    util::run(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(image)
            .arg(&disk),
    )?;
    let device = format!("{}?offset={}", disk.display(), data_offset(&disk)?);
    let mut script = String::new();
    let mut placed = Vec::new();
    for (fw_name, file) in files {
        let (folder, name, mode) = placement(fw_name)?;
        script.push_str(&format!(
            "cd /{folder}\nrm {name}\nwrite {} {name}\nsif {name} mode 0{:o}\n\
             sif {name} uid 0\nsif {name} gid 0\n",
            file.display(),
            0o100000 | mode
        ));
        placed.push((format!("/{folder}/{name}"), file));
    }
    let commands = dir.join("site.debugfs");
    fs::write(&commands, script).with_context(|| format!("writing {}", commands.display()))?;
    util::run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&commands)
            .arg(&device)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    // debugfs carries on past a failed command: read every file back.
    for (inside, file) in placed {
        let want = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let got = Command::new("debugfs")
            .args(["-R", &format!("cat {inside}")])
            .arg(&device)
            .stderr(std::process::Stdio::null())
            .output()
            .context("running debugfs")?;
        if got.stdout != want {
            bail!(
                "{inside} on {}'s data partition is not {} after debugfs wrote it",
                disk.display(),
                file.display()
            );
        }
    }
    Ok(disk)
}

/// The data partition's byte offset on `disk`, from its GPT.
fn data_offset(disk: &Path) -> Result<u64> {
    let out = Command::new("partx")
        .args(["--show", "-g", "-b", "-o", "START,NAME"])
        .arg(disk)
        .output()
        .context("running partx (util-linux)")?;
    if !out.status.success() {
        bail!(
            "partx could not read the partitions of {}: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    data_start(&String::from_utf8_lossy(&out.stdout))
        .map(|sector| sector * 512)
        .with_context(|| format!("{} has no {DATA_PARTITION} partition", disk.display()))
}

/// The start sector of the data partition in `partx -g -o START,NAME`'s output.
fn data_start(listing: &str) -> Option<u64> {
    listing.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let start = words.next()?.parse().ok()?;
        (words.next()? == DATA_PARTITION).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lab_file_has_its_place_on_the_data_partition() {
        let place = |n: &str| placement(n).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            place("opt/sbc/sbc.toml"),
            ("etc/sbc", "sbc.toml".into(), 0o640)
        );
        assert_eq!(
            place("opt/sbc/twin.key"),
            ("etc/sbc", "twin.key".into(), 0o600)
        );
        assert_eq!(
            place("opt/sbc/network/10-eth0-access.network"),
            (
                "etc/systemd/network",
                "10-eth0-access.network".into(),
                0o644
            )
        );
        assert!(placement("opt/sbc/network/a/b").is_err());
        assert!(placement("opt/sbc/other").is_err());
        assert!(placement("etc/passwd").is_err());
    }

    #[test]
    fn the_data_partition_is_found_by_its_name() {
        let listing = "    2048 bios-boot\n    4096 sbc-boot\n   36864 sbc-root-a\n  \
                       561152 sbc-root-b\n 1085440 sbc-data\n";
        assert_eq!(data_start(listing), Some(1_085_440));
        assert_eq!(data_start("    2048 bios-boot\n"), None);
    }
}
