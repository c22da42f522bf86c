//! GRUB for legacy BIOS boot (the APU2's SeaBIOS), installed into a disk image file without a
//! loop device: `grub-mkimage` builds a core.img with everything embedded, and this module
//! writes boot.img into the MBR and core.img into the BIOS boot partition, patching the two
//! sector pointers that `grub-bios-setup` would patch.
//!
//! The configuration is embedded in core.img (no grub.cfg, no `normal` module): it finds the
//! boot partition by label and boots the kernel with the board's command line. Changing the
//! command line means rebuilding the image, which is how an appliance should work.

use super::disk;
use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const MODULES: &[&str] = &[
    "biosdisk", "part_gpt", "ext2", "search", "linux", "boot", "echo", "serial", "terminal",
];

/// boot.img: where the LBA of core.img's first sector goes.
const KERNEL_SECTOR_AT: usize = 0x5c;
/// boot.img: a jump that trusts the BIOS's drive number only for floppies; `grub-bios-setup`
/// replaces it with two NOPs for hard disks, as some BIOSes pass a wrong drive number.
const DRIVE_CHECK_AT: usize = 0x66;
/// boot.img: the BIOS parameter block and the partition table area are kept from the disk.
const BPB: std::ops::Range<usize> = 0x03..0x5a;
const MBR_CODE_END: usize = 0x1b8;
/// core.img's first sector (diskboot.img): its blocklist's start LBA, 12 bytes before the end.
const BLOCKLIST_START_AT: usize = 0x200 - 12;

/// Installs GRUB into `image` (already partitioned) with the given kernel command line.
/// `work` is a scratch directory.
pub fn install(image: &Path, cmdline: &str, work: &Path) -> Result<()> {
    if !Path::new(GRUB_DIR).join("boot.img").exists() {
        bail!("{GRUB_DIR}/boot.img is missing: install grub-pc-bin (apt-get install grub-pc-bin)");
    }
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let config = work.join("embedded.cfg");
    fs::write(
        &config,
        format!(
            "serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             set root=(hd0,gpt2)\n\
             search --no-floppy --label sbc-boot --set root\n\
             echo 'sbc: booting'\n\
             linux /vmlinuz {cmdline}\n\
             initrd /initrd.img\n\
             boot\n"
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let core = work.join("core.img");
    util::run(
        Command::new("grub-mkimage")
            .args([
                "-O",
                "i386-pc",
                "-d",
                GRUB_DIR,
                "-p",
                "(hd0,gpt2)/grub",
                "-c",
            ])
            .arg(&config)
            .arg("-o")
            .arg(&core)
            .args(MODULES),
    )?;
    let core_img = fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let boot_img = fs::read(Path::new(GRUB_DIR).join("boot.img"))
        .with_context(|| format!("reading {GRUB_DIR}/boot.img"))?;
    let (part_offset, part_len) = disk::extent(0);
    if core_img.len() as u64 > part_len || core_img.len() < 512 || boot_img.len() != 512 {
        bail!(
            "core.img is {} bytes for a {} byte BIOS boot partition (boot.img {} bytes)",
            core_img.len(),
            part_len,
            boot_img.len()
        );
    }
    let core_lba = part_offset / disk::SECTOR;

    let mut disk_file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} to install GRUB", image.display()))?;
    let mut mbr = [0u8; 512];
    disk_file
        .read_exact(&mut mbr)
        .with_context(|| format!("reading the MBR of {}", image.display()))?;
    let mut new_mbr = [0u8; 512];
    new_mbr.copy_from_slice(&boot_img);
    new_mbr[BPB].copy_from_slice(&mbr[BPB]);
    new_mbr[MBR_CODE_END..].copy_from_slice(&mbr[MBR_CODE_END..]);
    new_mbr[KERNEL_SECTOR_AT..KERNEL_SECTOR_AT + 8].copy_from_slice(&core_lba.to_le_bytes());
    new_mbr[DRIVE_CHECK_AT] = 0x90;
    new_mbr[DRIVE_CHECK_AT + 1] = 0x90;

    let mut core_patched = core_img;
    // The rest of core.img follows its first sector on disk.
    core_patched[BLOCKLIST_START_AT..BLOCKLIST_START_AT + 8]
        .copy_from_slice(&(core_lba + 1).to_le_bytes());

    disk_file
        .seek(SeekFrom::Start(0))
        .context("seeking to the MBR")?;
    disk_file
        .write_all(&new_mbr)
        .with_context(|| format!("writing the MBR of {}", image.display()))?;
    disk_file
        .seek(SeekFrom::Start(part_offset))
        .context("seeking to the BIOS boot partition")?;
    disk_file
        .write_all(&core_patched)
        .with_context(|| format!("writing core.img into {}", image.display()))?;
    Ok(())
}
