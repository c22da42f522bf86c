//! The small initramfs: a static busybox, the modules that mounting the root needs, and a
//! shell `init` that loads them, finds the root and data partitions by their GPT names, mounts
//! them and switches to the root.
//!
//! When it cannot (no root partition, a root that does not mount, a switch that fails) it says
//! so on the console and reboots: it never opens a shell, which would be a root shell without a
//! password on the serial line.
//!
//! It exists only because Debian builds virtio and SATA drivers and ext4 as modules. It is
//! written as an uncompressed newc cpio by hand (no host cpio needed); uncompressed because
//! decompressing a few MB in the guest costs more than loading them under TCG.

use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The guest's `/init`. `sbc.root=` names the GPT partition of the root slot GRUB started
/// (default `sbc-root-a`, slot A);
/// `sbc.rootwait=` how many seconds to wait for it (default 30: USB disks are slow to appear).
const INIT: &str = r#"#!/bin/sh
# Loads the drivers the root needs, mounts the root slot named by sbc.root=NAME (default
# sbc-root-a) and hands over to systemd. Never a shell: on failure it says why on the console
# and reboots.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
  echo "initramfs: $1" >/dev/console
  echo "initramfs: cannot start the appliance; rebooting in 5 s" >/dev/console
  sleep 5
  reboot -f
  # Should reboot -f ever return, init ending makes the kernel panic, and panic= reboots.
  exit 1
}
for m in $(cat /etc/modules); do insmod /lib/modules/$m 2>/dev/null; done
want=sbc-root-a
wait=30
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    sbc.root=*) want="${arg#sbc.root=}" ;;
    sbc.rootwait=*) wait="${arg#sbc.rootwait=}" ;;
  esac
done
case "$wait" in ''|*[!0-9]*) wait=30 ;; esac
tries=0
while :; do
  for u in /sys/class/block/*/uevent; do
    if grep -qx "PARTNAME=$want" "$u" 2>/dev/null; then
      dev=$(sed -n 's/^DEVNAME=//p' "$u")
      break 2
    fi
  done
  tries=$((tries + 1))
  if [ $tries -gt $((wait * 10)) ]; then
    echo "initramfs: block devices: $(ls /sys/class/block | tr '\n' ' ')" >/dev/console
    fail "no partition named $want after $wait s"
  fi
  sleep 0.1
done
# Read-write at once: the root is a slot, not named in fstab (which slot is the boot's choice).
mount -t ext4 -o rw,noatime "/dev/$dev" /newroot || fail "the root partition /dev/$dev does not mount"
# The data partition too, so that systemd need not wait for udev to name it (seconds under
# TCG) before the config, the state and the journal are there. Its fstab line stays the same.
for u in /sys/class/block/*/uevent; do
  if grep -qx "PARTNAME=sbc-data" "$u" 2>/dev/null; then
    d=$(sed -n 's/^DEVNAME=//p' "$u")
    mount -t ext4 -o rw,noatime,nosuid,nodev "/dev/$d" /newroot/data || echo "initramfs: /data not mounted" >/dev/console
    break
  fi
done
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
fail "switch_root to /newroot failed"
"#;

const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "sleep",
    "cat",
    "grep",
    "sed",
    "ls",
    "switch_root",
    "reboot",
    "tr",
];

/// One entry of the archive.
enum Entry<'a> {
    Dir(&'a str),
    File {
        path: &'a str,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
    CharDev {
        path: &'a str,
        major: u32,
        minor: u32,
    },
}

/// Writes the initramfs: busybox from `busybox`, module files from `modules_dir` loaded in the
/// order of `module_order`.
pub fn write(
    busybox: &Path,
    modules_dir: &Path,
    module_order: &[String],
    dest: &Path,
) -> Result<()> {
    let busybox_bin =
        fs::read(busybox).with_context(|| format!("reading busybox {}", busybox.display()))?;
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        Entry::Dir("etc"),
        Entry::Dir("lib"),
        Entry::Dir("lib/modules"),
        Entry::Dir("newroot"),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        // The kernel opens /dev/console before init runs; without it init has no output.
        Entry::CharDev {
            path: "dev/console",
            major: 5,
            minor: 1,
        },
        Entry::File {
            path: "bin/busybox",
            mode: 0o755,
            data: busybox_bin,
        },
        Entry::File {
            path: "init",
            mode: 0o755,
            data: INIT.as_bytes().to_vec(),
        },
        Entry::File {
            path: "etc/modules",
            mode: 0o644,
            data: module_order.join("\n").into_bytes(),
        },
    ];
    let applet_paths: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    for path in &applet_paths {
        entries.push(Entry::Symlink {
            path,
            target: "busybox",
        });
    }
    let module_paths = module_paths(module_order);
    push_modules(&mut entries, &module_paths, modules_dir, module_order)?;
    write_entries(&entries, dest)
}

/// A file for [`write_peer`]: its absolute path in the guest, mode and content.
#[derive(Debug)]
pub struct Extra {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Writes a test guest's initramfs (`crate::qemu::peer`): busybox as `/bin/busybox` and
/// `/bin/sh`, the module files of `modules_dir` named in `/etc/modules` in `module_order`,
/// `init` as `/init`, and the `extra` files, each folder on their paths made.
pub fn write_peer(
    busybox: &Path,
    modules_dir: &Path,
    module_order: &[String],
    init: &str,
    extra: &[Extra],
    dest: &Path,
) -> Result<()> {
    let busybox_bin =
        fs::read(busybox).with_context(|| format!("reading busybox {}", busybox.display()))?;
    let mut dirs: Vec<String> = ["bin", "dev", "etc", "lib/modules", "proc", "sys", "tmp"]
        .iter()
        .map(|d| d.to_string())
        .collect();
    for file in extra {
        let mut parent = Path::new(file.path.trim_start_matches('/')).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }
    // Parents before children, each once.
    let mut all: Vec<String> = Vec::new();
    for d in dirs {
        let mut prefix = String::new();
        for part in d.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !all.contains(&prefix) {
                all.push(prefix.clone());
            }
        }
    }
    let mut entries: Vec<Entry> = all.iter().map(|d| Entry::Dir(d)).collect();
    entries.push(Entry::CharDev {
        path: "dev/console",
        major: 5,
        minor: 1,
    });
    entries.push(Entry::File {
        path: "bin/busybox",
        mode: 0o755,
        data: busybox_bin,
    });
    entries.push(Entry::Symlink {
        path: "bin/sh",
        target: "busybox",
    });
    entries.push(Entry::File {
        path: "init",
        mode: 0o755,
        data: init.as_bytes().to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/modules",
        mode: 0o644,
        data: module_order.join("\n").into_bytes(),
    });
    let module_paths = module_paths(module_order);
    push_modules(&mut entries, &module_paths, modules_dir, module_order)?;
    for file in extra {
        entries.push(Entry::File {
            path: file.path.trim_start_matches('/'),
            mode: file.mode,
            data: file.data.clone(),
        });
    }
    write_entries(&entries, dest)
}

/// The newc archive of `entries`, in their order.
/// Where each module of `module_order` goes in the archive.
fn module_paths(module_order: &[String]) -> Vec<String> {
    module_order
        .iter()
        .map(|m| format!("lib/modules/{m}"))
        .collect()
}

/// The module files, read from `modules_dir`, at `paths` (from [`module_paths`]).
fn push_modules<'a>(
    entries: &mut Vec<Entry<'a>>,
    paths: &'a [String],
    modules_dir: &Path,
    module_order: &[String],
) -> Result<()> {
    for (path, name) in paths.iter().zip(module_order) {
        let src = modules_dir.join(name);
        let data = fs::read(&src).with_context(|| format!("reading module {}", src.display()))?;
        entries.push(Entry::File {
            path,
            mode: 0o644,
            data,
        });
    }
    Ok(())
}

fn write_entries(entries: &[Entry], dest: &Path) -> Result<()> {
    let mut out = Vec::new();
    for (ino, entry) in entries.iter().enumerate() {
        let (path, mode, rdev, data): (&str, u32, (u32, u32), &[u8]) = match entry {
            Entry::Dir(p) => (p, 0o040755, (0, 0), &[]),
            Entry::File { path, mode, data } => (path, 0o100000 | mode, (0, 0), data),
            Entry::Symlink { path, target } => (path, 0o120777, (0, 0), target.as_bytes()),
            Entry::CharDev { path, major, minor } => (path, 0o020600, (*major, *minor), &[]),
        };
        header(&mut out, ino as u32 + 1, mode, rdev, data.len(), path);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, (0, 0), 0, "TRAILER!!!");
    fs::write(dest, &out).with_context(|| format!("writing initramfs {}", dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting mode of {}", dest.display()))
}

/// A newc header: magic, 13 eight-digit hex fields, then the NUL-terminated name, padded to 4.
fn header(out: &mut Vec<u8>, ino: u32, mode: u32, rdev: (u32, u32), size: usize, name: &str) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, rdev.0, rdev.1];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(format!("{:08x}{:08x}", name.len() + 1, 0).as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}
