//! The GPT disk image, assembled in a plain file without loop devices or mounts: `sfdisk`
//! writes the partition table, `mkfs.ext4 -E offset=` fills each file system from a staging
//! directory, and GRUB is written into the BIOS boot partition by [`super::grub`].
//!
//! Layout: two root slots (A/B, SPEC §8), each a whole root with the kernel it boots; sizes
//! fixed so that a later root always fits where the old one was, and an update rewrites the
//! slot the box does not run while the data partition stays.
//!
//! | # | GPT name     | size    | content                                                  |
//! |---|--------------|---------|----------------------------------------------------------|
//! | 1 | `bios-boot`  | 1 MiB   | GRUB core.img (legacy BIOS boot, as on the APU2)         |
//! | 2 | `sbc-boot`   | 16 MiB  | ext2: `grub.cfg` (slot choice), `grubenv` (/boot/grub)   |
//! | 3 | `sbc-root-a` | 256 MiB | ext4: slot A, the root with `/boot/vmlinuz`, `initrd.img`|
//! | 4 | `sbc-root-b` | 256 MiB | ext4: slot B (empty in a factory image)                  |
//! | 5 | `sbc-data`   | 64 MiB  | ext4: /etc/sbc, /var/lib/sbc, the journal                |

use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

pub const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// One partition: GPT name, type GUID, size in MiB.
#[derive(Debug)]
pub struct Part {
    pub name: &'static str,
    type_guid: &'static str,
    size_mib: u64,
}

const BIOS_BOOT: &str = "21686148-6E69-6F74-6E65-656446494645";
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

pub const PARTS: [Part; 5] = [
    Part {
        name: "bios-boot",
        type_guid: BIOS_BOOT,
        size_mib: 1,
    },
    Part {
        name: "sbc-boot",
        type_guid: LINUX_FS,
        size_mib: 16,
    },
    Part {
        name: "sbc-root-a",
        type_guid: LINUX_FS,
        size_mib: 256,
    },
    Part {
        name: "sbc-root-b",
        type_guid: LINUX_FS,
        size_mib: 256,
    },
    Part {
        name: "sbc-data",
        type_guid: LINUX_FS,
        size_mib: 64,
    },
];

/// Indexes into [`PARTS`].
pub const BOOT: usize = 1;
pub const ROOT_A: usize = 2;
pub const ROOT_B: usize = 3;
pub const DATA: usize = 4;

const FIRST_OFFSET_MIB: u64 = 1;
const TAIL_MIB: u64 = 1;

/// Byte offset and length of partition `index` (0-based).
pub fn extent(index: usize) -> (u64, u64) {
    let start: u64 = FIRST_OFFSET_MIB + PARTS[..index].iter().map(|p| p.size_mib).sum::<u64>();
    (start * MIB, PARTS[index].size_mib * MIB)
}

pub fn total_bytes() -> u64 {
    (FIRST_OFFSET_MIB + PARTS.iter().map(|p| p.size_mib).sum::<u64>() + TAIL_MIB) * MIB
}

/// Creates a sparse file of the right size and writes the GPT into it.
pub fn partition(image: &Path) -> Result<()> {
    if image.exists() {
        fs::remove_file(image).with_context(|| format!("removing old {}", image.display()))?;
    }
    let file = fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(total_bytes())
        .with_context(|| format!("sizing {} to {} bytes", image.display(), total_bytes()))?;
    drop(file);
    let mut script = String::from("label: gpt\nunit: sectors\n");
    for (i, p) in PARTS.iter().enumerate() {
        let (start, len) = extent(i);
        script.push_str(&format!(
            "start={}, size={}, type={}, name=\"{}\"\n",
            start / SECTOR,
            len / SECTOR,
            p.type_guid,
            p.name
        ));
    }
    let mut child = Command::new("sfdisk")
        .args([
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            "--wipe",
            "always",
        ])
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting sfdisk (package fdisk)")?;
    child
        .stdin
        .take()
        .context("sfdisk's stdin")?
        .write_all(script.as_bytes())
        .context("writing the partition script to sfdisk")?;
    let status = child.wait().context("waiting for sfdisk")?;
    if !status.success() {
        bail!(
            "sfdisk on {} failed ({status}) with script:\n{script}",
            image.display()
        );
    }
    Ok(())
}

/// Makes an ext2/ext4 file system in partition `index` of `image`, filled from `content`.
pub fn mkfs(image: &Path, index: usize, fstype: &str, label: &str, content: &Path) -> Result<()> {
    let (offset, len) = extent(index);
    let mut cmd = Command::new(format!("mkfs.{fstype}"));
    cmd.args(["-F", "-q", "-L", label, "-d"])
        .arg(content)
        .arg("-E")
        .arg(format!("offset={offset},nodiscard,root_owner=0:0"));
    if fstype == "ext4" {
        // No journal replay needed for a partition nobody wrote yet; keep the usual defaults
        // otherwise. 16 MiB of journal is plenty for an appliance's writes.
        cmd.args(["-J", "size=16"]);
    }
    cmd.arg(image).arg(format!("{}k", len / 1024));
    util::run(&mut cmd)
}

/// Bytes used by a staging directory, to fail early and clearly when it outgrows its partition.
pub fn check_fits(content: &Path, index: usize) -> Result<()> {
    let out = Command::new("du")
        .args(["-s", "-B1", "--apparent-size"])
        .arg(content)
        .output()
        .with_context(|| format!("running du on {}", content.display()))?;
    let used: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("reading du's answer for {}", content.display()))?;
    let (_, len) = extent(index);
    // ext4 metadata (inode tables, journal) takes roughly a fifth of a small file system.
    if used > len * 4 / 5 {
        bail!(
            "{} holds {} MiB, too much for the {} MiB partition {}",
            content.display(),
            used / MIB,
            len / MIB,
            PARTS[index].name
        );
    }
    Ok(())
}
