//! GRUB for legacy BIOS boot (the APU2's SeaBIOS), installed into a disk image file without a
//! loop device: `grub-mkimage` builds a core.img with everything embedded, and this module
//! writes boot.img into the MBR and core.img into the BIOS boot partition, patching the two
//! sector pointers that `grub-bios-setup` would patch.
//!
//! The embedded configuration only finds the boot partition and hands over to `normal`, which
//! reads `grub.cfg` at its top (the running system mounts the partition on `/boot/grub`) ([`config`]): the choice of root slot, RAUC's way (its GRUB
//! integration): `ORDER` lists the slots by preference, `<slot>_OK` says a slot holds a good
//! root, `<slot>_TRY` that it was started and not yet confirmed. GRUB starts the first slot in
//! `ORDER` that is good and not on trial, putting it on trial (`save_env`) before it boots; the
//! running system confirms it once the engine is ready (`<slot>_TRY=0`). A slot that never
//! gets there (a watchdog reset, a panic, an engine that never comes up) is on trial at the
//! next boot and is passed over: the next slot in `ORDER`, the old one, boots again. The
//! kernel's command line is the board's, plus the slot (`sbc.root=` for the initramfs,
//! `rauc.slot=` for RAUC).

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
    "normal", "loadenv", "test", "sleep", "reboot", "regexp",
];

/// The slots, in the order of the factory image's preference.
pub const SLOTS: [(&str, &str); 2] = [("A", "sbc-root-a"), ("B", "sbc-root-b")];

/// The GPT partition number (from 1, as GRUB counts) of a slot: GRUB finds a slot by its place
/// on the disk GRUB booted from, not by its file system's label, because an update writes a
/// whole file system image into the slot and that image carries no label of the slot's.
fn slot_partition(name: &str) -> usize {
    if name == SLOTS[0].0 {
        disk::ROOT_A + 1
    } else {
        disk::ROOT_B + 1
    }
}

/// `grub.cfg` of the boot partition: the slot choice and the kernel of that slot.
///
/// First pass: the slots in `ORDER` that are good and not on trial, in order; the one chosen is
/// put on trial and saved before its kernel is loaded. A slot whose kernel cannot be loaded
/// (an empty or damaged slot) is passed over at once, in the same boot. Second pass, when
/// every good slot is on trial (none was confirmed since it was last started): the good ones
/// anyway, rather than no system at all.
pub fn config(cmdline: &str) -> String {
    let mut cfg = String::from(
        "# Written by cargo xtask image (xtask/src/image/grub.rs); RAUC changes only grubenv.\n\
         set timeout=0\n\
         set ORDER=\"A B\"\n\
         set A_OK=0\nset A_TRY=0\nset B_OK=0\nset B_TRY=0\n\
         load_env -f ($root)/grubenv ORDER A_OK A_TRY B_OK B_TRY\n\
         # The slots are on the disk that holds this boot partition ($root is `hd0,gpt2`).\n\
         set bootdisk=hd0\n\
         regexp --set=1:bootdisk '^(.*),gpt[0-9]+$' \"$root\"\n",
    );
    for (pass, on_trial) in [("first", "0"), ("second", "1")] {
        cfg.push_str(&format!("# {pass} pass\nfor s in $ORDER; do\n"));
        for (name, label) in SLOTS {
            // The second pass takes a slot whatever its trial says.
            let trial = if on_trial == "0" {
                format!(" -a \"${name}_TRY\" = \"0\"")
            } else {
                String::new()
            };
            cfg.push_str(&format!(
                "  if [ \"$s\" = \"{name}\" -a \"${name}_OK\" = \"1\"{trial} ]; then\n\
                 \x20   set slotdev=\"$bootdisk,gpt{part}\"\n\
                 \x20   if [ -f ($slotdev)/boot/vmlinuz ]; then\n\
                 \x20     set {name}_TRY=1\n\
                 \x20     save_env -f ($root)/grubenv A_TRY B_TRY\n\
                 \x20     echo \"sbc: booting slot {name} ({pass} pass)\"\n\
                 \x20     if linux ($slotdev)/boot/vmlinuz {cmdline} {args}; then\n\
                 \x20       if initrd ($slotdev)/boot/initrd.img; then boot; fi\n\
                 \x20     fi\n\
                 \x20     echo \"sbc: slot {name} cannot be started\"\n\
                 \x20   fi\n\
                 \x20 fi\n",
                args = slot_args(name, label),
                part = slot_partition(name),
            ));
        }
        cfg.push_str("done\n");
    }
    cfg.push_str("echo \"sbc: no slot can be started\"\nsleep 5\nreboot\n");
    cfg
}

/// What the kernel command line says about the slot it was started from.
pub fn slot_args(name: &str, label: &str) -> String {
    format!("sbc.root={label} rauc.slot={name}")
}

/// `grubenv` of a factory image: slot A first and good, slot B empty (not good).
pub fn write_factory_env(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = fs::remove_file(path);
    util::run(Command::new("grub-editenv").arg(path).args([
        "set",
        "ORDER=A B",
        "A_OK=1",
        "A_TRY=0",
        "B_OK=0",
        "B_TRY=0",
    ]))
}

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

/// Installs GRUB into `image` (already partitioned). `work` is a scratch directory.
pub fn install(image: &Path, work: &Path) -> Result<()> {
    if !Path::new(GRUB_DIR).join("boot.img").exists() {
        bail!("{GRUB_DIR}/boot.img is missing: install grub-pc-bin (apt-get install grub-pc-bin)");
    }
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let config = work.join("embedded.cfg");
    fs::write(
        &config,
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set root=(hd0,gpt2)\n\
         search --no-floppy --label sbc-boot --set root\n\
         set prefix=($root)\n\
         echo 'sbc: booting'\n\
         normal\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot choice as GRUB reads it: valid script, the slots by their place on the boot disk.
    #[test]
    fn the_config_finds_slots_by_partition_and_is_valid_grub_script() {
        let cfg = config("console=ttyS0");
        assert!(cfg.contains("set slotdev=\"$bootdisk,gpt3\""), "{cfg}");
        assert!(cfg.contains("set slotdev=\"$bootdisk,gpt4\""), "{cfg}");
        assert!(!cfg.contains("--label sbc-root"), "{cfg}");
        assert!(cfg.contains("sbc.root=sbc-root-b rauc.slot=B"), "{cfg}");
        if Path::new("/usr/bin/grub-script-check").exists() {
            let dir = std::env::temp_dir().join(format!("grub-cfg-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            let file = dir.join("grub.cfg");
            fs::write(&file, &cfg).unwrap();
            let status = Command::new("grub-script-check")
                .arg(&file)
                .status()
                .unwrap();
            let _ = fs::remove_dir_all(&dir);
            assert!(status.success(), "grub-script-check refused:\n{cfg}");
        }
    }
}
