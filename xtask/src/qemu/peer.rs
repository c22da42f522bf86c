//! `cargo xtask peer`: a small QEMU guest that runs given programs against the kernel's own
//! SCTP, for tests: the host kernel has none (`socket()` fails with EPROTONOSUPPORT), the
//! image's Debian kernel has it as a module.
//!
//! The guest boots the image's kernel (the same Debian package, from the image build's cache,
//! the uncompressed ELF through PVH) with an initramfs of its own: busybox, the `sctp` module
//! with what it depends on (crc32c), the programs named with `--bin` and every shared library
//! `ldd` lists for them (host and guest are both Debian bookworm on x86-64), files named with
//! `--file`, and an `/init` that loads the modules, brings `lo` up, prints `peer: ready`, runs
//! the `--script` with `sh` in `/tmp`, prints `peer: script exited N` and powers off (QEMU then
//! exits). No disk; the programs talk over the guest's loopback, and with `--net` over virtio
//! NICs on QEMU datagram sockets on the host's 127.0.0.1 (below). Output is on the serial
//! console (stdio); a kernel panic ends QEMU too (`-no-reboot`).
//!
//! `--net ADDR/PREFIX:LOCAL_PORT:REMOTE_PORT` (repeatable; the first is eth0, the next eth1):
//! a virtio NIC on `-netdev dgram` that sends its Ethernet frames as UDP datagrams from
//! 127.0.0.1:LOCAL_PORT to 127.0.0.1:REMOTE_PORT and takes what arrives on LOCAL_PORT, with
//! ADDR/PREFIX set on it before the script runs. The other end is the same kind of netdev with
//! the ports swapped: `cargo xtask qemu --link PORT=...` puts an appliance port there (a
//! point-to-point cable, no switch; the ports may be opened in either order, frames sent
//! before the other end listens are lost as on an unplugged cable). QEMU's user network cannot
//! carry SCTP; this can, and it never leaves the host's loopback.
//!
//! The script may wait for the test that runs the guest: `peer-await WORD` prints
//! `peer: await WORD` and returns once a line WORD is typed on the console.
//!
//! `--print-command` prints the QEMU command (as `cargo xtask qemu --print-command` does)
//! instead of running it, so that a system test owns the process and its console.

use super::Qemu;
use crate::image::{self, initramfs, kernel};
use crate::util;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules the guest loads: SCTP and the CRC32c it checksums with (a soft dependency
/// through the crypto API, which depmod does not list).
const MODULES: &[&str] = &["crc32c_generic", "sctp"];

/// And with `--net`: the virtio NIC.
const NET_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// `peer-await WORD`: a script's wait for the test (a line typed on the console).
const AWAIT: &str = r#"#!/bin/sh
echo "peer: await $1"
while read -r line; do
  [ "$line" = "$1" ] && exit 0
done
echo "peer: the console closed before $1"
exit 1
"#;

const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do insmod /lib/modules/$m || echo "peer: insmod $m failed"; done
ip link set lo up
# --net: "DEVICE ADDRESS/PREFIX" per line.
while read -r dev addr; do
  ip link set "$dev" up && ip addr add "$addr" dev "$dev" && echo "peer: $dev $addr" || echo "peer: $dev $addr failed"
done < /etc/peer-net
export PATH=/usr/bin:/bin HOME=/tmp TERM=dumb
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
cd /tmp
echo "peer: ready"
sh /peer/run
echo "peer: script exited $?"
poweroff -f
"#;

#[derive(Debug)]
struct Opts {
    bins: Vec<PathBuf>,
    files: Vec<(PathBuf, String)>,
    script: PathBuf,
    out: PathBuf,
    print_command: bool,
    memory_mib: u32,
    nics: Vec<Nic>,
}

/// One `--net`: the guest's address on a QEMU datagram socket link.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Nic {
    /// `ADDR/PREFIX`, as `ip addr add` takes it.
    address: String,
    local_port: u16,
    remote_port: u16,
}

impl Nic {
    fn parse(v: &str) -> Result<Nic> {
        let bad = || format!("{v}: expected ADDR/PREFIX:LOCAL_PORT:REMOTE_PORT");
        let mut parts = v.split(':');
        let (Some(address), Some(local), Some(remote), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("{}", bad());
        };
        let (ip, prefix) = address.split_once('/').with_context(bad)?;
        ip.parse::<std::net::Ipv4Addr>()
            .with_context(|| format!("{v}: {ip} is not an IPv4 address"))?;
        match prefix.parse::<u8>() {
            Ok(p) if p <= 32 => {}
            _ => bail!("{v}: /{prefix} is not a prefix length"),
        }
        Ok(Nic {
            address: address.to_string(),
            local_port: local.parse().with_context(bad)?,
            remote_port: remote.parse().with_context(bad)?,
        })
    }
}

/// `cargo xtask peer`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell script the guest runs (in /tmp) once it is up.
    #[arg(long, value_name = "FILE")]
    script: PathBuf,
    /// A program to put in the guest, with the libraries it needs (repeatable).
    #[arg(long, value_name = "PATH")]
    bin: Vec<PathBuf>,
    /// A file to put in the guest at an absolute path (repeatable).
    #[arg(long, value_name = "SRC:GUEST_PATH", value_parser = guest_file)]
    file: Vec<(PathBuf, String)>,
    /// A virtio NIC on a QEMU datagram socket link (repeatable; eth0, eth1, ...).
    #[arg(long, value_name = "ADDR/PREFIX:LOCAL_PORT:REMOTE_PORT", value_parser = Nic::parse)]
    net: Vec<Nic>,
    /// Where the guest's kernel and initramfs are put (default out/peer).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The guest's memory.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    memory: u32,
    /// Print the QEMU command instead of running it.
    #[arg(long)]
    print_command: bool,
}

/// `--file SRC:GUEST_PATH`.
fn guest_file(v: &str) -> Result<(PathBuf, String)> {
    let (src, dest) = v
        .split_once(':')
        .with_context(|| format!("{v}: expected SRC:GUEST_PATH"))?;
    if !dest.starts_with('/') {
        bail!("{v}: the guest path must be absolute");
    }
    Ok((PathBuf::from(src), dest.to_string()))
}

fn parse(args: Args) -> Opts {
    Opts {
        bins: args.bin,
        files: args.file,
        script: args.script,
        out: args.out.unwrap_or_else(|| util::root().join("out/peer")),
        print_command: args.print_command,
        memory_mib: args.memory,
        nics: args.net,
    }
}

pub fn run(args: Args) -> Result<()> {
    let o = parse(args);
    let started = std::time::Instant::now();
    let booted = prepare(&o)?;
    eprintln!(
        "xtask peer: kernel {} and initramfs {} ({} MiB) in {:.1} s",
        booted.release,
        booted.initrd.display(),
        fs::metadata(&booted.initrd)
            .map(|m| m.len() >> 20)
            .unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    let mut cmd = command(&Qemu::get()?, &booted, o.memory_mib, &o.nics);
    if o.print_command {
        super::print_command(&cmd);
        return Ok(());
    }
    let status = cmd.status().context("starting QEMU for the peer")?;
    if !status.success() {
        bail!("QEMU (peer) exited with {status}");
    }
    Ok(())
}

/// What the guest boots.
#[derive(Debug)]
struct Booted {
    release: String,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn prepare(o: &Opts) -> Result<Booted> {
    util::ensure_debs(&["kmod", "xz-utils"])?;
    let cache = image::cache_dir();
    let kernel = kernel::Kernel::fetch(&cache)?;
    let busybox = image::fetch_busybox(&cache)?;
    fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;

    // The uncompressed kernel once per release: PVH boot skips the XZ unpacking in the guest.
    let vmlinux = cache
        .join("peer")
        .join(format!("vmlinux-{}", kernel.release));
    let boot_kernel = if vmlinux.exists() {
        vmlinux
    } else {
        fs::create_dir_all(cache.join("peer")).context("creating the peer cache")?;
        kernel::extract_vmlinux(&kernel.vmlinuz(), &vmlinux)?.unwrap_or_else(|| kernel.vmlinuz())
    };

    let mut wanted: Vec<String> = MODULES.iter().map(|m| m.to_string()).collect();
    if !o.nics.is_empty() {
        wanted.extend(NET_MODULES.iter().map(|m| m.to_string()));
    }
    let modules = kernel.closure(&wanted)?;
    let flat = o.out.join("modules");
    if flat.exists() {
        fs::remove_dir_all(&flat).with_context(|| format!("removing {}", flat.display()))?;
    }
    let order = kernel.copy_flat(&modules, &flat)?;

    let mut extra = Vec::new();
    let mut libraries = BTreeSet::new();
    for bin in &o.bins {
        let name = bin
            .file_name()
            .with_context(|| format!("--bin {} has no file name", bin.display()))?;
        extra.push(initramfs::Extra {
            path: format!("/usr/bin/{}", name.to_string_lossy()),
            mode: 0o755,
            data: without_debug_info(bin, &o.out)?,
        });
        libraries.extend(shared_libraries(bin)?);
    }
    for lib in &libraries {
        extra.push(initramfs::Extra {
            path: lib.to_string_lossy().into_owned(),
            mode: 0o755,
            // fs::read follows the symlink: the guest gets the file under the name ldd gave.
            data: fs::read(lib).with_context(|| format!("reading {}", lib.display()))?,
        });
    }
    for (src, dest) in &o.files {
        extra.push(initramfs::Extra {
            path: dest.clone(),
            mode: 0o644,
            data: fs::read(src).with_context(|| format!("reading {}", src.display()))?,
        });
    }
    extra.push(initramfs::Extra {
        path: "/etc/peer-net".into(),
        mode: 0o644,
        data: net_config(&o.nics).into_bytes(),
    });
    extra.push(initramfs::Extra {
        path: "/usr/bin/peer-await".into(),
        mode: 0o755,
        data: AWAIT.as_bytes().to_vec(),
    });
    extra.push(initramfs::Extra {
        path: "/peer/run".into(),
        mode: 0o755,
        data: fs::read(&o.script).with_context(|| format!("reading {}", o.script.display()))?,
    });
    let initrd = o.out.join("peer-initrd.cpio");
    initramfs::write_peer(&busybox, &flat, &order, INIT, &extra, &initrd)?;
    Ok(Booted {
        release: kernel.release,
        kernel: boot_kernel,
        initrd,
    })
}

/// `/etc/peer-net`: each NIC's device and address (eth0 first, in the order of `--net`, which is
/// the order of their PCI slots and so of the kernel's names).
fn net_config(nics: &[Nic]) -> String {
    nics.iter()
        .enumerate()
        .map(|(i, n)| format!("eth{i} {}\n", n.address))
        .collect()
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `bin`, as absolute paths.
/// `bin` as the guest gets it: without its debug sections (`objcopy --strip-debug`, into
/// `out`). A debug build of sbcd is mostly DWARF (125 MB of it), which the guest never reads
/// and which, unpacked beside the initramfs that carried it, no longer fits the guest's memory.
fn without_debug_info(bin: &Path, out: &Path) -> Result<Vec<u8>> {
    let name = bin.file_name().unwrap_or_default().to_string_lossy();
    let stripped = out.join(format!("{name}.stripped"));
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin)
        .arg(&stripped)
        .status()
        .with_context(|| format!("running objcopy --strip-debug {} (binutils)", bin.display()))?;
    if !status.success() {
        bail!("objcopy --strip-debug {}: {status}", bin.display());
    }
    let data = fs::read(&stripped).with_context(|| format!("reading {}", stripped.display()))?;
    let _ = fs::remove_file(&stripped);
    Ok(data)
}

fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("running ldd {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static program: nothing to add.
        if text.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}{}",
            bin.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            bail!("ldd {}: a library is missing: {line}", bin.display());
        }
        // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            found.push(PathBuf::from(p));
        }
    }
    Ok(found)
}

fn command(qemu: &Qemu, booted: &Booted, memory_mib: u32, nics: &[Nic]) -> Command {
    let mut cmd = qemu.command();
    let memory = memory_mib.to_string();
    cmd.args(["-name", "sbc-peer", "-machine", "pc", "-accel", "tcg"]);
    cmd.args(["-cpu", "max", "-smp", "1", "-m", &memory]);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
        "-no-reboot",
    ]);
    cmd.args(["-serial", "stdio"]);
    for (i, nic) in nics.iter().enumerate() {
        cmd.arg("-netdev").arg(format!(
            "dgram,id=net{i},local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            nic.local_port, nic.remote_port
        ));
        // Fixed PCI slots in --net's order, so the kernel names them eth0, eth1, ... in that
        // order; no option ROM (iPXE is not in the unpacked tree, nothing boots from it).
        cmd.arg("-device").arg(format!(
            "virtio-net-pci,netdev=net{i},mac=52:54:00:5c:00:{i:02x},addr=0x{:x},romfile=",
            i + 3
        ));
    }
    cmd.arg("-kernel").arg(&booted.kernel);
    cmd.arg("-initrd").arg(&booted.initrd);
    cmd.args([
        "-append",
        "console=ttyS0,115200n8 quiet loglevel=3 panic=-1 rdinit=/init",
    ]);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of a newc archive, in order.
    fn names(archive: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        let field = |at: usize, i: usize| {
            let hex = std::str::from_utf8(&archive[at + 6 + i * 8..at + 14 + i * 8]).unwrap_or("");
            usize::from_str_radix(hex, 16).unwrap_or(0)
        };
        let pad = |n: usize| (n + 3) & !3;
        while at + 110 <= archive.len() {
            let size = field(at, 6);
            let namesize = field(at, 11);
            let name = String::from_utf8_lossy(&archive[at + 110..at + 110 + namesize - 1]);
            if name == "TRAILER!!!" {
                break;
            }
            out.push(name.into_owned());
            at = pad(pad(at + 110 + namesize) + size);
        }
        out
    }

    #[test]
    fn the_peer_archive_makes_every_folder_before_its_files() {
        let dir = std::env::temp_dir().join(format!("xtask-peer-{}", std::process::id()));
        fs::create_dir_all(dir.join("mods")).unwrap_or_else(|e| panic!("{e}"));
        let busybox = dir.join("busybox");
        fs::write(&busybox, b"\x7fELF").unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.join("mods/sctp.ko"), b"module").unwrap_or_else(|e| panic!("{e}"));
        let extra = [
            initramfs::Extra {
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                mode: 0o755,
                data: b"libc".to_vec(),
            },
            initramfs::Extra {
                path: "/usr/bin/sipp".into(),
                mode: 0o755,
                data: b"sipp".to_vec(),
            },
        ];
        let dest = dir.join("initrd.cpio");
        initramfs::write_peer(
            &busybox,
            &dir.join("mods"),
            &["sctp.ko".to_string()],
            INIT,
            &extra,
            &dest,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let archive = fs::read(&dest).unwrap_or_else(|e| panic!("{e}"));
        let names = names(&archive);
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} not in {names:?}"))
        };
        assert!(pos("lib") < pos("lib/x86_64-linux-gnu"));
        assert!(pos("lib/x86_64-linux-gnu") < pos("lib/x86_64-linux-gnu/libc.so.6"));
        assert!(pos("usr") < pos("usr/bin") && pos("usr/bin") < pos("usr/bin/sipp"));
        assert!(pos("lib/modules") < pos("lib/modules/sctp.ko"));
        for n in [
            "init",
            "bin/busybox",
            "bin/sh",
            "dev/console",
            "etc/modules",
            "tmp",
        ] {
            pos(n);
        }
        assert_eq!(names.iter().filter(|n| *n == "lib").count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_net_names_an_address_and_two_ports_and_becomes_eth_n_in_order() {
        let nic = Nic::parse("10.0.2.20/24:40001:40002").unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            nic,
            Nic {
                address: "10.0.2.20/24".into(),
                local_port: 40001,
                remote_port: 40002,
            }
        );
        for bad in [
            "10.0.2.20:1:2",
            "10.0.2.20/33:1:2",
            "10.0.2/24:1:2",
            "10.0.2.20/24:1",
            "10.0.2.20/24:1:2:3",
            "10.0.2.20/24:x:2",
        ] {
            assert!(Nic::parse(bad).is_err(), "{bad} was taken");
        }
        let second = Nic::parse("10.0.3.2/24:40003:40004").unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            net_config(&[nic, second]),
            "eth0 10.0.2.20/24\neth1 10.0.3.2/24\n"
        );
    }

    #[test]
    fn ldd_names_the_loader_and_libc_of_a_dynamic_program() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap_or_else(|e| panic!("{e:#}"));
        let names: Vec<String> = libs
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert!(names.iter().any(|n| n.starts_with("libc.so")), "{libs:?}");
        assert!(names.iter().any(|n| n.starts_with("ld-linux")), "{libs:?}");
        assert!(libs.iter().all(|p| p.is_absolute()));
    }
}
